import ArgumentParser
import Echo
import Glibc
import Logging
import NonBlockingLog
import Reactor

extension Logger.Level: @retroactive ExpressibleByArgument {}

/// How many reactor threads: a positive number or `auto` (one per online CPU).
struct ReactorCount: ExpressibleByArgument, Sendable {
    let value: Int

    init?(argument: String) {
        if argument == "auto" {
            value = max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        } else if let n = Int(argument) {
            value = n  // checked in validate(), for a message that says what is allowed
        } else {
            return nil
        }
    }

    init(_ value: Int) { self.value = value }

    static var defaultValueDescription: String { "1" }

    static var onlineCPUs: Int { max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))) }
    /// Why 4 × the online CPUs: a reactor per CPU uses every core; a few more can help when some
    /// block in page faults, but beyond that threads only compete for the same cores (and each
    /// costs a stack and a read buffer).
    static var maximum: Int { 4 * onlineCPUs }
}

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

/// `--exit-line on|off`.
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
            connections, at every log level. SIGTERM or SIGINT stops it gracefully: pending \
            echoes are delivered, clients see EOF, and it exits 0. Under systemd socket \
            activation (LISTEN_PID/LISTEN_FDS) it serves the inherited sockets instead of binding.
            """)

    @Option(help: "Address to listen on: an IPv4 or IPv6 literal (`::` is dual stack), or a host name.")
    var host = "0.0.0.0"

    @Option(help: "TCP port to listen on (0 picks a free one).")
    var port = 8887

    @Option(help: ArgumentHelp("Also listen on a Unix-domain socket at this path (a stale socket file is replaced; the file is removed at exit).", valueName: "path"))
    var unix: String?

    @Option(help: ArgumentHelp("Permission bits of the --unix socket file, in octal (e.g. 0660), set before it accepts connections; default: what the umask gives.", valueName: "mode"))
    var unixMode: FileMode?

    @Option(help: "Length of the kernel's queue of connections not yet accepted.")
    var backlog = Int(SOMAXCONN)

    @Option(help: ArgumentHelp("Reactor threads, each with its own SO_REUSEPORT listener: a number, or `auto` for one per CPU.", valueName: "n|auto"))
    var reactors = ReactorCount(1)

    @Option(help: "Most connections open at once (whole process); more are accepted and closed at once.")
    var maxConnections: Int?

    @Option(help: "Close connections with no traffic in either direction for this many seconds.")
    var idleTimeout: Int?

    @Option(help: "Enable TCP keepalive, probing after this many idle seconds.")
    var keepalive: Int?

    @Flag(inversion: .prefixedNo, help: "Set TCP_NODELAY on accepted connections.")
    var tcpNodelay = true

    @Option(help: "Serve Prometheus metrics at GET /metrics on this port (same host).")
    var metricsPort: Int?

    @Option(help: ArgumentHelp("Whether the line `exit` closes the connection: `on`, or `off` for a pure RFC 862 echo (`exit` is data).", valueName: "on|off"))
    var exitLine: ExitLineMode = .on

    @Option(parsing: .unconditional,
            help: ArgumentHelp("How long an undecided line-start prefix of `exit` (`e`, `ex`, … `exit\\r`) is held back while no more input arrives, before it is echoed (0 to 60000; 0 echoes it at once).", valueName: "ms"))
    var exitHoldMs = 250

    @Option(help: "Least severe log level: trace, debug, info, notice, warning, error or critical.")
    var logLevel: Logger.Level = .info

    func validate() throws {
        guard (0...65535).contains(port) else {
            throw ValidationError("--port must be between 0 and 65535, got \(port)")
        }
        if let metricsPort, !(0...65535).contains(metricsPort) {
            throw ValidationError("--metrics-port must be between 0 and 65535, got \(metricsPort)")
        }
        guard reactors.value > 0 else {
            throw ValidationError("--reactors must be a positive number or `auto`, got \(reactors.value)")
        }
        guard (0...60_000).contains(exitHoldMs) else {
            throw ValidationError("--exit-hold-ms must be between 0 and 60000 milliseconds, got \(exitHoldMs)")
        }
        guard reactors.value <= ReactorCount.maximum else {
            throw ValidationError("--reactors must be at most \(ReactorCount.maximum) (4 × \(ReactorCount.onlineCPUs) online CPUs), got \(reactors.value)")
        }
        if unixMode != nil && unix == nil {
            throw ValidationError("--unix-mode needs --unix PATH")
        }
        guard backlog > 0 else { throw ValidationError("--backlog must be positive, got \(backlog)") }
        if let maxConnections, maxConnections <= 0 {
            throw ValidationError("--max-connections must be positive, got \(maxConnections)")
        }
        if let idleTimeout, !(1...86_400).contains(idleTimeout) {
            throw ValidationError("--idle-timeout must be between 1 and 86400 seconds, got \(idleTimeout)")
        }
        if let keepalive, !(1...32_767).contains(keepalive) {
            throw ValidationError("--keepalive must be between 1 and 32767 seconds, got \(keepalive)")
        }
    }

    /// The exit-line flags as the echo's policy.
    var exitLinePolicy: ExitLinePolicy {
        ExitLinePolicy(enabled: exitLine == .on, hold: .milliseconds(exitHoldMs))
    }

    /// How long the log may delay the exit, draining what is queued for a slow reader.
    static let logFlushTimeout: Duration = .seconds(1)

    func run() throws {
        // First, before any thread exists (the log writer is one): see Server.blockSignals().
        Server.blockSignals()
        let queue = LogQueue(fd: 2, label: "reflectd")
        queue.start()
        let level = logLevel
        LoggingSystem.bootstrap { label in
            QueuedLogHandler(label: label, queue: queue, logLevel: level)
        }
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

/// Unbuffered writes, so a line is out before anything that follows (a crash, a signal).
enum Output {
    static func write(_ text: String, to fd: CInt) {
        var text = text
        text.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let n = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
                if n <= 0 { return }
                offset += n
            }
        }
    }
}
