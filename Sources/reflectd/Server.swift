import Dispatch
import Glibc
import Logging
import Reactor
import Synchronization

/// Starts the reactors, one per thread, and runs until a signal stops them.
///
/// Reactor 0 runs on the main thread and owns the signalfd; on SIGTERM/SIGINT it stops the others
/// through their handles. Each reactor has its own listening socket on the same address
/// (SO_REUSEPORT), so the kernel spreads connections; connections never move between threads.
struct Server {
    let options: Reflectd
    let logger = Logger(label: "reflectd")

    /// Where reactors get their listening sockets.
    enum Listeners {
        /// Bind these addresses; several reactors share TCP addresses with SO_REUSEPORT.
        case bind(tcp: SocketAddress, unix: SocketAddress?)
        /// systemd socket activation: serve these inherited fds.
        case inherited([CInt])
    }

    func run() throws {
        // Block the stop signals before any thread exists, so every thread inherits the mask and
        // they arrive only through reactor 0's signalfd.
        Signals.block([SIGTERM, SIGINT])
        Signals.ignoreSIGPIPE()

        let count = options.reactors.value
        var configuration = ReactorConfiguration()
        configuration.logger = logger
        configuration.idleTimeout = options.idleTimeout
        configuration.keepAlive = options.keepalive
        configuration.noDelay = options.tcpNodelay
        configuration.connectionLimit = options.maxConnections.map { ConnectionLimit(maximum: $0) }

        let listeners = try resolveListeners(reactors: count)
        let registry = ReactorRegistry()
        var metrics: MetricsEndpoint?
        if let metricsPort = options.metricsPort {
            let address = try resolve(options.host, metricsPort, what: "--host")
            metrics = MetricsEndpoint(address: address, registry: registry)
        }

        // Reactor 0, on this thread.
        let main = try make(ServerHandler(logger: logger, metrics: metrics, exitLine: options.exitLinePolicy), configuration)
        registry.add(main.handle)
        var announced = try listen(main, listeners, index: 0)
        if let metrics {
            let bound = try bind(main, metrics.address)
            metrics.address = bound
            metrics.ownStatistics = { [unowned main] in main.statistics }
            metrics.ownIndex = 0
            logger.info("metrics on http://\(bound)/metrics")
        }

        // Reactors 1..<count, each created, bound and run on its own thread.
        var threads: [pthread_t] = []
        for index in 1..<max(count, 1) {
            let started = StartGate()
            let backlog = options.backlog
            let exitLine = options.exitLinePolicy
            let thread = spawnThread { [configuration, listeners, logger] in
                do {
                    let reactor = try Reactor(handler: ServerHandler(logger: logger, metrics: nil, exitLine: exitLine), configuration: configuration)
                    _ = try Server.listenOn(reactor, listeners, index: index, shared: true, backlog: backlog)
                    started.succeed(reactor.handle)
                    reactor.run()
                } catch {
                    started.fail("\(error)")
                }
            }
            threads.append(thread)
            switch started.wait() {
            case .success(let handle): registry.add(handle)
            case .failure(let message):
                registry.all.forEach { $0.stopNow() }
                threads.forEach { pthread_join($0, nil) }
                throw StartupFailure(message: "reactor \(index) could not start: \(message)")
            }
        }

        let others = Array(registry.all.dropFirst())
        try main.stop(onSignals: [SIGTERM, SIGINT], alsoStopping: others)
        if announced.isEmpty { announced = main.listeningAddresses }
        for address in announced { Output.write("listening on \(address)\n", to: 1) }
        logger.info("reflectd started", metadata: ["reactors": "\(count)", "pid": "\(getpid())"])
        main.run()
        for thread in threads { pthread_join(thread, nil) }
        let total = registry.all.map(\.latestStatistics).reduce(ReactorStatistics(), +)
        logger.info("stopped", metadata: ["accepted": "\(total.accepted)"])
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
    private func resolveListeners(reactors: Int) throws -> Listeners {
        if let inherited = SocketActivation.inheritedFDs() {
            logger.info("socket activation: serving \(inherited.count) inherited socket(s)")
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
            throw StartupFailure(message: "invalid --unix: \(error)")
        }
        return .bind(tcp: tcp, unix: unix)
    }

    private func listen(_ reactor: Reactor<ServerHandler>, _ listeners: Listeners, index: Int) throws -> [SocketAddress] {
        do {
            return try Server.listenOn(reactor, listeners, index: index, shared: options.reactors.value > 1, backlog: options.backlog)
        } catch let error as ListenerError {
            throw StartupFailure(message: error.description)
        } catch {
            throw StartupFailure(message: "cannot use the inherited socket: \(error)")
        }
    }

    /// The metrics listener: a small backlog, and exempt from --max-connections so a full server
    /// can still be observed.
    private func bind(_ reactor: Reactor<ServerHandler>, _ address: SocketAddress) throws -> SocketAddress {
        do {
            return try reactor.listen(on: address, backlog: 64, limited: false)
        } catch {
            let own = reactor.listeningAddresses.first { $0.port == address.port && address.port != 0 }
            throw StartupFailure(message: Server.explain(error, address: address, listener: .metrics, clashesWith: own))
        }
    }

    /// Reactor `index` listens: on the TCP address (shared with SO_REUSEPORT when there are several
    /// reactors) and, for reactor 0 only, the Unix socket (Unix sockets cannot share an address);
    /// or on its own duplicate of every inherited fd.
    static func listenOn(_ reactor: Reactor<ServerHandler>, _ listeners: Listeners, index: Int, shared: Bool, backlog: Int) throws -> [SocketAddress] {
        switch listeners {
        case .bind(let tcp, let unix):
            var bound = [try ListenerError.naming(.echo, tcp) { () throws(SyscallError) in
                try reactor.listen(on: tcp, backlog: backlog, reusePort: shared)
            }]
            if index == 0, let unix {
                bound.append(try ListenerError.naming(.unix, unix) { () throws(SyscallError) in
                    try reactor.listen(on: unix, backlog: backlog)
                })
            }
            return bound
        case .inherited(let fds):
            return try fds.map { fd in
                // Every reactor polls the same inherited socket; accept4 on a non-blocking socket
                // simply returns EAGAIN to the reactors that lose the race.
                let own = index == 0 ? fd : try SocketActivation.duplicate(fd)
                return try reactor.adoptListener(fd: own)
            }
        }
    }

    static func explain(_ error: SyscallError, address: SocketAddress, listener: ListenerKind,
                        clashesWith own: SocketAddress? = nil) -> String {
        let what = "cannot listen on \(address) (\(listener.words))"
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

/// A reactor thread tells the main thread it is listening (or why it is not).
final class StartGate: Sendable {
    enum Outcome: Sendable { case success(ReactorHandle), failure(String) }
    private let outcome = Mutex<Outcome?>(nil)
    private let semaphore = DispatchSemaphore(value: 0)

    func succeed(_ handle: ReactorHandle) { outcome.withLock { $0 = .success(handle) }; semaphore.signal() }
    func fail(_ message: String) { outcome.withLock { $0 = .failure(message) }; semaphore.signal() }
    func wait() -> Outcome {
        semaphore.wait()
        return outcome.withLock { $0! }
    }
}

private final class ThreadBody {
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}

/// A plain pthread: a reactor needs a thread of its own, nothing more.
func spawnThread(_ body: @escaping @Sendable () -> Void) -> pthread_t {
    let box = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
    var thread = pthread_t()
    let rc = pthread_create(&thread, nil, { argument in
        let body = Unmanaged<ThreadBody>.fromOpaque(argument!).takeRetainedValue()
        body.body()
        return nil
    }, box)
    precondition(rc == 0, "pthread_create failed: \(rc)")
    return thread
}
