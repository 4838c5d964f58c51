import ArgumentParser
import Glibc
import Reactor
import ServerKit
import ToolSupport

extension Scenario: ExpressibleByArgument {}
extension PayloadKind: ExpressibleByArgument {}

/// reflect-bench: a load generator for echo servers, one reactor per thread (`--threads`).
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
              flood     UDP: datagrams go out at --rate per second in all, whatever comes back;
                        loss and latency (defaults: 16 sockets, 64 bytes; --rate required)

            UDP (--udp; flood is always UDP): each connection is a UDP socket on an ephemeral \
            port. pingpong keeps --depth datagrams in flight per socket. Every datagram is --size \
            bytes (9 to 65507): an 8-byte sequence number (little-endian, per socket), then the \
            payload (--payload, or --message / --payload-file cut into --size - 8 byte bodies), \
            and each echo is checked byte-exact against the datagram with its number. A datagram \
            not back within 4 x --hold-ms (at least 1 s) is lost: counted, not an error (UDP may \
            drop), unless --max-loss PERCENT is exceeded; in pingpong it holds its place among the \
            --depth in flight until then, as it would for a client with that timeout. A duplicate, a wrong length or byte, or \
            an echo from another port is an error. After --duration the run waits up to that \
            timeout for the datagrams still in flight, so that sent = echoed + lost. reflectd \
            limits each source's rate (--udp-rate, 1000/s by default): run it with --udp-rate 0 \
            to measure throughput.

            Payloads (--payload): binary (the default) uses every byte value, NUL, \\n, \\r and e \
            included, but never the four bytes `exit`, so no exit line ever occurs and any echo \
            server can be tested; text sends lines of letters and digits with no `e`. Messages \
            slower than --hold-ms (reflectd's exit-line hold, 250 ms by default) are counted: a \
            message ending in `e`, `ex` or `exi` after a newline is held that long by reflectd.

            Open loop: with --rate (pingpong) messages go out at that many per second in all, \
            spread evenly over the connections, whatever the server does, and latency counts from \
            when each message was due, not when it went out (wrk2): a server stall shows in every \
            message it delayed, not once per connection (coordinated omission). A connection \
            keeps at most --depth messages in flight; messages due while it is full go out when \
            an echo makes room, and are counted as late (more than 1 ms after they were due); \
            late sends that had room but went out late because the generator itself woke or \
            got the CPU late are counted apart: many of those mean the run measured the \
            generator. The summary puts this latency beside the service time (from when each \
            message actually went out) and reports the achieved rate: messages sent per measured \
            second. Without --rate the loop is closed (each connection sends when an echo \
            returns) and the summary says so.

            --connect-rate R opens the connections at R per second in all (tcpkali's \
            --connect-rate), whatever the scenario; the summary says how long opening took and \
            how many connects failed, and why. For churn, where every cycle opens a connection, \
            it is the open-loop rate of connect-echo-close cycles, --connections of them at most \
            at once.

            Given bytes: --message TEXT is every message (escapes \\n, \\r, \\t, \\\\ and \\xNN, so \
            that NUL and any other byte can be sent; any other backslash is an error). \
            --payload-file FILE is sent cyclically as each connection's stream, with a message \
            boundary every --size bytes (by default the file's length). Both are sent exactly as \
            given: a file holding an exit line (`exit` on a line of its own) makes reflectd \
            close the connection, which fails the run; run reflectd with --exit-line off to \
            benchmark such bytes.

            --threads N runs N generator threads, each with its own reactor and an even share \
            of the connections, idle probes and rates; their counts and latency histograms are \
            merged.

            --histogram FILE writes the measured latencies in HdrHistogram's percentile format \
            (microseconds); `reflect-bench plot FILE... --output chart.svg` draws such files as \
            one chart (see `reflect-bench plot --help`).

            Every echoed byte is compared with what was sent. Latency is measured per message \
            (churn: from the connect call to the echo; open loop: from when it was due). --json \
            also holds the latency's percentile distribution ("percentiles": [percentile %, µs] \
            pairs) and the CPU seconds of each generator thread ("thread_cpu_s", from \
            /proc/self/task). After --warmup seconds, --duration \
            seconds are measured. A progress line goes to stderr every second, and the summary \
            to stdout (one JSON object with --json). MB/s are 10^6 bytes of echo per second. \
            The exit status is 0 only if every byte matched, no connection failed or closed \
            early, and messages were echoed.
            """,
        version: PackageVersion.string)

    /// `reflect-bench plot …` draws histogram files (see ``Plot``); anything else is a load run.
    /// Not an ArgumentParser subcommand, so that the load options stay on the top-level help.
    static func main() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        if arguments.first == "plot" {
            Plot.main(Array(arguments.dropFirst()))
        } else {
            main(arguments)
        }
    }

    @Argument(help: "What to do (see above).")
    var scenario: Scenario

    @Option(help: "Server address: an IPv4 or IPv6 literal, or a host name.")
    var host = "127.0.0.1"

    @Option(parsing: .unconditional, help: "Server TCP (--udp: UDP) port.")
    var port = 8887

    @Flag(help: "Send UDP datagrams (pingpong, flood) instead of using TCP connections.")
    var udp = false

    @Option(name: .customLong("max-loss"), parsing: .unconditional,
            help: ArgumentHelp("UDP: fail the run if more than this percentage of the datagrams was lost.", valueName: "percent"))
    var maxLoss: Double?

    @Option(help: ArgumentHelp("Connect to this Unix-domain socket instead of --host and --port.", valueName: "path"))
    var unix: String?

    @Option(parsing: .unconditional,
            help: "Generator threads, each with its own reactor: a number (at most the connections) or auto (one per online CPU).")
    var threads = ThreadCount(1)

    @Option(parsing: .unconditional, help: "pingpong: open loop at this many messages per second in all; flood: datagrams per second.")
    var rate: Double?

    @Option(name: .customLong("connect-rate"), parsing: .unconditional,
            help: "Open connections at this many per second in all (churn: begin this many connect-echo-close cycles per second).")
    var connectRate: Double?

    @Option(parsing: .unconditional,
            help: "Send this text as every message (escapes: \\n \\r \\t \\\\ \\xNN); its length in bytes is the message size.")
    var message: String?

    @Option(name: .customLong("payload-file"),
            help: ArgumentHelp("Send the bytes of this file cyclically as a stream, a message every --size bytes (default: the file's length).", valueName: "file"))
    var payloadFile: String?

    @Option(help: "A name for this run in --json (`label`), which `reflect-bench plot` uses for its line.")
    var label: String?

    @Option(help: ArgumentHelp("Write the measured latency distribution to this file (HdrHistogram percentile format, microseconds).", valueName: "file"))
    var histogram: String?

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
        case .flood: return (16, 1, 64)
        }
    }

    func validate() throws {
        try OptionChecks.rejectRepeated(["host", "port", "connections", "depth", "size", "payload", "hold-ms",
                                         "warmup", "duration", "probes", "source-ips", "unix", "threads", "rate",
                                         "connect-rate", "message", "payload-file", "histogram", "label", "max-loss"])
        try validateUDP()
        try OptionChecks.range("port", port, 1...65535)
        if let connections, connections < 1 { throw ValidationError("--connections must be at least 1, got \(connections)") }
        if let depth { try OptionChecks.range("depth", depth, 1...4096) }
        if depth != nil && (scenario == .idle || scenario == .churn) {
            throw ValidationError("--depth applies to pingpong and bulk only")
        }
        if let size, !isUDP { try OptionChecks.range("size", size, 1...(16 << 20), unit: " bytes") }
        try OptionChecks.range("hold-ms", holdMs, 0...60_000)
        guard warmup.isFinite, warmup >= 0, warmup <= 3600 else {
            throw ValidationError("--warmup must be between 0 and 3600 seconds, got \(warmup)")
        }
        guard duration.isFinite, duration > 0, duration <= 86400 else {
            throw ValidationError("--duration must be more than 0 and at most 86400 seconds, got \(duration)")
        }
        guard probes >= 1 else { throw ValidationError("--probes must be at least 1, got \(probes)") }
        try OptionChecks.range("source-ips", sourceIPs, 0...254)
        try OptionChecks.range("threads", threads.value, 1...256)
        if !threads.auto && threads.value > (connections ?? defaults.connections) {
            throw ValidationError("--threads \(threads.value) is more than the \(connections ?? defaults.connections) connections")
        }
        if let rate {
            guard scenario == .pingpong || scenario == .flood else {
                throw ValidationError("--rate applies to pingpong and flood only (churn: --connect-rate)")
            }
            guard rate.isFinite, rate > 0, rate <= 100_000_000 else {
                throw ValidationError("--rate must be more than 0 and at most 100000000 messages per second, got \(rate)")
            }
        }
        if let connectRate {
            guard connectRate.isFinite, connectRate > 0, connectRate <= 10_000_000 else {
                throw ValidationError("--connect-rate must be more than 0 and at most 10000000 per second, got \(connectRate)")
            }
        }
        if message != nil && payloadFile != nil { throw ValidationError("--message and --payload-file: give one of them") }
        if message != nil && size != nil {
            throw ValidationError("--size is the length of --message; give one of them")
        }
        if message != nil || payloadFile != nil, scenario == .bulk {
            throw ValidationError("--message and --payload-file apply to pingpong, idle and churn")
        }
        if let message {
            let bytes: [UInt8]
            do { bytes = try Escapes.decode(message) } catch { throw ValidationError(error.description) }
            if bytes.isEmpty || bytes.count > (16 << 20) {
                throw ValidationError("--message must be 1 to \(16 << 20) bytes long")
            }
        }
        if unix != nil && sourceIPs > 0 { throw ValidationError("--source-ips binds IPv4 addresses; it does not apply to --unix") }
    }

    /// Whether the run sends datagrams: `--udp`, or the flood scenario.
    var isUDP: Bool { udp || scenario == .flood }

    /// The checks of `--udp` and flood.
    func validateUDP() throws {
        if let maxLoss {
            guard isUDP else { throw ValidationError("--max-loss applies to --udp only") }
            guard maxLoss.isFinite, maxLoss >= 0, maxLoss <= 100 else {
                throw ValidationError("--max-loss must be a percentage from 0 to 100, got \(maxLoss)")
            }
        }
        guard isUDP else { return }
        if scenario == .flood && rate == nil { throw ValidationError("flood needs --rate: datagrams per second in all") }
        if scenario == .pingpong && rate != nil {
            throw ValidationError("--rate with --udp: use the flood scenario (pingpong --udp is a closed loop)")
        }
        if scenario == .bulk || scenario == .idle || scenario == .churn {
            throw ValidationError("--udp applies to pingpong and flood only")
        }
        if scenario == .flood && depth != nil { throw ValidationError("--depth applies to pingpong, not flood") }
        if unix != nil { throw ValidationError("--unix and --udp: give one of them") }
        if connectRate != nil { throw ValidationError("--connect-rate applies to TCP connections, not --udp") }
        if let size {
            guard size >= datagramHeader + 1 && size <= 65507 else {
                throw ValidationError("--size must be \(datagramHeader + 1) to 65507 bytes with --udp (each datagram starts with an \(datagramHeader)-byte sequence number, and a UDP payload is at most 65507 bytes), got \(size)")
            }
        }
        if let message, let bytes = try? Escapes.decode(message), bytes.count + datagramHeader > 65507 {
            throw ValidationError("--message is \(bytes.count) bytes: with --udp it must be at most \(65507 - datagramHeader) (the 8-byte sequence number comes first)")
        }
    }

    func run() throws {
        Signals.ignoreSIGPIPE()
        let address: SocketAddress
        do {
            address = try unix.map { try SocketAddress(unixPath: $0) } ?? SocketAddress(host: host, port: port)
        } catch {
            throw fail(unix != nil ? "invalid --unix: \(error)" : "invalid --host: \(error)")
        }
        var messageBytes = try message.map { try Escapes.decode($0) }
        if udp && scenario != .pingpong && scenario != .flood { throw fail("--udp applies to pingpong and flood only") }
        if let payloadFile {
            messageBytes = try readMessage(payloadFile)
        }
        // --threads auto: one per online CPU, but never more than the connections.
        let threads = min(threads.value, connections ?? defaults.connections)
        var sources: [SocketAddress] = []
        for n in stride(from: 1, through: sourceIPs, by: 1) {
            sources.append(try! SocketAddress(host: "127.0.0.\(n)", port: 0))
        }
        if !sources.isEmpty && address.host.contains(":") {
            throw fail("--source-ips binds IPv4 loopback addresses; --host must be IPv4")
        }
        let d = defaults
        // UDP: a given message is the body after the sequence number; a file is cut into bodies
        // of --size - 8 bytes (by default the whole file, up to the largest datagram).
        var udpSize = size ?? d.size
        if isUDP, let messageBytes {
            udpSize = size ?? min(65507, messageBytes.count + datagramHeader)
        }
        var settings = Settings(
            payload: payload, holdMs: holdMs, scenario: scenario, address: address, sources: sources,
            connections: connections ?? d.connections, depth: depth ?? d.depth, size: size ?? messageBytes?.count ?? d.size,
            warmup: warmup, duration: duration, probes: probes, quiet: quiet,
            rate: rate, connectRate: connectRate, threads: threads, message: messageBytes,
            fileStream: payloadFile != nil, label: label)
        if isUDP {
            settings.udp = true
            settings.size = udpSize
            settings.maxLossPercent = maxLoss
        }
        let fdLimit = FileLimit.raiseToHard().after
        // Our own fds (epoll, timer, wake-up, signal, stdio: a few per thread) need some more.
        guard settings.connections + 16 * threads <= fdLimit else {
            throw fail("\(settings.connections) connections need more fds than the limit of \(fdLimit) (ulimit -n)")
        }

        let summary = Run.execute(settings)
        writeAll(json ? summary.json + "\n" : summary.text, to: 1)
        if let histogram {
            var text = ""
            summary.latency.outputPercentileDistribution(to: &text, outputValueUnitScalingRatio: 1000)
            guard writeFile(histogram, text) else { throw fail("cannot write --histogram \(histogram): errno \(errno)") }
        }
        if summary.failure != nil { throw ExitCode(summary.interrupted ? 130 : 1) }
    }

    /// The bytes of `--payload-file`, 1 byte to 16 MiB.
    func readMessage(_ path: String) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw fail("cannot open --payload-file \(path): errno \(errno)") }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw fail("cannot read --payload-file \(path): errno \(errno)") }
            if n == 0 { break }
            bytes.append(contentsOf: chunk[..<n])
            guard bytes.count <= 16 << 20 else { throw fail("--payload-file \(path) is larger than 16 MiB") }
        }
        guard !bytes.isEmpty else { throw fail("--payload-file \(path) is empty") }
        return bytes
    }

    /// Writes `text` to a new file at `path` (replacing it); false on an error.
    func writeFile(_ path: String, _ text: String) -> Bool {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return false }
        writeAll(text, to: fd)
        return close(fd) == 0
    }


    func fail(_ message: String) -> ExitCode {
        writeAll("reflect-bench: error: \(message)\n", to: 2)
        return ExitCode.failure
    }
}

/// `--threads N|auto`: a number, or `auto` for one per online CPU (then at most the connections).
struct ThreadCount: ExpressibleByArgument {
    let value: Int
    let auto: Bool

    init?(argument: String) {
        if argument == "auto" {
            value = max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
            auto = true
        } else if let n = Int(argument) {
            value = n  // checked by validate(), for a message that says what is allowed
            auto = false
        } else {
            return nil
        }
    }

    init(_ value: Int) {
        self.value = value
        auto = false
    }

    var defaultValueDescription: String { String(value) }
}
