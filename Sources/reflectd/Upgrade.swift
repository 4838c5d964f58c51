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
    /// UDP sockets travel like listeners (flag 8 on the wire).
    var datagrams: [HandedOverDatagramSocket] = []
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
    /// Where the upgrade stands, for a stop signal that arrives meanwhile (``stopRequested(_:force:)``).
    private let phase = Mutex<Phase>(.idle)

    /// An upgrade's progress as a stop signal sees it. One lock orders the two decisions that
    /// race: the upgrade thread committing (the new process holds everything) and a stop
    /// signal arriving on reactor 0's thread.
    enum Phase: Equatable {
        /// No upgrade: a stop signal stops this process.
        case idle
        /// An upgrade runs (`child` 0 until it is started). A stop signal is remembered and
        /// acted on when the upgrade ends: forwarded to the new process if it took over, or
        /// this process stops if the upgrade failed. A second stop signal aborts the upgrade.
        case running(child: pid_t, stop: CInt?, force: Bool)
        /// The new process took everything: stop signals are forwarded to it.
        case committed(child: pid_t)
        /// This process is stopping: no upgrade may start.
        case stopping
    }

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
        let stopping = phase.withLock { $0 == .stopping }
        if stopping {
            logger.notice("received SIGUSR2: ignored, this process is stopping")
            return
        }
        guard running.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else {
            logger.notice("received SIGUSR2: ignored, an upgrade is already in progress")
            return
        }
        phase.withLock { $0 = .running(child: 0, stop: nil, force: false) }
        logger.notice("received SIGUSR2: upgrading to \(executable)")
        guard ReactorThread.spawn({ [self] in perform() }) != nil else {
            logger.error("upgrade failed: cannot start the upgrade thread; still serving")
            phase.withLock { $0 = .idle }
            running.store(false, ordering: .releasing)
            return
        }
    }

    /// The process that took every connection over, once an upgrade committed; nil before.
    var successor: pid_t? {
        phase.withLock { phase in
            if case .committed(let child) = phase { return child }
            return nil
        }
    }

    /// What a stop signal does, decided on reactor 0's thread.
    enum StopDecision: Equatable {
        /// No upgrade is involved: stop this process (gracefully, or at once with `force`).
        case stopHere
        /// The upgrade thread acts on it when the upgrade ends (or has forwarded it): do
        /// nothing now.
        case leftToUpgrade
    }

    /// A stop signal arrived (SIGTERM, SIGINT, SIGQUIT; `force` for a second one). With no
    /// upgrade in flight, this process stops. During one, the stop waits for the upgrade to
    /// end, so that whichever process then holds the listeners and connections stops, and
    /// nothing is left running: the new one (the signal is forwarded to it) or this one (the
    /// upgrade failed or was aborted). A forced stop aborts the upgrade: the new process and
    /// its process group are killed, everything is taken back, and this process stops at once.
    func stopRequested(_ signal: CInt, force: Bool) -> StopDecision {
        enum Act { case stopHere, wait, abort(pid_t), forward(pid_t) }
        let act: Act = phase.withLock { phase in
            switch phase {
            case .idle, .stopping:
                phase = .stopping
                return .stopHere
            case .running(let child, let stop, let forced):
                phase = .running(child: child, stop: stop ?? signal, force: forced || force)
                return force ? .abort(child) : .wait
            case .committed(let child):
                return .forward(child)
            }
        }
        switch act {
        case .stopHere:
            return .stopHere
        case .wait:
            logger.notice("received \(Signals.name(signal)) during an upgrade: the stop waits for the upgrade to end (at most \(Self.confirmTimeout * 2)); then whichever process holds the connections stops gracefully (another stop signal aborts the upgrade)")
        case .abort(let child):
            logger.notice("received \(Signals.name(signal)) again during an upgrade: aborting it, taking everything back and stopping now")
            if child > 0 { kill(-child, SIGKILL) }
        case .forward(let child):
            logger.notice("received \(Signals.name(signal)): the connections belong to the new process (pid \(child)) now; forwarded the signal to it")
            kill(child, signal)
        }
        return .leftToUpgrade
    }

    /// Stops every reactor of this process (after a failed upgrade that a stop signal waited for).
    private func stopAll(force: Bool) {
        for port in ports.withLock({ $0 }) { force ? port.handle.stopNow() : port.handle.stop() }
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
            let spawned = child
            let abortedEarly = phase.withLock { phase -> Bool in
                guard case .running(_, let stop, let force) = phase else { return false }
                phase = .running(child: spawned, stop: stop, force: force)
                return force
            }
            if abortedEarly { throw HandOverError("aborted by a second stop signal") }

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
                             datagrams: reactor.detachDatagramSocketsForHandOver(),
                             connections: reactor.detachForHandOver { $0.extra.map { $0.http == nil && $0.pending == nil } ?? true },
                             statistics: reactor.statistics)
                }
                detached.append(d)
            }
            let detachedAt = ContinuousClock.now

            // 3. listeners, then connections in batches with their pending output.
            var listeners = HandOverWriter(.listeners, count: detached.reduce(0) { $0 + $1.listeners.count + $1.datagrams.count })
            var listenerFDs: [CInt] = []
            for (index, d) in detached.enumerated() {
                for l in d.listeners {
                    listeners.u16(UInt16(index))
                    listeners.u8((l.limited ? 1 : 0) | (l.ownsUnixPath ? 2 : 0) | (l.limited ? 0 : 4))
                    listeners.blob16(l.address.sockaddrBytes)
                    listenerFDs.append(l.fd)
                }
                for socket in d.datagrams {
                    listeners.u16(UInt16(index))
                    listeners.u8(HandOverFormat.datagramFlag)
                    listeners.blob16(socket.address.sockaddrBytes)
                    listenerFDs.append(socket.fd)
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
            // Commit, unless a forced stop aborted the upgrade meanwhile (then the new process
            // was killed, and everything comes back here).
            let committed = phase.withLock { phase -> (ok: Bool, stop: CInt?) in
                guard case .running(_, let stop, let force) = phase, !force else { return (false, nil) }
                phase = .committed(child: child)
                return (true, stop)
            }
            guard committed.ok else { throw HandOverError("aborted by a second stop signal") }
            handedOver.store(true, ordering: .releasing)
            for d in detached {
                for c in d.connections { Glibc.close(c.fd) }
                for l in d.listeners { Glibc.close(l.fd) }
                for socket in d.datagrams { Glibc.close(socket.fd) }
            }
            let ms = (ContinuousClock.now - started) / .milliseconds(1)
            let stall = (ContinuousClock.now - detachedAt) / .milliseconds(1)
            logger.notice("upgrade: handed \(records.count) connections and \(listenerFDs.count) listeners to pid \(child) in \(Int(ms)) ms (reading paused \(Int(stall)) ms); exiting")
            if let stop = committed.stop {
                logger.notice("upgrade: forwarding the \(Signals.name(stop)) received during the upgrade to pid \(child), which holds the connections now")
                kill(child, stop)
            }
            for port in reactors { port.handle.stop() }
        } catch {
            var error = error
            if let e = error as? SyscallError, e.errno == .brokenPipe || e.errno == .connectionReset, child > 0 {
                error = gone(child)
            }
            if child > 0 {
                // Its whole process group: a "binary" that is a script leaves no child behind.
                // (The child itself too, in case it already left the group: see TakeOver.confirm.)
                kill(-child, SIGKILL)
                kill(child, SIGKILL)
                if reaped != child {
                    var status: CInt = 0
                    waitpid(child, &status, 0)
                }
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
                        for socket in d.datagrams {
                            do { try reactor.adoptDatagram(fd: socket.fd, handler: socket.handler) } catch {
                                logger.error("upgrade: cannot take back the UDP socket on \(socket.address): \(error)")
                                Glibc.close(socket.fd)
                            }
                        }
                        var count = 0
                        // The per-client places were never given back here: take nothing again.
                        let resume = Upgrader.resume(policy, takingPlacesIn: nil)
                        for c in d.connections {
                            guard (try? reactor.installHandedOver(c, resume: resume)) != nil else {
                                // Closed without onClose (epoll refused it): its place goes back here.
                                if let place = c.state.place { reactor.handler.clientLimit?.release(place) }
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
                    for socket in d.datagrams { Glibc.close(socket.fd) }
                }
            }
            let taken = detached.isEmpty ? "" : " (\(restored) connections taken back)"
            // Back to idle (serving), or on to stopping when a stop signal waited for this end.
            let stop = phase.withLock { phase -> (signal: CInt, force: Bool)? in
                if case .running(_, let signal?, let force) = phase {
                    phase = .stopping
                    return (signal, force)
                }
                phase = .idle
                return nil
            }
            if let stop {
                logger.error("upgrade failed: \(error)\(taken); stopping \(stop.force ? "now" : "gracefully"), as the \(Signals.name(stop.signal)) received during the upgrade asked")
                stopAll(force: stop.force)
            } else {
                logger.error("upgrade failed: \(error); still serving\(taken)")
            }
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
            if let limit, let place = state.place { limit.forceAcquire(place) }
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
    /// signal mask and SIGPIPE's disposition reset (this process blocks and ignores them); in a
    /// process group of its own, with stdout on /dev/null until its hello.
    private func spawn(childFD: CInt) throws -> pid_t {
        var argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) }
        argv.append(nil)
        var environment: [String] = []
        var e = environ
        while let entry = e.pointee {
            let text = String(cString: entry)
            let ours = ["REFLECTD_UPGRADE_FD=", "REFLECTD_UPGRADE_STDOUT_FD=", "REFLECTD_UPGRADE_PGID=", "LISTEN_"]
            if !ours.contains(where: text.hasPrefix) { environment.append(text) }
            e += 1
        }
        environment.append("REFLECTD_UPGRADE_FD=\(childFD)")
        // The child's stdout is /dev/null until it has said hello (a wrong "binary" must not
        // print a `listening on` line where scripts wait for the real one); our stdout goes
        // along as this fd, which it makes its stdout then (TakeOver.receive).
        let stdoutCopy = dup(1)
        defer { if stdoutCopy >= 0 { Glibc.close(stdoutCopy) } }
        if stdoutCopy >= 0 { environment.append("REFLECTD_UPGRADE_STDOUT_FD=\(stdoutCopy)") }
        // Its own process group, killed whole on failure; it rejoins ours once it takes over.
        environment.append("REFLECTD_UPGRADE_PGID=\(getpgrp())")
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
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP))
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        guard rc == 0 else {
            throw HandOverError("cannot start \(executable): \(String(cString: strerror(rc)))")
        }
        return pid
    }
}
