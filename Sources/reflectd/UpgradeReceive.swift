import Echo
import Glibc
import Logging
import Reactor

/// What a new process took over from the old one (see ``Upgrader``).
final class TakeOver: @unchecked Sendable {
    let channel: HandOverChannel
    let oldPid: pid_t
    let listeners: [HandOverListenerRecord]
    let connections: [HandOverRecord]
    /// The old process's counters, which ours continue.
    let statistics: ReactorStatistics

    private init(channel: HandOverChannel, oldPid: pid_t, listeners: [HandOverListenerRecord],
                 connections: [HandOverRecord], statistics: ReactorStatistics) {
        self.channel = channel
        self.oldPid = oldPid
        self.listeners = listeners
        self.connections = connections
        self.statistics = statistics
    }

    /// The listeners and connections for reactor `index` of `count`: what the old reactor of the
    /// same index had, modulo the new count (so all are served if `--reactors auto` changed).
    func listeners(reactor index: Int, of count: Int) -> [HandOverListenerRecord] {
        listeners.filter { $0.reactor % count == index && !$0.datagram }
    }

    /// The UDP sockets for reactor `index` of `count` (same rule as the listeners).
    func datagramSockets(reactor index: Int, of count: Int) -> [CInt] {
        listeners.filter { $0.reactor % count == index && $0.datagram }.map(\.listener.fd)
    }

    func connections(reactor index: Int, of count: Int) -> [HandOverRecord] {
        connections.filter { $0.reactor % count == index }
    }

    /// When this process was started by an upgrade (`REFLECTD_UPGRADE_FD`), receives everything
    /// from the old process; nil otherwise. Throws (after telling the old process why, so that
    /// it keeps serving) when the hand-over cannot be taken.
    static func receiveIfUpgrading() throws -> TakeOver? {
        guard let raw = getenv("REFLECTD_UPGRADE_FD") else { return nil }
        let text = String(cString: raw)
        unsetenv("REFLECTD_UPGRADE_FD")
        if let announce = getenv("REFLECTD_UPGRADE_ANNOUNCE_VERSION").flatMap({ UInt16(String(cString: $0)) }) {
            HandOverFormat.announced = announce
        }
        guard let fd = CInt(text), fd >= 0 else {
            throw StartupFailure(message: "REFLECTD_UPGRADE_FD must be a file descriptor number, got '\(text)'")
        }
        let channel: HandOverChannel
        do {
            channel = try HandOverChannel(inherited: fd)
            try channel.setTimeout(Upgrader.confirmTimeout)
        } catch {
            throw StartupFailure(message: "cannot use the upgrade hand-over fd \(fd): \(error)")
        }
        do {
            return try receive(channel)
        } catch {
            var refuse = HandOverWriter(.refuse)
            refuse.bytes += Array("\(error)".utf8.prefix(1000))
            try? channel.send(refuse.bytes)
            throw StartupFailure(message: "upgrade: cannot take over: \(error)")
        }
    }

    private static func next(_ channel: HandOverChannel) throws -> (HandOverReader, [CInt]) {
        guard let message = try channel.receive() else {
            throw HandOverError("the old process closed the hand-over socket")
        }
        do {
            return (try HandOverReader(message.bytes), message.fds)
        } catch {
            for fd in message.fds { close(fd) }
            throw error
        }
    }

