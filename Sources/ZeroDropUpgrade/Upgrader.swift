import Dispatch
import Glibc
import Logging
import Reactor
import Synchronization

/// What a stop signal does during an upgrade (``Upgrader/stopRequested(_:force:)``).
private enum StopAct { case stopHere, wait, abort(pid_t), forward(pid_t) }

/// What one reactor gave up for a hand-over (kept until the new process confirms, to take back
/// on failure).
private struct Detached<State>: @unchecked Sendable {
    var listeners: [HandedOverListener] = []
    /// Datagram sockets travel like listeners (``ListenerRecord/datagram``).
    var datagrams: [HandedOverDatagramSocket] = []
    var connections: [HandedOverConnection<State>] = []
    var statistics = ReactorStatistics()
}

/// The old side of a binary upgrade that keeps every connection, generic over the handler: start
/// it with ``signalled()`` (on SIGUSR2, say).
///
/// The old process starts the executable it was started from (the path resolved at startup,
/// re-read from disk) with the same arguments and one end of a socketpair (its fd number in
/// `<PREFIX>_FD`, see ``UpgradeEnvironment``). After both said hello with the same format
/// version, every reactor stops accepting and detaches its connections (reading stops, so no
/// byte is read by both processes); the listeners and connections go over in batches, fds with
/// SCM_RIGHTS beside each connection's record (``ConnectionRecord``, the handler's state written
/// by its ``HandOverCodec``), then the server's process state. The old process keeps its copies
/// until the new one says `ready`; then it closes them and its reactors stop. If anything fails
/// first (the new binary cannot start, exits, refuses, is silent for ``silenceTimeout``, or has
/// not confirmed within ``handOverLimit``), the old process takes everything back, resumes
/// accepting and logs why at error level. A new process that is still receiving or restoring a
/// large process state says so with `progress` messages (``UpgradeWire``), so a big but healthy
/// hand-over is not cut off while a stuck one still is, after the silence.
public final class Upgrader<Handler: ConnectionHandler & SendableMetatype, Codec: HandOverCodec>: @unchecked Sendable
where Codec.State == Handler.ConnectionState {
    /// The default ``silenceTimeout``. Why 5 s: a new binary that has not started and said hello
    /// by then, or that sent nothing (no `progress`, no `ready`) for that long while it receives
    /// and restores (it reports every ``progressInterval(silence:)``), is broken or stuck.
    public static var confirmTimeout: Duration { .seconds(5) }
    /// The default ``handOverLimit``. Why 10 minutes: reads stay paused from the detach until the
    /// new process confirms, so this bounds the outage of a new process that keeps reporting
    /// progress but never finishes (a restore that loops). A healthy restore is far quicker: a
    /// resp-server keyspace of 2M keys (about 60 MB) takes seconds in a debug build, and the
    /// largest process state a new process accepts (``HandOverStream/maxProcessState``, 16 GiB)
    /// would not fit in minutes anyway. A server that needs longer passes its own limit.
    public static var defaultHandOverLimit: Duration { .seconds(600) }

    /// How long the new process may stay silent: before its hello, and between two of its
    /// messages (`progress`, then `ready`) once everything was sent. Also the timeout of each
    /// send to it. ``confirmTimeout`` unless given to ``init(executable:arguments:environment:codec:hooks:logger:silenceTimeout:handOverLimit:)``.
    public let silenceTimeout: Duration
    /// The longest a hand-over may take from the detach (reads paused) to `ready`, however much
    /// progress the new process reports. ``defaultHandOverLimit`` unless given.
    public let handOverLimit: Duration

    /// How often a new process reports progress to an old one with this silence timeout: a fifth of
    /// it (so one late or lost report is not fatal), at most 1 s, at least 10 ms.
    public static func progressInterval(silence: Duration) -> Duration {
        min(.seconds(1), max(.milliseconds(10), silence / 5))
    }

    /// The file started at an upgrade.
    public let executable: String
    /// Its arguments (without argv[0]).
    public let arguments: [String]
    let logger: Logger
    let codec: Codec
    let hooks: UpgradeHooks<Handler>
    let environment: UpgradeEnvironment
    private let ports = Mutex<[ReactorPort<Handler>]>([])
    private let running = Atomic<Bool>(false)
    /// The child already reaped by ``gone(_:)`` (not to be killed or waited for again).
    private var reaped: pid_t = 0
    /// Set once a hand-over succeeded: the process is on its way out.
    public let handedOver = Atomic<Bool>(false)
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

    /// The path this process was started from (/proc/self/exe), resolved once at startup: an
    /// upgrade runs whatever file is at that path then.
    public static func resolveExecutable() -> String { UpgradeSpawn.resolveExecutable() }

    /// An upgrader that starts `executable` with `arguments`, writes each connection's state with
    /// `codec`, and asks `hooks` the rest. Add every reactor with ``add(_:)``.
    ///
    /// - Parameters:
    ///   - executable: the file started at an upgrade (``resolveExecutable()``).
    ///   - arguments: its arguments, without argv[0].
    ///   - environment: the names of the variables that tell the new process it is one.
    ///   - codec: writes each connection's handler state.
    ///   - hooks: what goes, and the process state.
    ///   - logger: where the upgrade's lines go.
    ///   - silenceTimeout: how long the new process may be silent (``silenceTimeout``); 5 s by
    ///     default. A test or an operator with a slow machine may change it; the new process
    ///     reports progress every fifth of it (``progressInterval(silence:)``).
    ///   - handOverLimit: the longest a hand-over may keep reads paused (``handOverLimit``); 10
    ///     minutes by default.
    public init(executable: String, arguments: [String], environment: UpgradeEnvironment, codec: Codec,
                hooks: UpgradeHooks<Handler> = UpgradeHooks(), logger: Logger,
                silenceTimeout: Duration = confirmTimeout, handOverLimit: Duration = defaultHandOverLimit) {
        self.silenceTimeout = max(.milliseconds(50), silenceTimeout)
        self.handOverLimit = max(self.silenceTimeout, handOverLimit)
        self.executable = executable
        self.arguments = arguments
        self.environment = environment
        self.codec = codec
        self.hooks = hooks
        self.logger = logger
    }

    /// A reactor of this process (from its own thread, before it runs).
    public func add(_ port: ReactorPort<Handler>) { ports.withLock { $0.append(port); $0.sort { $0.index < $1.index } } }

    /// SIGUSR2, on reactor 0's thread: start an upgrade on a thread of its own, unless one runs.
    public func signalled() {
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
        // Detached: nothing joins it (waitForUpgrade waits on `finished`), and a process may
        // exit while it finishes its last log line; a joinable thread left unjoined is a leak
        // to ThreadSanitizer.
        guard let thread = ReactorThread.spawn({ [self] in perform() }) else {
            logger.error("upgrade failed: cannot start the upgrade thread; still serving")
            phase.withLock { $0 = .idle }
            running.store(false, ordering: .releasing)
            return
        }
        pthread_detach(thread)
    }

    /// The process that took every connection over, once an upgrade committed; nil before.
    public var successor: pid_t? {
        phase.withLock { phase in
            if case .committed(let child) = phase { return child }
            return nil
        }
    }

    /// What a stop signal does, decided on reactor 0's thread.
    public enum StopDecision: Equatable, Sendable {
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
    public func stopRequested(_ signal: CInt, force: Bool) -> StopDecision {
        let act: StopAct = phase.withLock { phase in
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
            logger.notice("received \(Signals.name(signal)) during an upgrade: the stop waits for the upgrade to end (at most \(handOverLimit + silenceTimeout * 2)); then whichever process holds the connections stops gracefully (another stop signal aborts the upgrade)")
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

    /// Call it on the main thread once reactor 0 stopped: ``waitForUpgrade()``, then, after a
    /// hand-over, stop signals (`signals`) that still reach this process go to the new one for
    /// ``StopForwarding/grace`` (``StopForwarding``), and how many did is logged.
    public func finish(forwarding signals: [CInt]) {
        waitForUpgrade()
        guard let child = successor else { return }
        // The connections are the new process's: a stop signal that comes now is for it.
        StopForwarding.install(forwardingTo: child, signals: signals)
        StopForwarding.linger()
        if StopForwarding.forwarded > 0 {
            logger.notice("upgrade: forwarded \(StopForwarding.forwarded) stop signal(s) that reached this process after the hand-over to pid \(child)")
        }
    }

    /// Call it once reactor 0 stopped (a stop signal, or the hand-over done): an upgrade in
    /// flight finishes first, so that the new process gets everything it was promised (exiting
    /// now would close the socketpair under it). Bounded by ``handOverLimit`` and twice
    /// ``silenceTimeout`` (the hello, and the confirmation after the limit).
    public func waitForUpgrade() {
        guard running.load(ordering: .acquiring), !handedOver.load(ordering: .acquiring) else { return }
        logger.notice("upgrade in progress: waiting for it to finish before exiting")
        let bound = handOverLimit + silenceTimeout * 2
        _ = finished.wait(timeout: .now() + .milliseconds(Int(bound / .milliseconds(1))))
    }

    private let finished = DispatchSemaphore(value: 0)

    private func perform() {
        defer { finished.signal() }
        let started = ContinuousClock.now
        let reactors = ports.withLock { $0 }
        var child: pid_t = 0
        var detached: [Detached<Handler.ConnectionState>] = []
        let hooks = Unchecked(value: self.hooks)
        do {
            let (channel, childFD) = try HandOverChannel.pair()
            try channel.setTimeout(silenceTimeout)
            child = try UpgradeSpawn.spawn(executable, arguments: arguments, childFD: childFD, environment: environment,
                                           progressInterval: Self.progressInterval(silence: silenceTimeout))
            Glibc.close(childFD)
            let spawned = child
            let abortedEarly = phase.withLock { phase -> Bool in
                guard case .running(_, let stop, let force) = phase else { return false }
                phase = .running(child: spawned, stop: stop, force: force)
                return force
            }
            if abortedEarly { throw UpgradeError("aborted by a second stop signal") }

            // 1. hello both ways: the same format version, or nothing is handed over.
            var hello = UpgradeWriter(.hello)
            hello.u32(UInt32(getpid()))
            try channel.send(hello.bytes)
            let answer = try receive(channel, child: child)
            guard answer.type == .hello else { throw UpgradeError("expected hello, got \(answer.type)") }

            // 2. every reactor stops accepting and reading, and gives up its connections (those
            // the server includes: the others stay and are closed when this process stops).
            for port in reactors {
                let d = try port.run { reactor -> Detached<Handler.ConnectionState> in
                    let d = Detached(listeners: reactor.detachListenersForHandOver(),
                                     datagrams: reactor.detachDatagramSocketsForHandOver(),
                                     connections: reactor.detachForHandOver(where: hooks.value.include),
                                     statistics: reactor.statistics)
                    hooks.value.detached(reactor)
                    return d
                }
                detached.append(d)
            }
            let detachedAt = ContinuousClock.now

            // 3. listeners, then connections in batches with their pending output.
            var listeners = UpgradeWriter(.listeners, count: detached.reduce(0) { $0 + $1.listeners.count + $1.datagrams.count })
            var listenerFDs: [CInt] = []
            for (index, d) in detached.enumerated() {
                for l in d.listeners {
                    ListenerRecord(reactor: index, listener: l, role: hooks.value.listenerRole(l)).encode(into: &listeners)
                    listenerFDs.append(l.fd)
                }
                for socket in d.datagrams {
                    ListenerRecord(reactor: index, datagram: socket).encode(into: &listeners)
                    listenerFDs.append(socket.fd)
                }
            }
            try channel.send(listeners.bytes, fds: listenerFDs)
            var records: [ConnectionRecord] = []
            for (index, d) in detached.enumerated() {
                records += d.connections.map { ConnectionRecord($0, reactor: index, codec: codec) }
            }
            var sequence = 0
            while sequence < records.count {
                let batch = records[sequence..<min(sequence + UpgradeWire.connectionsPerMessage, records.count)]
                var message = UpgradeWriter(.connections, count: batch.count)
                for record in batch { record.encode(into: &message) }
                try channel.send(message.bytes, fds: batch.map(\.fd))
                for (k, record) in batch.enumerated() {
                    if !record.stateInline { try sendChunks(channel, .connectionState, count: sequence + k, record.state) }
                    if !record.pending.isEmpty { try sendChunks(channel, .output, count: sequence + k, record.pending) }
                }
                sequence += batch.count
            }
            let live = detached.map(\.statistics)
            let snapshotStart = ContinuousClock.now
            // Writing a large process state takes seconds (a keyspace of millions of keys), and
            // the new process waits on our silence too: report progress meanwhile.
            let beacon = ProgressBeacon(channel: channel, interval: Self.progressInterval(silence: silenceTimeout))
            beacon.restoring.store(true, ordering: .relaxed)
            let written = Result { try reactors[0].run { reactor in hooks.value.processState(reactor, live) } }
            beacon.stop()
            let state = try written.get()
            let snapshotMs = Int((ContinuousClock.now - snapshotStart) / .milliseconds(1))
            try sendChunks(channel, .processState, count: 0, state)
            var end = UpgradeWriter(.end, count: records.count)
            end.u64(UInt64(state.count))
            try channel.send(end.bytes)

            // 4. the new process confirms; then our copies go and this process exits. Meanwhile
            // it reports progress while it receives and restores (a large keyspace takes
            // seconds): each report restarts the silence timeout, and the whole is capped.
            var ready = try receive(channel, child: child)
            var reports = 0
            while ready.type == .progress {
                try ready.expectEnd()
                reports += 1
                if ContinuousClock.now - detachedAt > handOverLimit {
                    throw UpgradeError("the new process (pid \(child)) reported progress \(reports) times but did not confirm within \(handOverLimit) (the hand-over limit)")
                }
                ready = try receive(channel, child: child)
            }
            guard ready.type == .ready else { throw UpgradeError("expected ready, got \(ready.type)") }
            // Commit, unless a forced stop aborted the upgrade meanwhile (then the new process
            // was killed, and everything comes back here).
            let committed = phase.withLock { phase -> (ok: Bool, stop: CInt?) in
                guard case .running(_, let stop, let force) = phase, !force else { return (false, nil) }
                phase = .committed(child: child)
                return (true, stop)
            }
            guard committed.ok else { throw UpgradeError("aborted by a second stop signal") }
            handedOver.store(true, ordering: .releasing)
            for d in detached {
                for c in d.connections { Glibc.close(c.fd) }
                for l in d.listeners { Glibc.close(l.fd) }
                for socket in d.datagrams { Glibc.close(socket.fd) }
            }
            let ms = (ContinuousClock.now - started) / .milliseconds(1)
            let stall = (ContinuousClock.now - detachedAt) / .milliseconds(1)
            let stateNote = state.isEmpty ? "" : " and \(state.count) bytes of process state (written in \(snapshotMs) ms)"
            logger.notice("upgrade: handed \(records.count) connections and \(listenerFDs.count) listeners\(stateNote) to pid \(child) in \(Int(ms)) ms (reading paused \(Int(stall)) ms); exiting")
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
            let restored = takeBack(detached, reactors: reactors)
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

    /// Sends `bytes` as messages of `type` with `count`, ``UpgradeWire/outputChunk`` at a time.
    private func sendChunks(_ channel: HandOverChannel, _ type: UpgradeWire.MessageType, count: Int, _ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let end = min(offset + UpgradeWire.outputChunk, bytes.count)
            var chunk = UpgradeWriter(type, count: count)
            chunk.bytes += bytes[offset..<end]
            try channel.send(chunk.bytes)
            offset = end
        }
    }

    /// A failed upgrade: every reactor gets back what it gave up. Returns the connections taken back.
    private func takeBack(_ detached: [Detached<Handler.ConnectionState>], reactors: [ReactorPort<Handler>]) -> Int {
        var restored = 0
        let hooks = Unchecked(value: self.hooks)
        for (port, d) in zip(reactors, detached) {
            let logger = self.logger
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
                    for c in d.connections {
                        guard (try? reactor.installHandedOver(c, resume: hooks.value.resume)) != nil else {
                            // Closed without onClose (epoll refused it).
                            hooks.value.lost(reactor, c.state)
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
        return restored
    }

    /// The next message, or why there is none: the new process exited (with its status), did not
    /// answer in time, or refused.
    private func receive(_ channel: HandOverChannel, child: pid_t) throws -> UpgradeReader {
        let received = Result { () throws(SyscallError) in try channel.receive() }
        if case .failure(let error) = received, error.errno == .resourceTemporarilyUnavailable {
            throw UpgradeError("the new process (pid \(child)) did not answer within \(silenceTimeout) (no progress, no confirmation)")
        }
        let message = try received.get()
        guard let message else { throw gone(child) }
        for fd in message.fds { Glibc.close(fd) }
        let reader = try UpgradeReader(message.bytes)
        if reader.type == .refuse {
            throw UpgradeError("the new process (pid \(child)) refused: \(String(decoding: reader.remaining, as: UTF8.self))")
        }
        return reader
    }

    /// The new process closed its end: how it ended (it is reaped here), waiting up to 1 s.
    private func gone(_ child: pid_t) -> UpgradeError {
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
        return UpgradeError("the new process (pid \(child)) \(how) before confirming")
    }
}
