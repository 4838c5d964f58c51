import Glibc
import Logging
import Reactor

/// The new side of an upgrade (see ``Upgrader``): what this process took over from the old one
/// (listeners, datagram sockets, connections, the process state), to install on its reactors
/// and then confirm.
public final class TakeOver<Codec: HandOverCodec>: @unchecked Sendable {
    /// The hand-over socket to the old process.
    public let channel: HandOverChannel
    /// The old process.
    public let oldPid: pid_t
    /// Every listener and datagram socket, in the old process's order.
    public let listeners: [ListenerRecord]
    /// Every connection, in the old process's order.
    public let connections: [ConnectionRecord]
    /// The old process's one blob of process state (empty if it sent none).
    public let processState: [UInt8]
    let codec: Codec
    let environment: UpgradeEnvironment

    private init(channel: HandOverChannel, oldPid: pid_t, stream: HandOverStream, codec: Codec, environment: UpgradeEnvironment) {
        self.channel = channel
        self.oldPid = oldPid
        listeners = stream.listeners
        connections = stream.connections
        processState = stream.processState
        self.codec = codec
        self.environment = environment
    }

    /// The listeners (not datagram sockets) for reactor `index` of `count`: what the old reactor
    /// of the same index had, modulo the new count (so all are served if the count changed).
    public func listeners(reactor index: Int, of count: Int) -> [ListenerRecord] {
        listeners.filter { $0.reactor % count == index && !$0.datagram }
    }

    /// The datagram sockets for reactor `index` of `count` (same rule as the listeners).
    public func datagramSockets(reactor index: Int, of count: Int) -> [CInt] {
        listeners.filter { $0.reactor % count == index && $0.datagram }.map(\.fd)
    }

    /// The connections for reactor `index` of `count` (same rule as the listeners).
    public func connections(reactor index: Int, of count: Int) -> [ConnectionRecord] {
        connections.filter { $0.reactor % count == index }
    }

    /// When this process was started by an upgrade (`<PREFIX>_FD`), receives everything from
    /// the old process; nil otherwise. `acceptProcessState` checks the process state (throw to
    /// refuse the upgrade). Throws (after telling the old process why, so that it keeps serving)
    /// when the hand-over cannot be taken.
    public static func receiveIfUpgrading(
        environment: UpgradeEnvironment, codec: Codec, timeout: Duration = .seconds(5),
        acceptProcessState: ([UInt8]) throws -> Void = { _ in }
    ) throws(UpgradeError) -> TakeOver? {
        guard let text = environment.take(environment.fd) else { return nil }
        if let announce = environment.take(environment.announceVersion).flatMap({ UInt16($0) }) {
            UpgradeWire.announced = announce
        }
        guard let fd = CInt(text), fd >= 0 else {
            throw UpgradeError("\(environment.fd) must be a file descriptor number, got '\(text)'")
        }
        let channel: HandOverChannel
        do {
            channel = try HandOverChannel(inherited: fd)
            try channel.setTimeout(timeout)
        } catch {
            throw UpgradeError("cannot use the upgrade hand-over fd \(fd): \(error)")
        }
        do {
            return try receive(channel, codec: codec, environment: environment, acceptProcessState: acceptProcessState)
        } catch {
            var refuse = UpgradeWriter(.refuse)
            refuse.bytes += Array("\(error)".utf8.prefix(1000))
            try? channel.send(refuse.bytes)
            throw UpgradeError("upgrade: cannot take over: \(error)")
        }
    }

    private static func next(_ channel: HandOverChannel) throws -> (bytes: [UInt8], fds: [CInt]) {
        guard let message = try channel.receive() else {
            throw UpgradeError("the old process closed the hand-over socket")
        }
        return message
    }