    private static func receive(_ channel: HandOverChannel) throws -> TakeOver {
        let (hello, _) = try next(channel)
        guard hello.type == .hello else { throw HandOverError("expected hello, got \(hello.type)") }
        var helloReader = hello
        let oldPid = pid_t(try helloReader.u32())
        var mine = HandOverWriter(.hello)
        mine.u32(UInt32(getpid()))
        try channel.send(mine.bytes)
        adoptStdout()
        if HandOverFormat.announced != HandOverFormat.version {
            // Testing the refusal: the old process saw another version in our hello and gives up.
            throw HandOverError("announced hand-over format version \(HandOverFormat.announced) (REFLECTD_UPGRADE_ANNOUNCE_VERSION), the old process speaks \(HandOverFormat.version)")
        }

        var listeners: [HandOverListenerRecord] = []
        var connections: [HandOverRecord] = []
        var statistics = ReactorStatistics()
        var expectedEnd: Int?
        do {
            while expectedEnd == nil {
                var (r, fds) = try next(channel)
                switch r.type {
                case .listeners:
                    guard fds.count == r.count else { throw HandOverError("listeners: \(r.count) records but \(fds.count) fds") }
                    for fd in fds {
                        let reactor = Int(try r.u16())
                        let flags = try r.u8()
                        guard let address = SocketAddress(sockaddrBytes: try r.blob16()) else { throw HandOverError("listener address invalid") }
                        listeners.append(HandOverListenerRecord(
                            reactor: reactor,
                            listener: HandedOverListener(fd: fd, address: address, limited: flags & 1 != 0, ownsUnixPath: flags & 2 != 0),
                            metrics: flags & 4 != 0, datagram: flags & HandOverFormat.datagramFlag != 0))
                    }
                case .connections:
                    guard fds.count == r.count else { throw HandOverError("connections: \(r.count) records but \(fds.count) fds") }
                    for fd in fds {
                        var record = try HandOverRecord.decode(&r)
                        record.fd = fd
                        record.pending.reserveCapacity(record.pendingLength)
                        connections.append(record)
                    }
                case .output:
                    guard r.count < connections.count else { throw HandOverError("output for unknown connection \(r.count)") }
                    connections[r.count].pending += r.remaining
                    guard connections[r.count].pending.count <= connections[r.count].pendingLength else {
                        throw HandOverError("more output than announced for connection \(r.count)")
                    }
                case .statistics:
                    statistics = try ReactorStatistics.decode(&r)
                case .end:
                    expectedEnd = r.count
                default:
                    throw HandOverError("unexpected \(r.type) message")
                }
            }
            guard listeners.contains(where: { !$0.metrics && !$0.datagram }) else {
                throw HandOverError("the old process handed over no echo listener")
            }
            guard expectedEnd == connections.count else {
                throw HandOverError("end says \(expectedEnd!) connections, received \(connections.count)")
            }
            for (k, c) in connections.enumerated() where c.pending.count != c.pendingLength {
                throw HandOverError("connection \(k): \(c.pending.count) of \(c.pendingLength) pending bytes received")
            }
        } catch {
            for l in listeners { close(l.listener.fd) }
            for c in connections { close(c.fd) }
            throw error
        }
        return TakeOver(channel: channel, oldPid: oldPid, listeners: listeners, connections: connections, statistics: statistics)
    }

    /// Installs this reactor's share of the connections (on the reactor's thread, before it
    /// runs). Returns how many are open.
    func install(on reactor: Reactor<ServerHandler>, index: Int, of count: Int, policy: ExitLinePolicy, logger: Logger) -> Int {
        var installed = 0
        let resume = Upgrader.resume(policy, takingPlacesIn: reactor.handler.clientLimit)
        for record in connections(reactor: index, of: count) {
            do {
                try reactor.installHandedOver(record.connection, resume: resume)
                installed += 1
            } catch {
                logger.warning("upgrade: a handed-over connection could not be installed: \(error)")
            }
        }
        return installed
    }

    /// The metrics listener, attached to reactor 0; nil if the old process had none.
    func metricsListener(on reactor: Reactor<ServerHandler>) throws -> SocketAddress? {
        guard let record = listeners.first(where: { $0.metrics }) else { return nil }
        return try reactor.attachHandedOverListener(record.listener)
    }

    /// Our hello is sent: the old process's stdout becomes ours (until now it was /dev/null,
    /// see Upgrader.spawn), so the `listening on` lines reach whoever waits for them.
    private static func adoptStdout() {
        guard let raw = getenv("REFLECTD_UPGRADE_STDOUT_FD") else { return }
        let text = String(cString: raw)
        unsetenv("REFLECTD_UPGRADE_STDOUT_FD")
        guard let fd = CInt(text), fd > 2 else { return }
        dup2(fd, 1)
        close(fd)
    }

    /// Tells the service manager and then the old process that this one serves now. Just
    /// before, it rejoins the old process's group (it was started in one of its own, see
    /// Upgrader.spawn), so a terminal's Ctrl-C or a group signal still reaches the server.
    func confirm(installed: Int, logger: Logger) {
        if let raw = getenv("REFLECTD_UPGRADE_PGID"), let group = pid_t(String(cString: raw)), group > 0 {
            unsetenv("REFLECTD_UPGRADE_PGID")
            _ = setpgid(0, group)
        }
        do {
            try ServiceManager.notify("MAINPID=\(getpid())\nREADY=1")
        } catch {
            logger.warning("upgrade: cannot notify the service manager: \(error)")
        }
        var ready = HandOverWriter(.ready, count: installed)
        ready.u32(UInt32(getpid()))
        do {
            try channel.send(ready.bytes)
        } catch {
            logger.warning("upgrade: cannot confirm to the old process (pid \(oldPid)): \(error)")
        }
    }
}
