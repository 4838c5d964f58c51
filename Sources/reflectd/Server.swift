import ClientAdmission
import Dispatch
import Echo
import Glibc
import Logging
import NonBlockingLog
import Reactor
import ServerKit
import Synchronization

/// Starts the reactors, one per thread, and runs until a signal stops them.
///
/// Reactor 0 runs on the main thread and owns the signalfd; it answers the kit's signal policy
/// (``SignalPolicy/install(on:_:logger:)``): SIGTERM/SIGINT/SIGQUIT stop the others through their
/// handles, SIGHUP, SIGALRM and SIGUSR1 get a log line and SIGUSR2 an upgrade (Upgrade.swift).
/// Each reactor has its own listening socket on the same address (SO_REUSEPORT), so the kernel
/// spreads connections; connections never move between threads.
struct Server {
    let options: Reflectd
    let logger = Logger(label: "reflectd")
    /// Where log lines wait for stderr (for the drop count).
    let logQueue: LogQueue?

    /// Blocks every signal the server handles (``SignalPolicy/block()``), before any other thread starts.
    static func blockSignals() {
        SignalPolicy.block()
    }

    /// Where reactors get their listening sockets.
    enum Listeners {
        /// Bind these addresses; several reactors share TCP addresses with SO_REUSEPORT.
        case bind(tcp: SocketAddress, unix: SocketAddress?)
        /// systemd socket activation: serve these inherited fds.
        case inherited([CInt])
        /// An upgrade: the old process's listeners (Upgrade*.swift), by reactor index modulo the count.
        case handedOver(TakeOver, reactors: Int)
    }

