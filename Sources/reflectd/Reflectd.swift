import ArgumentParser
import ClientAdmission
import Echo
import Glibc
import Logging
import NonBlockingLog
import Reactor
import ServerKit
import ToolSupport

/// A Unix socket file's permission bits, in octal (`0660`, `660`, `0o660`).
struct FileMode: ExpressibleByArgument, Sendable {
    let value: mode_t

    init?(argument: String) {
        var digits = Substring(argument)
        if digits.hasPrefix("0o") { digits = digits.dropFirst(2) }
        guard (1...4).contains(digits.count), digits.allSatisfy({ ("0"..."7").contains($0) }),
              let value = mode_t(digits, radix: 8) else { return nil }
        self.value = value
    }

    static var defaultValueDescription: String { "the umask's" }
}

/// `--exit-line on|off` and `--kernel-echo on|off`.
enum ExitLineMode: String, ExpressibleByArgument, CaseIterable, Sendable {
    case on, off
}

/// reflectd: a TCP echo server on an epoll reactor.
@main
struct Reflectd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reflectd",
        abstract: "A TCP echo server: every byte comes back; the line `exit` closes the connection.",
        discussion: """
            Prints `listening on HOST:PORT` (the real bound port) on stdout once it accepts \
            connections, at every log level. SIGTERM, SIGINT or SIGQUIT stops it gracefully: \
            pending echoes are delivered, clients see EOF, and it exits 0; a second one stops it at \
            once. SIGUSR1 logs a line of statistics; SIGHUP and SIGALRM are ignored with a notice; \
            SIGUSR2 upgrades: the binary at the startup path takes over every connection. Under systemd socket activation (LISTEN_PID/LISTEN_FDS) it serves the \
            inherited sockets instead of binding. With --udp it also echoes UDP datagrams and prints \
            `listening on udp HOST:PORT` after the TCP lines.
            """,
        version: PackageVersion.string)

    @Option(help: "Address to listen on: an IPv4 or IPv6 literal (`::` is dual stack), or a host name.")
    var host = "0.0.0.0"

    @Option(parsing: .unconditional, help: "TCP port to listen on (0 picks a free one).")
    var port = 8887

    @Option(help: ArgumentHelp("Also listen on a Unix-domain socket at this path (a stale socket file is replaced; the file is removed at exit).", valueName: "path"))
    var unix: String?

    @Option(parsing: .unconditional, help: ArgumentHelp("Permission bits of the --unix socket file, in octal (e.g. 0660), set before it accepts connections; default: what the umask gives.", valueName: "mode"))
    var unixMode: FileMode?

    @Option(parsing: .unconditional, help: "Length of the kernel's queue of connections not yet accepted (0 to 65535; the kernel caps it at net.core.somaxconn).")
    var backlog = Int(SOMAXCONN)

    @Option(parsing: .unconditional, help: ArgumentHelp("Reactor threads, each with its own SO_REUSEPORT listener: a number, or `auto` for one per CPU.", valueName: "n|auto"))
    var reactors = ReactorCount(1)

    @Option(parsing: .unconditional, help: "Most connections open at once (whole process); more are accepted and closed at once.")
    var maxConnections: Int?

    /// --max-connections-per-client, --proxy-protocol, --proxy-protocol-from.
    @OptionGroup var admission: AdmissionOptions

    @Option(parsing: .unconditional, help: "Close connections with no traffic in either direction for this many seconds.")
    var idleTimeout: Int?

    @Option(parsing: .unconditional, help: "Close a connection whose pending output made no progress for this many seconds (the peer stopped reading), also while reading from it is paused; 0 turns it off.")
    var sendTimeout = 60

    @Option(parsing: .unconditional, help: "Enable TCP keepalive, probing after this many idle seconds.")
    var keepalive: Int?

    @Flag(inversion: .prefixedNo, help: "Whether accepted connections get TCP_NODELAY (on by default: each echo goes out at once); --no-tcp-nodelay leaves Nagle's algorithm on, which may delay small echoes.")
    var tcpNodelay = true

    @Option(parsing: .unconditional, help: "Serve Prometheus metrics at GET /metrics on this port (on --metrics-host).")
    var metricsPort: Int?

    @Option(help: ArgumentHelp("Address of the metrics listener, apart from the echo --host (e.g. 127.0.0.1 to serve echo publicly and metrics only on loopback); default: --host (also under socket activation, where --host serves only this).", valueName: "host"))
    var metricsHost: String?

    @Option(help: ArgumentHelp("Whether the line `exit` closes the connection: `on`, or `off` for a pure RFC 862 echo (`exit` is data).", valueName: "on|off"))
    var exitLine: ExitLineMode = .on

    @Option(parsing: .unconditional,
            help: ArgumentHelp("How long an undecided line-start prefix of `exit` (`e`, `ex`, … `exit\\r`) is held back while no more input arrives, before it is echoed (0 to 60000; 0 echoes it at once).", valueName: "ms"))
    var exitHoldMs = 250

    @Option(help: ArgumentHelp("With --exit-line off, echo a bulk stream inside the kernel (splice(2) through a pipe per reactor: the bytes are never copied to the server's memory and back): `on`, or `off` to read and write every byte.", valueName: "on|off"))
    var kernelEcho: ExitLineMode = .on

    /// --stop-delay.
    @OptionGroup var stop: StopOptions

    @Flag(help: "Also serve the echo over UDP (RFC 862's other half), on --host and --port (or --udp-port): every datagram from 0 to 65,507 bytes goes back to its source unchanged; there is no exit line over UDP. Off by default: sources on service ports, broadcast and multicast sources and reflectd's own port are never answered, and each source's rate is limited (see --udp-rate), but a UDP echo on a public address is still a reflector to think about.")
    var udp = false

    @Option(parsing: .unconditional, help: ArgumentHelp("UDP port, if not --port (0 picks a free one); implies --udp.", valueName: "port"))
    var udpPort: Int?

    @Option(parsing: .unconditional, help: ArgumentHelp("Source ports whose datagrams are never answered, as ports and ranges (`7,19,1-1023`), or `none`; replaces the default `0-1023,2049` (OpenBSD inetd's rule: service ports and NFS).", valueName: "list"))
    var udpRefusePorts: String?

    @Option(parsing: .unconditional, help: ArgumentHelp("Datagrams per second answered per source (an IPv4 address or an IPv6 /64, per reactor), with a burst of as many; more are dropped and counted. 0: no limit.", valueName: "n"))
    var udpRate = DatagramService.defaultRate

    @Option(help: "Least severe log level: trace, debug, info, notice, warning, error or critical.")
    var logLevel: Logger.Level = .info

    func validate() throws {
        guard (0...65535).contains(port) else {
            throw ValidationError("--port must be between 0 and 65535, got \(port)")
        }
        if let metricsPort, !(0...65535).contains(metricsPort) {
            throw ValidationError("--metrics-port must be between 0 and 65535, got \(metricsPort)")
        }
        try validateShipping()
        if unixMode != nil && unix == nil {
            throw ValidationError("--unix-mode needs --unix PATH")
        }
        guard (0...60_000).contains(exitHoldMs) else {
            throw ValidationError("--exit-hold-ms must be between 0 and 60000 milliseconds, got \(exitHoldMs)")
        }
        if let maxConnections, maxConnections <= 0 {
            throw ValidationError("--max-connections must be positive, got \(maxConnections)")
        }
        if metricsHost != nil && metricsPort == nil {
            throw ValidationError("--metrics-host needs --metrics-port")
        }
        if let idleTimeout, !(1...86_400).contains(idleTimeout) {
            throw ValidationError("--idle-timeout must be between 1 and 86400 seconds, got \(idleTimeout)")
        }
        guard (0...86_400).contains(sendTimeout) else {
            throw ValidationError("--send-timeout must be between 0 (off) and 86400 seconds, got \(sendTimeout)")
        }
        if let keepalive, !(1...32_767).contains(keepalive) {
            throw ValidationError("--keepalive must be between 1 and 32767 seconds, got \(keepalive)")
        }
    }

    /// How long the log may delay the exit, draining what is queued for a slow reader.
    static let logFlushTimeout: Duration = .seconds(1)

    /// --stop-delay as a duration, nil for 0.
    var stopDelayDuration: Duration? { stop.delay }

    /// The exit-line flags as the echo's policy.
    var exitLinePolicy: ExitLinePolicy {
        ExitLinePolicy(enabled: exitLine == .on, hold: .milliseconds(exitHoldMs))
    }

    func run() throws {
        // First, before any thread exists (the log writer is one): see Server.blockSignals().
        Server.blockSignals()
        // Before the first log line: a stderr whose reader went away must give EPIPE, not SIGPIPE.
        Signals.ignoreSIGPIPE()
        let queue = QueuedLogHandler.bootstrap(label: "reflectd", logLevel: logLevel)
        do {
            try Server(options: self, logQueue: queue).run()
        } catch let failure as StartupFailure {
            queue.enqueue("reflectd: error: \(failure.message)\n")
            queue.flush(timeout: Self.logFlushTimeout)
            throw ExitCode.failure
        }
        queue.flush(timeout: Self.logFlushTimeout)
    }

    /// Whether `flag` (`--host`) was given on the command line, as `--host X` or `--host=X`.
    static func given(_ flag: String) -> Bool {
        CommandLine.arguments.dropFirst().contains { $0 == flag || $0.hasPrefix(flag + "=") }
    }
}

/// A reason reflectd cannot start, in words for the user.
struct StartupFailure: Error {
    let message: String
}