    private static func receive(_ channel: HandOverChannel, codec: Codec, environment: UpgradeEnvironment,
                                acceptProcessState: ([UInt8]) throws -> Void) throws -> TakeOver {
        let first = try next(channel)
        for fd in first.fds { close(fd) }
        var hello = try UpgradeReader(first.bytes)
        guard hello.type == .hello else { throw UpgradeError("expected hello, got \(hello.type)") }
        let oldPid = pid_t(truncatingIfNeeded: try hello.u32())
        var mine = UpgradeWriter(.hello)
        mine.u32(UInt32(getpid()))
        try channel.send(mine.bytes)
        adoptStdout(environment)
        if UpgradeWire.announced != UpgradeWire.version {
            // Testing the refusal: the old process saw another version in our hello and gives up.
            throw UpgradeError("announced hand-over format version \(UpgradeWire.announced) (\(environment.announceVersion)), the old process speaks \(UpgradeWire.version)")
        }

        // Progress reports while this takes long (a large keyspace), when the old process asked
        // for them: it then waits on silence, not on the total (``Upgrader/silenceTimeout``).
        let beacon = environment.take(environment.progressInterval).flatMap { Int($0) }.flatMap {
            $0 > 0 ? ProgressBeacon(channel: channel, interval: .milliseconds($0)) : nil
        }
        defer { beacon?.stop() }
        var stream = HandOverStream()
        do {
            while !stream.finished {
                let message = try next(channel)
                try stream.feed(message.bytes, fds: message.fds)
                beacon?.advance()
            }
            // Every state is read once now: a state this binary cannot read refuses the whole
            // upgrade (the old process keeps serving) instead of losing one connection later.
            for record in stream.connections {
                let peer = SocketAddress(sockaddrBytes: record.peer) ?? (try! SocketAddress(unixPath: "?"))
                _ = try codec.decode(record.state[...], peer: peer)
                beacon?.advance()
            }
            beacon?.restoring.store(true, ordering: .relaxed)
            try acceptProcessState(stream.processState)
            beacon?.restoring.store(false, ordering: .relaxed)
        } catch {
            beacon?.stop()
            for fd in stream.receivedFDs { close(fd) }
            throw error
        }
        return TakeOver(channel: channel, oldPid: oldPid, stream: stream, codec: codec, environment: environment)
    }

    /// Installs this reactor's share of the connections (on the reactor's thread, before it
    /// runs), each with `resume` (`Reactor/installHandedOver(_:resume:)`). Returns how many are open.
    public func install<Handler: ConnectionHandler>(
        on reactor: Reactor<Handler>, index: Int, of count: Int, logger: Logger,
        resume: ((borrowing Connection<Handler>, inout Handler.ConnectionState) -> Void)? = nil
    ) -> Int where Handler.ConnectionState == Codec.State {
        var installed = 0
        for record in connections(reactor: index, of: count) {
            let connection: HandedOverConnection<Codec.State>
            do { connection = try record.connection(codec: codec) } catch {
                logger.warning("upgrade: a handed-over connection's state could not be read: \(error)")
                close(record.fd)
                continue
            }
            do {
                try reactor.installHandedOver(connection, resume: resume)
                installed += 1
            } catch {
                logger.warning("upgrade: a handed-over connection could not be installed: \(error)")
            }
        }
        return installed
    }

    /// Our hello is sent: the old process's stdout becomes ours (until now it was /dev/null,
    /// see ``Upgrader``), so the `listening on` lines reach whoever waits for them.
    private static func adoptStdout(_ environment: UpgradeEnvironment) {
        guard let text = environment.take(environment.stdoutFD), let fd = CInt(text), fd > 2 else { return }
        dup2(fd, 1)
        close(fd)
    }

    /// Tells the old process that this one serves now. First it rejoins the old process's group
    /// (it was started in one of its own), so a terminal's Ctrl-C or a group signal still reaches
    /// the server; then `beforeReady` runs (tell the service manager `MAINPID=` and `READY=1`
    /// there, before the old process exits).
    public func confirm(installed: Int, logger: Logger, beforeReady: () -> Void) {
        if let text = environment.take(environment.processGroup), let group = pid_t(text), group > 0 {
            _ = setpgid(0, group)
        }
        beforeReady()
        var ready = UpgradeWriter(.ready, count: installed)
        ready.u32(UInt32(getpid()))
        do {
            try channel.send(ready.bytes)
        } catch {
            logger.warning("upgrade: cannot confirm to the old process (pid \(oldPid)): \(error)")
        }
    }
}
