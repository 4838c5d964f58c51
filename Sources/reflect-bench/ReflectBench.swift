import ArgumentParser
import Glibc
import Reactor
import ToolSupport

extension Scenario: ExpressibleByArgument {}
extension PayloadKind: ExpressibleByArgument {}

/// reflect-bench: a load generator for echo servers, on one reactor (one thread, one core).
@main
struct ReflectBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reflect-bench",
        abstract: "Load an echo server and check every byte it sends back.",
        discussion: """
            Scenarios:
              pingpong  each connection keeps --depth messages of --size bytes in flight
                        (defaults: 100 connections, depth 1, 64 bytes)
              bulk      each connection streams --size-byte writes, --depth in flight; MB/s
                        (defaults: 4 connections, depth 4, 65536 bytes)
              idle      holds --connections open and probes --probes of them each second
                        (defaults: 1000 connections, 10 probes/s, 64 bytes)
              churn     connect, one echo, close, again, in --connections concurrent slots
                        (defaults: 16 slots, 64 bytes)

            Payloads (--payload): binary (the default) uses every byte value, NUL, \\n, \\r and e \
            included, but never the four bytes `exit`, so no exit line ever occurs and any echo \
            server can be tested; text sends lines of letters and digits with no `e`. Messages \
            slower than --hold-ms (reflectd's exit-line hold, 250 ms by default) are counted: a \
            message ending in `e`, `ex` or `exi` after a newline is held that long by reflectd.

            Every echoed byte is compared with what was sent. Latency is measured per message \
            (churn: from the connect call to the echo). After --warmup seconds, --duration \
            seconds are measured. A progress line goes to stderr every second, and the summary \
            to stdout (one JSON object with --json). MB/s are 10^6 bytes of echo per second. \
            The exit status is 0 only if every byte matched, no connection failed or closed \
            early, and messages were echoed.
            """,
        version: PackageVersion.string)

    @Argument(help: "What to do (see above).")
    var scenario: Scenario

    @Option(help: "Server address: an IPv4 or IPv6 literal, or a host name.")
    var host = "127.0.0.1"

    @Option(parsing: .unconditional, help: "Server TCP port.")
    var port = 8887

    @Option(parsing: .unconditional, help: "Connections (churn: concurrent connect-echo-close slots).")
    var connections: Int?

    @Option(parsing: .unconditional, help: "Messages in flight per connection (pingpong, bulk).")
    var depth: Int?

    @Option(parsing: .unconditional, help: "Bytes per message; text lines end in a newline, bulk writes are this big.")
    var size: Int?

    @Option(help: "What messages are made of: binary (every byte value, never `exit`) or text (lines).")
    var payload = PayloadKind.binary

    @Option(parsing: .unconditional, help: "Count messages whose echo takes longer than this many milliseconds (the server's exit-line hold).")
    var holdMs = 250

    @Option(parsing: .unconditional, help: "Seconds of load before measuring.")
    var warmup = 2.0

    @Option(parsing: .unconditional, help: "Seconds measured.")
    var duration = 10.0

    @Option(parsing: .unconditional, help: "idle: connections probed with one message per second.")
    var probes = 10

    @Option(name: .customLong("source-ips"), parsing: .unconditional,
            help: "Bind client sockets to 127.0.0.1 … 127.0.0.N, in turn (0: let the kernel choose).")
    var sourceIPs = 0

    @Flag(help: "Print the summary as one JSON object on stdout.")
    var json = false

    @Flag(help: "No progress lines on stderr.")
    var quiet = false

    var defaults: (connections: Int, depth: Int, size: Int) {
        switch scenario {
        case .pingpong: return (100, 1, 64)
        case .bulk: return (4, 4, 65536)
        case .idle: return (1000, 1, 64)
        case .churn: return (16, 1, 64)
        }
    }

    func validate() throws {
        try OptionChecks.rejectRepeated(["host", "port", "connections", "depth", "size", "payload", "hold-ms",
                                         "warmup", "duration", "probes", "source-ips"])
        try OptionChecks.range("port", port, 1...65535)
        if let connections, connections < 1 { throw ValidationError("--connections must be at least 1, got \(connections)") }
        if let depth { try OptionChecks.range("depth", depth, 1...4096) }
        if depth != nil && (scenario == .idle || scenario == .churn) {
            throw ValidationError("--depth applies to pingpong and bulk only")
        }
        if let size { try OptionChecks.range("size", size, 1...(16 << 20), unit: " bytes") }
        try OptionChecks.range("hold-ms", holdMs, 0...60_000)
        guard warmup.isFinite, warmup >= 0, warmup <= 3600 else {
            throw ValidationError("--warmup must be between 0 and 3600 seconds, got \(warmup)")
        }
        guard duration.isFinite, duration > 0, duration <= 86400 else {
            throw ValidationError("--duration must be more than 0 and at most 86400 seconds, got \(duration)")
        }
        guard probes >= 1 else { throw ValidationError("--probes must be at least 1, got \(probes)") }
        try OptionChecks.range("source-ips", sourceIPs, 0...254)
    }

    func run() throws {
        Signals.ignoreSIGPIPE()
        let address: SocketAddress
        do {
            address = try SocketAddress(host: host, port: port)
        } catch {
            throw fail("invalid --host: \(error)")
        }
        var sources: [SocketAddress] = []
        for n in stride(from: 1, through: sourceIPs, by: 1) {
            sources.append(try! SocketAddress(host: "127.0.0.\(n)", port: 0))
        }
        if !sources.isEmpty && address.host.contains(":") {
            throw fail("--source-ips binds IPv4 loopback addresses; --host must be IPv4")
        }
        let d = defaults
        let settings = Settings(
            payload: payload, holdMs: holdMs, scenario: scenario, address: address, sources: sources,
            connections: connections ?? d.connections, depth: depth ?? d.depth, size: size ?? d.size,
            warmup: warmup, duration: duration, probes: probes, quiet: quiet)
        let fdLimit = raiseFileLimit()
        // Our own fds (epoll, timer, wake-up, signal, stdio) need a few more.
        guard settings.connections + 16 <= fdLimit else {
            throw fail("\(settings.connections) connections need more fds than the limit of \(fdLimit) (ulimit -n)")
        }

        let bench = Bench(settings: settings)
        var configuration = ReactorConfiguration()
        configuration.shutdownGrace = .seconds(1)
        configuration.logger.logLevel = .error
        // Never stop reading a connection because of its own unsent output: what the bench has
        // not written yet is at most its messages in flight (depth × size), and pausing the read
        // side while the server waits for us to read its echo is a deadlock (the server stops
        // reading once its own output is stuck, so ours never drains).
        configuration.highWatermark = max(configuration.highWatermark, settings.depth * settings.size + 1)
        configuration.lowWatermark = configuration.highWatermark / 2
        let reactor = try Reactor(handler: BenchHandler(bench: bench), configuration: configuration)
        bench.reactor = reactor
        try reactor.stop(onSignals: [SIGINT, SIGTERM])
        bench.start()
        reactor.run()

        let seconds = bench.measureEnd > bench.measureStart ? Double(bench.measureEnd - bench.measureStart) / 1e9 : 0
        let summary = Summary(
            settings: settings, seconds: seconds, counters: bench.measured, whole: bench.hot.pointee.counters,
            latency: bench.total.pointee, maxOpen: bench.maxOpen, interrupted: bench.interrupted)
        writeAll(json ? summary.json + "\n" : summary.text, to: 1)
        if summary.failure != nil { throw ExitCode(bench.interrupted ? 130 : 1) }
    }

    /// Raises the soft fd limit to the hard one and returns it.
    func raiseFileLimit() -> Int {
        var limit = rlimit()
        guard getrlimit(CInt(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(CInt(RLIMIT_NOFILE.rawValue), &limit)
        }
        return Int(clamping: limit.rlim_cur)
    }

    func fail(_ message: String) -> ExitCode {
        writeAll("reflect-bench: error: \(message)\n", to: 2)
        return ExitCode.failure
    }
}