    func run() throws {
        // The signals are already blocked (see blockSignals()); this is for the record.
        Server.blockSignals()
        Signals.ignoreSIGPIPE()
        // Before any reactor exists: each sizes its connection table from the fd limit.
        let fdLimit = FileLimit.raiseToHard()

        let count = options.reactors.value
        var configuration = ReactorConfiguration()
        configuration.logger = logger
        configuration.idleTimeout = options.idleTimeout
        configuration.sendTimeout = options.sendTimeout == 0 ? nil : .seconds(options.sendTimeout)
        configuration.keepAlive = options.keepalive
        configuration.noDelay = options.tcpNodelay
        configuration.kernelEcho = options.kernelEcho == .on
        configuration.connectionLimit = options.maxConnections.map { ConnectionLimit(maximum: $0) }

        // Started by an upgrade: take the old process's listeners and connections first.
        let takeOver = try TakeOver.receiveIfUpgrading()
        let listeners = try takeOver.map { .handedOver($0, reactors: count) } ?? resolveListeners(reactors: count, fdLimit: fdLimit.after)
        let upgrader = Upgrader(executable: Server.executable, arguments: Array(CommandLine.arguments.dropFirst()),
                                logger: logger, policy: options.exitLinePolicy,
                                carried: takeOver?.statistics ?? ReactorStatistics())
        let registry = ReactorRegistry()
        let readiness = Readiness()
        var metrics: MetricsEndpoint?
        if let metricsPort = options.metricsPort {
            let address = try resolve(options.metricsHost ?? options.host, metricsPort,
                                      what: options.metricsHost == nil ? "--host" : "--metrics-host")
            metrics = MetricsEndpoint(prefix: "reflectd_", address: address, registry: registry)
            metrics?.closeReasons = ["eof", "exit", "reset", "error", "shutdown", "timeout", "limit"]
            metrics?.protocolSeries = DatagramService.series
            metrics?.logLinesDropped = { [logQueue] in logQueue?.droppedTotal ?? 0 }
            metrics?.carried = takeOver?.statistics ?? ReactorStatistics()
            metrics?.readiness = readiness
        }
        let capacity = reportCapacity(fdLimit, reactors: count, listeners: listeners, metrics: metrics != nil)

        // Reactor 0, on this thread.
        let clientLimit = perClientLimit(capacity: capacity)
        metrics?.clientLimitRejections = clientLimit.map { limit in { limit.rejected } }
        let admission: AdmissionPolicy
        do {
            admission = try options.admission.policy(clientLimit: clientLimit)
        } catch {
            throw StartupFailure(message: "invalid --proxy-protocol-from: \(error)")
        }
        let exitLine = options.exitLinePolicy
        let main = try make(ServerHandler(logger: logger, metrics: metrics, exitLine: exitLine, admission: admission), configuration)
        registry.add(main.handle)
        var announced = try listen(main, listeners, index: 0)
        let datagrams = DatagramService(options: options)
        let udp = try datagramAddress(listeners, tcp: announced, reactors: count)
        let announcedUDP: [SocketAddress]
        do {
            announcedUDP = try Server.serveDatagrams(main, listeners, index: 0, service: datagrams, address: udp, shared: count > 1)
        } catch {
            throw StartupFailure(message: error.message)
        }
        if let metrics {
            let bound = try takeOver?.metricsListener(on: main) ?? bind(main, metrics.address)
            metrics.address = bound
            metrics.ownStatistics = { [unowned main] in main.statistics }
            metrics.ownIndex = 0
        }

        // Reactors 1..<count, each created, bound and run on its own thread.
        var installed = takeOver?.install(on: main, index: 0, of: count, policy: options.exitLinePolicy, logger: logger) ?? 0
        upgrader.add(ReactorPort(index: 0, reactor: main))
        let installedByOthers = InstallCount()
        let group = ReactorGroup()
        let backlog = options.backlog
        do {
            try group.start(1..<max(count, 1)) { [configuration, listeners, logger, admission] index in
                let reactor = try Reactor(handler: ServerHandler(logger: logger, metrics: nil, exitLine: exitLine, admission: admission),
                                          configuration: configuration)
                _ = try Server.listenOn(reactor, listeners, index: index, shared: true, backlog: backlog)
                _ = try Server.serveDatagrams(reactor, listeners, index: index, service: datagrams, address: udp, shared: true)
                if let takeOver {
                    installedByOthers.add(takeOver.install(on: reactor, index: index, of: count, policy: exitLine, logger: logger))
                }
                upgrader.add(ReactorPort(index: index, reactor: reactor))
                return reactor
            }
        } catch {
            switch error {
            case .noThread(let index):
                throw StartupFailure(message: "cannot start reactor thread \(index): pthread_create failed (the process or user may be at its thread limit)")
            case .failed(let index, let message):
                throw StartupFailure(message: "reactor \(index) could not start: \(message)")
            }
        }
        group.handles.forEach(registry.add)

        do {
            // The kit's signal policy. Not the Reactor's own stop(onSignals:): a stop during an
            // upgrade must wait for the upgrade to decide which process holds the connections
            // (Upgrader.stopRequested).
            var actions = SignalPolicy.Actions(name: "reflectd")
            actions.others = Array(registry.all.dropFirst())
            actions.readiness = readiness
            actions.stopDelay = options.stopDelayDuration
            actions.stopsHere = { upgrader.stopRequested($0, force: $1) == .stopHere }
            actions.upgrade = { upgrader.signalled(metrics: metrics) }
            actions.snapshot = { [unowned main, logQueue] in
                Server.snapshot(metrics?.echoTotals().total ?? Server.sum(registry, live: main.statistics),
                                reactors: registry.all.count, logLinesDropped: logQueue?.droppedTotal ?? 0)
            }
            try SignalPolicy.install(on: main, actions, logger: logger)
        } catch {
            group.stopNow()
            throw StartupFailure(message: "cannot receive signals: \(error)")
        }
        if announced.isEmpty { announced = main.listeningAddresses }
        warnIfProxyTrustsAnyone(announced, metrics: metrics?.address)
        for address in announced { UnbufferedOutput.write("listening on \(address)\n", to: 1) }
        for address in announcedUDP { UnbufferedOutput.write(DatagramService.announcement(address), to: 1) }
        if let metrics { UnbufferedOutput.write("metrics on http://\(metrics.address)/metrics\n", to: 1) }
        if let takeOver {
            installed += installedByOthers.value
            takeOver.confirm(installed: installed, logger: logger)
            logger.notice("upgrade: took \(installed) connections from pid \(takeOver.oldPid) (this is pid \(getpid()))")
        } else {
            ServiceManager.notifyReady(logger: logger)
        }
        logger.info("reflectd started", metadata: ["reactors": "\(count)", "pid": "\(getpid())"])
        main.run()
        upgrader.finish(forwarding: SignalPolicy.stopSignals)
        group.join()
        let total = registry.all.map(\.latestStatistics).reduce(ReactorStatistics(), +)
        logger.info("stopped", metadata: ["accepted": "\(total.accepted)"])
    }

