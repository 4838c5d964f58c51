import Dispatch
import Echo
import Glibc
import Logging
import Reactor
import Synchronization

/// A reactor of this process, for the upgrade thread to reach. Its methods are called only in
/// closures that run on the reactor's own thread (``ReactorHandle/execute(_:)``).
struct ReactorPort: @unchecked Sendable {
    let index: Int
    let reactor: Reactor<ServerHandler>
    var handle: ReactorHandle { reactor.handle }

    /// Runs `body` on the reactor's thread (between events, with what it leaves dirty settled
    /// after it) and waits for its result. Throws when the reactor takes no more closures (its
    /// `run()` returned, or its queue is full).
    func run<R: Sendable>(_ body: @escaping @Sendable (Reactor<ServerHandler>) -> R) throws(HandOverError) -> R {
        let result = ResultBox<R>()
        let reactor = UncheckedReactor(reactor: reactor)
        let accepted = handle.execute { (_: ReactorContext<ServerHandler>) in
            result.set(body(reactor.reactor))
        }
        guard accepted else { throw HandOverError("reactor \(index) takes no more work (stopping, or its queue is full)") }
        return result.wait()
    }
}

/// One value handed from a reactor's thread to a waiting one.
private final class ResultBox<R: Sendable>: Sendable {
    private let value = Mutex<R?>(nil)
    private let done = DispatchSemaphore(value: 0)
    func set(_ v: R) { value.withLock { $0 = v }; done.signal() }
    func wait() -> R { done.wait(); return value.withLock { $0! } }
}

private struct UncheckedReactor: @unchecked Sendable { let reactor: Reactor<ServerHandler> }
private struct UncheckedMetrics: @unchecked Sendable { let endpoint: MetricsEndpoint }

/// Connections installed by the other reactor threads of a new process.
final class InstallCount: Sendable {
    private let count = Mutex(0)
    func add(_ n: Int) { count.withLock { $0 += n } }
    var value: Int { count.withLock { $0 } }
}

extension Server {
    /// The executable to run at an upgrade, resolved once at startup.
    static let executable = Upgrader.resolveExecutable()
}

/// What one reactor gave up for a hand-over (kept until the new process confirms, to take back
/// on failure).
private struct Detached: @unchecked Sendable {
    var listeners: [HandedOverListener] = []
    var connections: [HandedOverConnection<ServerHandler.State>] = []
    var statistics = ReactorStatistics()
}

/// SIGUSR2: a binary upgrade that keeps every connection (see README, "Upgrading without
/// dropping connections").
///
/// The old process starts the executable it was started from (the path resolved at startup,
/// re-read from disk) with the same arguments and one end of a socketpair (its fd number in
/// `REFLECTD_UPGRADE_FD`). After both said hello with the same format version, every reactor
/// stops accepting and detaches its echo connections (reading stops, so no byte is read by both
/// processes); the listeners and connections go over in batches, fds with SCM_RIGHTS beside each
/// connection's state. The old process keeps its copies until the new one says `ready`; then it
/// closes them and exits 0. If anything fails first (the new binary cannot start, exits, refuses,
/// or does not answer within ``confirmTimeout``), the old process takes everything back, resumes
/// accepting and logs why at error level.
final class Upgrader: @unchecked Sendable {
    /// Why 5 s: a new binary that has not started and said hello (or taken 10,000 connections)
    /// by then is broken or stuck; the old one is still serving meanwhile.
    static let confirmTimeout: Duration = .seconds(5)

    let executable: String
    let arguments: [String]
    let logger: Logger
    let policy: ExitLinePolicy
    /// The counters an earlier upgrade carried in (added to ours when we hand over in turn).
    let carried: ReactorStatistics
    /// The metrics endpoint (reactor 0's), used only on reactor 0's thread.
    private var metrics: UncheckedMetrics?
    private let ports = Mutex<[ReactorPort]>([])
    private let running = Atomic<Bool>(false)
    /// The child already reaped by ``gone(_:)`` (not to be killed or waited for again).
    private var reaped: pid_t = 0
    /// Set once a hand-over succeeded: the process is on its way out.
    let handedOver = Atomic<Bool>(false)

    init(executable: String, arguments: [String], logger: Logger, policy: ExitLinePolicy, carried: ReactorStatistics) {
        self.executable = executable
        self.arguments = arguments
        self.logger = logger
        self.policy = policy
        self.carried = carried
    }

    func add(_ port: ReactorPort) { ports.withLock { $0.append(port); $0.sort { $0.index < $1.index } } }

