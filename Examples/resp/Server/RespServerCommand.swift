import ArgumentParser
import ClientAdmission
import Glibc
import Logging
import NonBlockingLog
import RESP
import Reactor
import ServerKit
import ToolSupport
import ZeroDropUpgrade

/// A byte count: a number with an optional Redis-style unit (`100mb`, `1gb`, `512k`).
struct ByteCount: ExpressibleByArgument, Sendable, CustomStringConvertible {
    let value: Int

    init?(argument: String) {
        let text = argument.lowercased()
        let units: [(String, Int)] = [("kb", 1024), ("mb", 1 << 20), ("gb", 1 << 30), ("k", 1000), ("m", 1_000_000), ("g", 1_000_000_000), ("b", 1)]
        var multiplier = 1
        var digits = Substring(text)
        for (suffix, factor) in units where text.hasSuffix(suffix) {
            multiplier = factor
            digits = text.dropLast(suffix.count)
            break
        }
        guard let n = Int(digits), n >= 0 else { return nil }
        let (product, overflow) = n.multipliedReportingOverflow(by: multiplier)
        guard !overflow else { return nil }
        value = product
    }

    init(_ value: Int) { self.value = value }
    var description: String { "\(value)" }
}

@main
struct RespServer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resp-server",
        abstract: "A Redis-protocol (RESP2) key-value server on the Reactor library's public API.",
        discussion: """
            Speaks enough of Redis for redis-cli and redis-benchmark: PING, ECHO, SET (NX, XX, \
            GET), GET, DEL, EXISTS, INCR, DECR, INCRBY, DECRBY, MGET, MSET, DBSIZE, FLUSHALL, \
            QUIT, COMMAND, CONFIG GET and CLIENT SETNAME, with Redis's replies and error texts. \
            One keyspace for the whole process, shared by all reactors. Memory: --maxmemory \
            bounds the keys (a write that would pass it is refused with -OOM before it runs), \
            --max-request and --max-output one client, --maxmemory-clients all clients' \
            buffers together (the largest are closed first). Logs go through a bounded queue: a \
            stderr nobody reads costs log lines, never service. Behind a balancer, \
            --proxy-protocol takes the client's address from a PROXY v1/v2 header, and \
            --max-connections-per-client counts that address; --metrics-port serves resp_ \
            metrics and health checks over HTTP. Prints \
            `listening on HOST:PORT` on stdout once it accepts connections, and tells a systemd \
            `Type=notify` service manager READY=1 ($NOTIFY_SOCKET). SIGTERM, SIGINT or SIGQUIT \
            stops it gracefully (GET /readyz answers 503 from then on, --stop-delay keeps serving \
            a while first, STOPPING=1), and it exits 0; a second one stops it at once. SIGUSR2 \
            upgrades: the binary at the startup path takes over every connection and every key (a \
            failed upgrade keeps this process serving).
            """,
        version: PackageVersion.string)

    @Option(help: "Address to listen on: an IPv4 or IPv6 literal, or a host name.")
    var host = "0.0.0.0"

    @Option(help: "TCP port to listen on (0 picks a free one).")
    var port = 6379

    @Option(help: ArgumentHelp("Reactor threads, each with its own SO_REUSEPORT listener: a number, or `auto` for one per CPU.", valueName: "n|auto"))
    var reactors = ReactorCount(1)

    @Option(help: ArgumentHelp("The longest bulk string a request may carry (bytes; units kb, mb).", valueName: "bytes"))
    var maxBulk = ByteCount(1 << 20)

    @Option(help: ArgumentHelp("The largest request, all its arguments and headers together.", valueName: "bytes"))
    var maxRequest = ByteCount(64 << 20)

    @Option(help: ArgumentHelp("Refuse a write (with -OOM, before it runs) that would take keys and values past this (0: no limit).", valueName: "bytes"))
    var maxmemory = ByteCount(0)

    @Option(help: ArgumentHelp("Drop a connection with more than this many bytes of replies it has not read.", valueName: "bytes"))
    var maxOutput = ByteCount(64 << 20)

    /// Why 256 MiB by default, where Redis's default is 0 (off): this server has no other bound
    /// on its clients together, and --max-request and --max-output let each hold up to 128 MiB.
    /// 256 MiB still lets four clients hold a whole 64 MiB reply at once.
    static let defaultMaxmemoryClients = ByteCount(256 << 20)

    @Option(help: ArgumentHelp("The most all clients' unread requests and unsent replies may take together; past it the clients with the largest are closed first (0: no limit). Split evenly among the reactors.", valueName: "bytes"))
    var maxmemoryClients = RespServer.defaultMaxmemoryClients

    /// --max-connections-per-client, --proxy-protocol, --proxy-protocol-from.
    @OptionGroup var admission: AdmissionOptions

    @Option(help: "Serve Prometheus metrics (series resp_…) at GET /metrics, and GET /livez and /readyz, on this port of --host.")
    var metricsPort: Int?

    /// --stop-delay.
    @OptionGroup var stop: StopOptions

    @Option(help: "Least severe log level: trace, debug, info, notice, warning, error or critical.")
    var logLevel: Logger.Level = .info

    /// Expert, hidden (`--help-hidden`): for tests and slow machines.
    @Option(help: ArgumentHelp("Upgrade: give up on the other process when silent this long (no progress, no confirmation; each reports progress every fifth of it).",
                               valueName: "seconds", visibility: .hidden))
    var upgradeSilenceTimeout: Double = 5

    func validate() throws {
        guard upgradeSilenceTimeout >= 0.05, upgradeSilenceTimeout <= 3600 else {
            throw ValidationError("--upgrade-silence-timeout must be between 0.05 and 3600 seconds, got \(upgradeSilenceTimeout)")
        }
        guard (0...65535).contains(port) else { throw ValidationError("--port must be between 0 and 65535, got \(port)") }
        if let metricsPort, !(0...65535).contains(metricsPort) {
            throw ValidationError("--metrics-port must be between 0 and 65535, got \(metricsPort)")
        }
        guard reactors.value > 0 else { throw ValidationError("--reactors must be a positive number or `auto`, got \(reactors.value)") }
        guard (1...(512 << 20)).contains(maxBulk.value) else {
            throw ValidationError("--max-bulk must be between 1 byte and 512mb, got \(maxBulk.value)")
        }
        guard maxRequest.value >= maxBulk.value + 64 else {
            throw ValidationError("--max-request must be larger than --max-bulk, got \(maxRequest.value)")
        }
        guard maxOutput.value >= 1 << 20 else { throw ValidationError("--max-output must be at least 1mb, got \(maxOutput.value)") }
        guard maxmemoryClients.value == 0 || maxmemoryClients.value >= 1 << 20 else {
            throw ValidationError("--maxmemory-clients must be 0 (no limit) or at least 1mb, got \(maxmemoryClients.value)")
        }
    }

    /// How long the log may delay the exit, draining what is queued for a slow reader.
    static let logFlushTimeout: Duration = .seconds(1)

    /// Blocks at least this large get their own mapping, given back to the kernel when freed.
    /// Why fixed: glibc raises its threshold each time such a block is freed (up to 32 MiB), and
    /// from then on a client's output or query buffer of a few MiB comes from the heap and stays
    /// in the RSS after the client is gone. A server whose clients' buffers are large and short
    /// lived (an evicted client's 32 MiB) wants them back; Redis links jemalloc for the same
    /// reason. 128 KiB is glibc's own default before it adapts.
    static let mmapThreshold: CInt = 128 * 1024

    func run() throws {
        MallocTuning.setMmapThreshold(Self.mmapThreshold)
        // First, before any thread exists (the log writer is one), so every thread inherits the
        // mask and the signals arrive only through reactor 0's signalfd.
        // The kit's policy (reflectd's): SIGTERM, SIGINT, SIGQUIT stop; SIGHUP, SIGALRM, SIGUSR1
        // get a log line, SIGUSR2 an upgrade.
        SignalPolicy.block()
        // Before the first log line: a stderr whose reader went away must give EPIPE, not SIGPIPE.
        Signals.ignoreSIGPIPE()
        // The log never blocks a reactor: a reader that stops reading stderr costs log lines
        // (dropped and counted), not service, even at `--log-level debug`.
        let queue = QueuedLogHandler.bootstrap(label: "resp-server", logLevel: logLevel)
        defer { queue.flush(timeout: Self.logFlushTimeout) }
        try serve(log: queue)
    }

    func serve(log: LogQueue) throws {
        let logger = Logger(label: "resp-server")
        // Before any reactor exists: each sizes its connection table from the fd limit.
        let fdLimit = FileLimit.raiseToHard()

        let address: SocketAddress
        do {
            address = try SocketAddress(host: host, port: port)
        } catch {
            throw fail(log: log, "invalid --host: \(error)")
        }
        var settings = ReactorConfiguration()
        settings.logger = logger
        let configuration = settings
        let keyspace = Keyspace()
        let limits = RequestLimits(maxBulk: maxBulk.value, maxRequest: maxRequest.value)
        let count = reactors.value
        let (maxMemory, maxOutput) = (maxmemory.value, maxOutput.value)
        // Each reactor bounds its own clients (they are served on its thread only), with an
        // equal share of the whole.
        let clientMemoryShare = maxmemoryClients.value / count
        let evictions = EvictionCount()
        // What the fd limit leaves for clients: stdio, the log, and per reactor an epoll fd, an
        // eventfd, a timerfd and a listener, and the signalfd.
        let capacity = max(1, fdLimit.after - (4 + 4 * count + 1))
        let admission: AdmissionPolicy
        do {
            admission = try self.admission.policy(clientLimit: self.admission.perClientLimit(capacity: capacity))
        } catch {
            throw fail(log: log, "\(error)")
        }
        let makeHandler: @Sendable (MetricsEndpoint?) -> RespHandler = { metrics in
            RespHandler(context: RespContext(keyspace: keyspace, limits: limits, maxMemory: maxMemory, maxOutput: maxOutput,
                                             maxClientMemory: clientMemoryShare, evictions: evictions, admission: admission,
                                             metrics: metrics, configuration: configuration, logger: logger))
        }
        let registry = ReactorRegistry()
        let readiness = Readiness()
        let metrics = try metricsPort.map { port in
            do {
                return try metricsEndpoint(SocketAddress(host: host, port: port), registry: registry, log: log,
                                           keyspace: keyspace, evictions: evictions, clientLimit: admission.clientLimit)
            } catch {
                throw fail(log: log, "invalid --host for --metrics-port: \(error)")
            }
        }

        // Started by an upgrade (RespUpgrade.swift): the keyspace, listeners and connections come
        // from the old process.
        let takeOver: TakeOver<RespHandOverCodec>?
        do { takeOver = try RespUpgrade.receiveIfUpgrading(keyspace: keyspace, evictions: evictions,
                                                                   silenceTimeout: .milliseconds(Int(upgradeSilenceTimeout * 1000))) } catch {
            throw fail(log: log, "\(error)")
        }
        let upgrader = RespUpgrade.upgrader(keyspace: keyspace, evictions: evictions, logger: logger,
                                            silenceTimeout: .milliseconds(Int(upgradeSilenceTimeout * 1000)))
        let installed = InstallCount()

        let main = try Reactor(handler: makeHandler(metrics), configuration: configuration)
        upgrader.add(ReactorPort(index: 0, reactor: main))
        let bound: SocketAddress
        do {
            if let takeOver {
                bound = try RespUpgrade.adopt(takeOver, on: main, index: 0, of: count, installed: installed, logger: logger)
                    ?? takeOver.listeners[0].listener.address
            } else if count > 1 {
                // SO_REUSEPORT would quietly share the port with another server of this user:
                // check first, and let every reactor bind the port this check got (for --port 0).
                bound = try main.listen(on: try address.checkAvailable(), reusePort: true)
            } else {
                bound = try main.listen(on: address)
            }
        } catch {
            throw fail(log: log, "cannot listen on \(address): \(error)")
        }
        if let metrics {
            do {
                // Exempt from --max-connections: a full server must stay observable.
                // After an upgrade, the old process's metrics listener (it had one: same flags).
                metrics.address = try takeOver.flatMap { try RespUpgrade.metricsListener($0, on: main) }
                    ?? main.listen(on: metrics.address, limited: false)
            } catch {
                throw fail(log: log, "cannot listen on \(metrics.address) (--metrics-port): \(error)")
            }
            metrics.ownStatistics = { [unowned main] in main.statistics }
            metrics.readiness = readiness
        }
        registry.add(main.handle)
        let group = ReactorGroup()
        do {
            try group.start(1..<count) { index in
                let reactor = try Reactor(handler: makeHandler(nil), configuration: configuration)
                if let takeOver {
                    _ = try RespUpgrade.adopt(takeOver, on: reactor, index: index, of: count, installed: installed, logger: logger)
                } else {
                    _ = try reactor.listen(on: bound, reusePort: true)
                }
                upgrader.add(ReactorPort(index: index, reactor: reactor))
                return reactor
            }
        } catch {
            throw fail(log: log, "\(error)")
        }
        group.handles.forEach(registry.add)
        do {
            // A stop during an upgrade waits for the upgrade to decide which process stops
            // (Upgrader.stopRequested); SIGUSR2 during a stop is ignored, with a log line.
            var actions = SignalPolicy.Actions(name: "resp-server")
            actions.others = group.handles
            actions.readiness = readiness
            actions.stopDelay = stop.delay
            actions.stopsHere = { upgrader.stopRequested($0, force: $1) == .stopHere }
            actions.upgrade = { upgrader.signalled() }
            try SignalPolicy.install(on: main, actions, logger: logger)
        } catch {
            group.stopNow()
            throw fail(log: log, "cannot receive signals: \(error)")
        }
        UnbufferedOutput.write("listening on \(bound)\n", to: 1)
        if let metrics { UnbufferedOutput.write("metrics on http://\(metrics.address)/metrics\n", to: 1) }
        if takeOver == nil { ServiceManager.notifyReady(logger: logger) }
        RespUpgrade.confirm(takeOver, installed: installed, keys: keyspace.count, logger: logger)
        logger.info("resp-server started", metadata: ["reactors": "\(count)", "pid": "\(getpid())"])
        main.run()
        upgrader.finish(forwarding: SignalPolicy.stopSignals)
        group.join()
        logger.info("resp-server stopped", metadata: ["keys": "\(keyspace.count)", "evicted-clients": "\(evictions.value)"])
    }

    /// The kit's metrics endpoint with resp-server's series: the reactors' counters as `resp_…`,
    /// and the keys and evicted clients.
    func metricsEndpoint(_ address: SocketAddress, registry: ReactorRegistry, log: LogQueue, keyspace: Keyspace,
                         evictions: EvictionCount, clientLimit: ClientLimit?) -> MetricsEndpoint {
        let metrics = MetricsEndpoint(prefix: "resp_", address: address, registry: registry)
        metrics.logLinesDropped = { log.droppedTotal }
        metrics.clientLimitRejections = clientLimit.map { limit in { limit.rejected } }
        metrics.closeReasons += [RespContext.quit.name, RespContext.protocolError.name, RespContext.outputLimit.name,
                                 RespContext.evicted.name, AdmissionPolicy.proxyReason.name]
        metrics.protocolSeries = { _, out in
            // Once per scrape, on reactor 0's thread: the lock the requests take.
            keyspace.lock()
            let keys = keyspace.count
            keyspace.unlock()
            out.metric("keys", "gauge", "Keys in the keyspace.", [("", keys)])
            out.metric("clients_evicted_total", "counter", "Clients closed by --maxmemory-clients, largest buffers first.", [("", evictions.value)])
        }
        return metrics
    }

    func fail(log: LogQueue, _ message: String) -> ExitCode {
        log.enqueue("resp-server: error: \(message)\n")
        return ExitCode.failure
    }
}
