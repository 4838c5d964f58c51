import ArgumentParser
import Echo
import Glibc
import Logging
import Reactor
import ToolSupport

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

    /// How `--help` shows the default: as a user would type it (an instance requirement).
    var defaultValueDescription: String { String(value) }
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
            """,
        version: PackageVersion.string)

    @Option(help: "Address to listen on: an IPv4 or IPv6 literal (`::` is dual stack), or a host name.")
    var host = "0.0.0.0"

    @Option(parsing: .unconditional, help: "TCP port to listen on (0 picks a free one).")
    var port = 8887

    @Option(help: ArgumentHelp("Also listen on a Unix-domain socket at this path (a stale socket file is replaced; the file is removed at exit).", valueName: "path"))
    var unix: String?

    @Option(parsing: .unconditional, help: "Length of the kernel's queue of connections not yet accepted (0 to 65535; the kernel caps it at net.core.somaxconn).")
    var backlog = Int(SOMAXCONN)

    @Option(parsing: .unconditional, help: ArgumentHelp("Reactor threads, each with its own SO_REUSEPORT listener: a number, or `auto` for one per CPU.", valueName: "n|auto"))
    var reactors = ReactorCount(1)

    @Option(parsing: .unconditional, help: "Most connections open at once (whole process); more are accepted and closed at once.")
    var maxConnections: Int?

    @Option(parsing: .unconditional, help: "Close connections with no traffic in either direction for this many seconds.")
    var idleTimeout: Int?

    @Option(parsing: .unconditional, help: "Enable TCP keepalive, probing after this many idle seconds.")
    var keepalive: Int?

    @Flag(inversion: .prefixedNo, help: "Set TCP_NODELAY on accepted connections.")
    var tcpNodelay = true

    @Option(parsing: .unconditional, help: "Serve Prometheus metrics at GET /metrics on this port (same host).")
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
        try validateShipping()
        guard (0...60_000).contains(exitHoldMs) else {
            throw ValidationError("--exit-hold-ms must be between 0 and 60000 milliseconds, got \(exitHoldMs)")
        }
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

    func run() throws {
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        do {
            try Server(options: self).run()
        } catch let failure as StartupFailure {
            Output.write("reflectd: error: \(failure.message)\n", to: 2)
            throw ExitCode.failure
        }
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