    // MARK: statistics

    /// Reactor 0's live counters and the others' last published ones (at most a second old).
    static func sum(_ registry: ReactorRegistry, live: ReactorStatistics) -> ReactorStatistics {
        registry.all.dropFirst().map(\.latestStatistics).reduce(live, +)
    }

    /// The one-line statistics snapshot of SIGUSR1.
    static func snapshot(_ total: ReactorStatistics, reactors: Int, logLinesDropped: Int) -> String {
        let reasons = total.closed.filter { $0.value > 0 }.sorted { $0.key < $1.key }
        let closed = reasons.isEmpty ? "none" : reasons.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        return "statistics: open=\(total.open) accepted=\(total.accepted) rejected=\(total.rejectedByLimit) "
            + "closed: \(closed); bytes_in=\(total.bytesIn) bytes_out=\(total.bytesOut) "
            + "accept_pauses=\(total.acceptPauses) log_lines_dropped=\(logLinesDropped) reactors=\(reactors); "
            + DatagramService.snapshot(total)
    }

    // MARK: file descriptors

    /// `--max-connections-per-client` for a process with room for `capacity` connections (what
    /// the fd limit leaves), logged at notice when it is the default. The default guards the fd
    /// limit only: under a --max-connections it would never bind, it is not set at all.
    private func perClientLimit(capacity: Int) -> ClientLimit? {
        guard let maximum = options.admission.maxConnectionsPerClient.maximum(capacity: capacity) else { return nil }
        if options.admission.maxConnectionsPerClient == .auto {
            if let cap = options.maxConnections, cap <= maximum { return nil }
            logger.notice("at most \(maximum) connections per client address (--max-connections-per-client auto: \(PerClientLimit.autoPercent) % of the \(capacity) the fd limit leaves room for; set a lower number for a public server, or `off`)")
        }
        return ClientLimit(maximum: maximum)
    }

    /// `--proxy-protocol` believes any source's PROXY header unless --proxy-protocol-from says
    /// whose: warn when that is so on an address other hosts can reach.
    private func warnIfProxyTrustsAnyone(_ announced: [SocketAddress], metrics: SocketAddress?) {
        guard options.admission.proxyProtocol, options.admission.proxyProtocolFrom == nil else { return }
        let exposed = announced.filter { address in
            !address.isUnix && address.port != metrics?.port && !Server.isLoopback(address)
        }
        guard !exposed.isEmpty else { return }
        logger.warning("--proxy-protocol on \(exposed.map(\.description).joined(separator: ", ")) without --proxy-protocol-from: any client that reaches this address can forge its source in a PROXY header (and so its per-client limit and its log lines); give --proxy-protocol-from with your balancers' addresses")
    }

    /// 127.0.0.0/8, ::1, and ::ffff:127.0.0.0/104.
    static func isLoopback(_ address: SocketAddress) -> Bool {
        address.withIPAddressBytes { bytes in
            if bytes.count == 4 { return bytes[0] == 127 }
            let mapped = bytes[0..<10].allSatisfy { $0 == 0 } && bytes[10] == 0xFF && bytes[11] == 0xFF
            if mapped { return bytes[12] == 127 }
            return bytes[0..<15].allSatisfy { $0 == 0 } && bytes[15] == 1
        } ?? false
    }