    /// The path this process was started from, resolved now (so a later upgrade runs whatever
    /// file is at that path then). /proc/self/exe names the running file even when argv[0] is
    /// a bare name or a relative path.
    static func resolveExecutable() -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard n > 0 else { return CommandLine.arguments[0] }
        var path = String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if path.hasSuffix(" (deleted)") { path.removeLast(" (deleted)".count) }
        return path
    }

    /// SIGUSR2, on reactor 0's thread: start an upgrade on a thread of its own, unless one runs.
    func signalled(metrics: MetricsEndpoint?) {
        self.metrics = metrics.map { UncheckedMetrics(endpoint: $0) }
        if handedOver.load(ordering: .acquiring) {
            logger.notice("received SIGUSR2: ignored, the connections were already handed over and this process is exiting")
            return
        }
        guard running.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else {
            logger.notice("received SIGUSR2: ignored, an upgrade is already in progress")
            return
        }
        logger.notice("received SIGUSR2: upgrading to \(executable)")
        guard ReactorThread.spawn({ [self] in perform() }) != nil else {
            logger.error("upgrade failed: cannot start the upgrade thread; still serving")
            running.store(false, ordering: .releasing)
            return
        }
    }

    // MARK: the old side

    /// Called by the main thread once reactor 0 stopped (SIGTERM, or the hand-over done): an
    /// upgrade in flight finishes first, so that the new process gets everything it was promised
    /// (exiting now would close the socketpair under it). Bounded by twice the confirmation time.
    func waitForUpgrade() {
        guard running.load(ordering: .acquiring), !handedOver.load(ordering: .acquiring) else { return }
        logger.notice("upgrade in progress: waiting for it to finish before exiting")
        _ = finished.wait(timeout: .now() + .seconds(2 * 5))
    }

    private let finished = DispatchSemaphore(value: 0)

    private func perform() {
        defer { finished.signal() }
        let started = ContinuousClock.now
        let reactors = ports.withLock { $0 }
        var child: pid_t = 0
        var detached: [Detached] = []
        do {
            let (channel, childFD) = try HandOverChannel.pair()
            try channel.setTimeout(Self.confirmTimeout)
            child = try spawn(childFD: childFD)
            Glibc.close(childFD)

            // 1. hello both ways: the same format version, or nothing is handed over.
            var hello = HandOverWriter(.hello)
            hello.u32(UInt32(getpid()))
            try channel.send(hello.bytes)
            let answer = try receive(channel, child: child)
            guard answer.type == .hello else { throw HandOverError("expected hello, got \(answer.type)") }

            // 2. every reactor stops accepting and reading, and gives up its echo connections.
            // Plain echo connections only: a metrics request, or a connection whose PROXY header
            // is still pending, stays here and is closed when this process stops.
            for port in reactors {
                let d = try port.run { reactor -> Detached in
                    Detached(listeners: reactor.detachListenersForHandOver(),
                             connections: reactor.detachForHandOver { $0.extra.map { $0.http == nil && $0.pending == nil } ?? true },
                             statistics: reactor.statistics)
                }
                detached.append(d)
            }
            let detachedAt = ContinuousClock.now

            // 3. listeners, then connections in batches with their pending output.
            var listeners = HandOverWriter(.listeners, count: detached.reduce(0) { $0 + $1.listeners.count })
            var listenerFDs: [CInt] = []
            for (index, d) in detached.enumerated() {
                for l in d.listeners {
                    listeners.u16(UInt16(index))
                    listeners.u8((l.limited ? 1 : 0) | (l.ownsUnixPath ? 2 : 0) | (l.limited ? 0 : 4))
                    listeners.blob16(l.address.sockaddrBytes)
                    listenerFDs.append(l.fd)
                }
            }
            try channel.send(listeners.bytes, fds: listenerFDs)
            var records: [HandOverRecord] = []
            for (index, d) in detached.enumerated() {
                records += d.connections.map { HandOverRecord($0, reactor: index) }
            }
            var sequence = 0
            while sequence < records.count {
                let batch = records[sequence..<min(sequence + HandOverFormat.connectionsPerMessage, records.count)]
                var message = HandOverWriter(.connections, count: batch.count)
                for record in batch { record.encode(into: &message) }
                try channel.send(message.bytes, fds: batch.map(\.fd))
                for (k, record) in batch.enumerated() where !record.pending.isEmpty {
                    var offset = 0
                    while offset < record.pending.count {
                        let end = min(offset + HandOverFormat.outputChunk, record.pending.count)
                        var chunk = HandOverWriter(.output, count: sequence + k)
                        chunk.bytes += record.pending[offset..<end]
                        try channel.send(chunk.bytes)
                        offset = end
                    }
                }
                sequence += batch.count
            }
            var statistics = HandOverWriter(.statistics)
            let live = detached.map(\.statistics)
            let carried = self.carried
            let metrics = self.metrics
            var total = try reactors[0].run { _ in metrics?.endpoint.echoTotals(perReactor: live).total ?? live.reduce(carried, +) }
            total.open = 0
            total.encode(into: &statistics)
            try channel.send(statistics.bytes)
            try channel.send(HandOverWriter(.end, count: records.count).bytes)

            // 4. the new process confirms; then our copies go and this process exits.
            let ready = try receive(channel, child: child)
            guard ready.type == .ready else { throw HandOverError("expected ready, got \(ready.type)") }
            handedOver.store(true, ordering: .releasing)
            for d in detached {
                for c in d.connections { Glibc.close(c.fd) }
                for l in d.listeners { Glibc.close(l.fd) }
            }
            let ms = (ContinuousClock.now - started) / .milliseconds(1)
            let stall = (ContinuousClock.now - detachedAt) / .milliseconds(1)
            logger.notice("upgrade: handed \(records.count) connections and \(listenerFDs.count) listeners to pid \(child) in \(Int(ms)) ms (reading paused \(Int(stall)) ms); exiting")
            for port in reactors { port.handle.stop() }
        } catch {
            var error = error
            if let e = error as? SyscallError, e.errno == .brokenPipe || e.errno == .connectionReset, child > 0 {
                error = gone(child)
            }
            if child > 0 && reaped != child {
                kill(child, SIGKILL)
                var status: CInt = 0
                waitpid(child, &status, 0)
            }
            var restored = 0
            for (port, d) in zip(reactors, detached) {
                let policy = self.policy
                let logger = self.logger
                let d = d
                do {
                    restored += try port.run { reactor -> Int in
                        for l in d.listeners {
                            do { try reactor.attachHandedOverListener(l) } catch {
                                logger.error("upgrade: cannot take back the listener on \(l.address): \(error)")
                                Glibc.close(l.fd)
                            }
                        }
                        var count = 0
                        // The per-client places were never given back here: take nothing again.
                        let resume = Upgrader.resume(policy, takingPlacesIn: nil)
                        for c in d.connections {
                            guard (try? reactor.installHandedOver(c, resume: resume)) != nil else {
                                // Closed without onClose (epoll refused it): its place goes back here.
                                if let place = c.state.extra?.place { reactor.handler.clientLimit?.release(place) }
                                continue
                            }
                            count += 1
                        }
                        return count
                    }
                } catch {
                    logger.error("upgrade: \(error): closing its \(d.connections.count) connections")
                    for c in d.connections { Glibc.close(c.fd) }
                    for l in d.listeners { Glibc.close(l.fd) }
                }
            }
            logger.error("upgrade failed: \(error); still serving\(detached.isEmpty ? "" : " (\(restored) connections taken back)")")
            running.store(false, ordering: .releasing)
        }
    }

    /// What an installed connection gets back (``Reactor/installHandedOver(_:resume:)``): a held
    /// exit-line prefix its bounded hold (its timer did not travel), and, in a new process, its
    /// place under `--max-connections-per-client` (`limit`; the old process never gave it back,
    /// and exits without: the place is given back once, at close, by the new one).
    static func resume(_ policy: ExitLinePolicy, takingPlacesIn limit: ClientLimit?)
        -> (borrowing Connection<ServerHandler>, inout ServerHandler.State) -> Void {
        { connection, state in
            if state.echo.detector.unreleased > 0 && policy.hold > .zero {
                state.echo.holdTimer = connection.schedule(after: policy.hold)
            }
            if let limit, let place = state.extra?.place { limit.forceAcquire(place) }
        }
    }

    /// The next message, or why there is none: the new process exited (with its status), did not
    /// answer in time, or refused.
    private func receive(_ channel: HandOverChannel, child: pid_t) throws -> HandOverReader {
        let received = Result { () throws(SyscallError) in try channel.receive() }
        if case .failure(let error) = received, error.errno == .resourceTemporarilyUnavailable {
            throw HandOverError("the new process (pid \(child)) did not answer within \(Self.confirmTimeout)")
        }
        let message = try received.get()
        guard let message else { throw gone(child) }
        for fd in message.fds { Glibc.close(fd) }
        let reader = try HandOverReader(message.bytes)
        if reader.type == .refuse {
            throw HandOverError("the new process (pid \(child)) refused: \(String(decoding: reader.remaining, as: UTF8.self))")
        }
        return reader
    }

    /// The new process closed its end: how it ended (it is reaped here), waiting up to 1 s.
    private func gone(_ child: pid_t) -> HandOverError {
        var status: CInt = 0
        var how = "closed the hand-over socket"
        for _ in 0..<100 {
            if waitpid(child, &status, WNOHANG) == child {
                how = (status & 0x7f) == 0 ? "exited with status \((status >> 8) & 0xff)" : "was killed by signal \(status & 0x7f)"
                reaped = child
                break
            }
            usleep(10_000)
        }
        return HandOverError("the new process (pid \(child)) \(how) before confirming")
    }

    /// posix_spawn of the executable with our arguments, environment, and the hand-over fd; the
    /// signal mask and SIGPIPE's disposition reset (this process blocks and ignores them).
    private func spawn(childFD: CInt) throws -> pid_t {
        var argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) }
        argv.append(nil)
        var environment: [String] = []
        var e = environ
        while let entry = e.pointee {
            let text = String(cString: entry)
            if !text.hasPrefix("REFLECTD_UPGRADE_FD=") && !text.hasPrefix("LISTEN_") { environment.append(text) }
            e += 1
        }
        environment.append("REFLECTD_UPGRADE_FD=\(childFD)")
        var envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) }
        envp.append(nil)
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGPIPE)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, nil, &attributes, argv, envp)
        guard rc == 0 else {
            throw HandOverError("cannot start \(executable): \(String(cString: strerror(rc)))")
        }
        return pid
    }
}