    /// Logs at notice how many connections the fd limit leaves room for, and warns when
    /// --max-connections asks for more. Returns that room.
    @discardableResult
    private func reportCapacity(_ limit: FileLimit.Raise, reactors: Int, listeners: Listeners, metrics: Bool) -> Int {
        let reserved = Server.reservedDescriptors(reactors: reactors, listeners: listeners, metrics: metrics, udp: options.udpEnabled)
        let capacity = max(0, limit.after - reserved)
        let raised = limit.after > limit.before ? " (soft limit raised from \(limit.before) to the hard limit)" : ""
        logger.notice("fd limit \(limit.after)\(raised): room for \(capacity) connections (\(reserved) descriptors kept for stdio, reactors, listeners, signals\(metrics ? " and \(MetricsEndpoint.maxConnections + 1) for metrics" : ""))")
        if let maximum = options.maxConnections, maximum > capacity {
            logger.warning("--max-connections \(maximum) exceeds the \(capacity) connections the fd limit (\(limit.after)) leaves room for; past that, clients wait in the backlog. Raise the hard limit (LimitNOFILE= in the unit, ulimit -Hn) or lower --max-connections")
        }
        return capacity
    }

    /// Descriptors the process holds whatever its clients do: stdin, stdout and stderr; per
    /// reactor an epoll fd, an eventfd and a timerfd; the listeners (each reactor has its own
    /// TCP listener or copy of every inherited socket; reactor 0 the Unix one); the signalfd; and
    /// the metrics listener with its connections.
    static func reservedDescriptors(reactors: Int, listeners: Listeners, metrics: Bool, udp: Bool = false) -> Int {
        var reserved = 3 + 3 * reactors + 1
        switch listeners {
        case .bind(_, let unix): reserved += reactors + (unix == nil ? 0 : 1) + (udp ? reactors : 0)
        case .inherited(let fds): reserved += reactors * fds.count
        case .handedOver(let takeOver, _): reserved += takeOver.listeners.count
        }
        if metrics { reserved += 1 + MetricsEndpoint.maxConnections }
        return reserved
    }

    private func make(_ handler: ServerHandler, _ configuration: ReactorConfiguration) throws -> Reactor<ServerHandler> {
        do {
            return try Reactor(handler: handler, configuration: configuration)
        } catch {
            throw StartupFailure(message: "cannot create the event loop: \(error)")
        }
    }

    // MARK: listening sockets

    private func resolve(_ host: String, _ port: Int, what: String) throws -> SocketAddress {
        do {
            return try SocketAddress(host: host, port: port)
        } catch {
            throw StartupFailure(message: "invalid \(what): \(error)")
        }
    }

    /// Decides what every reactor will listen on, and checks the TCP address is free first, since
    /// SO_REUSEPORT alone would quietly share a port with another server run by the same user.
    private func resolveListeners(reactors: Int, fdLimit: Int) throws -> Listeners {
        let inherited: [CInt]?
        do {
            inherited = try SocketActivation.inheritedFDs(fdLimit: fdLimit)
        } catch {
            throw StartupFailure(message: "socket activation: \(error.message); not binding an address of its own instead")
        }
        if let inherited {
            logger.info("socket activation: serving \(inherited.count) inherited socket(s)")
            // --host still places the metrics listener when --metrics-host is not given.
            let hostForMetrics = options.metricsPort != nil && options.metricsHost == nil
            let ignored = ["--host", "--port", "--unix", "--udp", "--udp-port"].filter(Reflectd.given).filter { $0 != "--host" || !hostForMetrics }
            if !ignored.isEmpty {
                logger.warning("socket activation: \(ignored.joined(separator: ", ")) ignored; reflectd serves only the \(inherited.count) socket(s) it was given")
            }
            if hostForMetrics {
                logger.notice("socket activation: the echo sockets are the \(inherited.count) inherited one(s); the metrics listener binds --host \(options.host) (--metrics-host chooses its address)")
            }
            return .inherited(inherited)
        }
        var tcp = try resolve(options.host, options.port, what: "--host")
        if reactors > 1 {
            do {
                tcp = try tcp.checkAvailable()
            } catch {
                throw StartupFailure(message: Server.explain(error, address: tcp, listener: .echo))
            }
        }
        let unix: SocketAddress?
        do {
            unix = try options.unix.map { try SocketAddress(unixPath: $0) }
        } catch {
            throw StartupFailure(message: "invalid --unix \(options.unix ?? ""): \(error)")
        }
        return .bind(tcp: tcp, unix: unix)
    }

    private func listen(_ reactor: Reactor<ServerHandler>, _ listeners: Listeners, index: Int) throws -> [SocketAddress] {
        do {
            return try Server.listenOn(reactor, listeners, index: index, shared: options.reactors.value > 1,
                                       backlog: options.backlog, unixMode: options.unixMode?.value)
        } catch {
            throw StartupFailure(message: error.message)
        }
    }

    /// The metrics listener: the echo listeners' backlog (a burst of scrapers or a port scan must
    /// not overflow it), and exempt from --max-connections so a full server can still be observed
    /// (it has its own cap, MetricsEndpoint.maxConnections).
    private func bind(_ reactor: Reactor<ServerHandler>, _ address: SocketAddress) throws -> SocketAddress {
        do {
            return try reactor.listen(on: address, backlog: options.backlog, limited: false)
        } catch {
            let own = reactor.listeningAddresses.first { $0.port == address.port && address.port != 0 }
            throw StartupFailure(message: Server.explain(error, address: address, listener: .metrics, clashesWith: own))
        }
    }

    /// Reactor `index` listens: on the TCP address (shared with SO_REUSEPORT when there are several
    /// reactors) and, for reactor 0 only, the Unix socket (Unix sockets cannot share an address);
    /// or on its own duplicate of every inherited fd.
    static func listenOn(_ reactor: Reactor<ServerHandler>, _ listeners: Listeners, index: Int, shared: Bool,
                         backlog: Int, unixMode: mode_t? = nil) throws(ListenFailure) -> [SocketAddress] {
        switch listeners {
        case .bind(let tcp, let unix):
            var bound: [SocketAddress] = []
            do {
                bound.append(try ListenerError.naming(.echo, tcp) { () throws(SyscallError) in
                    try reactor.listen(on: tcp, backlog: backlog, reusePort: shared)
                })
                if index == 0, let unix {
                    bound.append(try ListenerError.naming(.unix, unix) { () throws(SyscallError) in
                        try reactor.listen(on: unix, backlog: backlog, unixMode: unixMode)
                    })
                }
            } catch {
                throw ListenFailure(message: error.description)
            }
            return bound
        case .inherited(let fds):
            var bound: [SocketAddress] = []
            for fd in fds where !SocketActivation.isDatagram(fd) {
                // Every reactor polls the same inherited socket; accept4 on a non-blocking socket
                // simply returns EAGAIN to the reactors that lose the race.
                let own = index == 0 ? fd : fcntl(fd, F_DUPFD_CLOEXEC, 0)
                guard own >= 0 else { throw ListenFailure(message: "cannot duplicate inherited fd \(fd) for reactor \(index)") }
                do {
                    bound.append(try reactor.adoptListener(fd: own))
                } catch {
                    throw ListenFailure(message: "cannot use inherited fd \(fd): \(error)")
                }
            }
            return bound
        case .handedOver(let takeOver, let count):
            var attached: [SocketAddress] = []
            for record in takeOver.listeners(reactor: index, of: count) where !record.metrics {
                do {
                    attached.append(try reactor.attachHandedOverListener(record.listener))
                } catch {
                    throw ListenFailure(message: "cannot use the handed-over listener on \(record.listener.address): \(error)")
                }
            }
            return attached
        }
    }

    static func explain(_ error: SyscallError, address: SocketAddress, listener: ListenerKind,
                        clashesWith own: SocketAddress? = nil) -> String {
        let what = "cannot listen on \(address) (\(listener.words))"
        if listener == .unix && error.errno == .noSuchFileOrDirectory {
            return "\(what): no such directory (ENOENT); create the directory first"
        }
        switch error.errno {
        case .addressInUse:
            if let own {
                return "\(what): address already in use (EADDRINUSE): reflectd's own echo listener is on \(own); give --metrics-port another port"
            }
            return "\(what): address already in use (EADDRINUSE); is another server running on that \(listener == .unix ? "path" : "port")?"
        case .permissionDenied:
            if listener == .unix { return "\(what): permission denied (EACCES); check the directory's permissions" }
            return "\(what): permission denied (EACCES); ports below 1024 need privileges"
        case .addressNotAvailable:
            return "\(what): address not available on this machine (EADDRNOTAVAIL)"
        default:
            return "\(what): \(error)"
        }
    }
}

/// A listener that could not be set up, in words naming its address, path or fd.
struct ListenFailure: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}
