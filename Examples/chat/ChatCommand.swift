import ArgumentParser
import Glibc
import Logging
import NonBlockingLog
import Reactor
import ServerKit
import ToolSupport

/// chat: a line-based chat server on the Reactor library's public API.
@main
struct ChatCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat",
        abstract: "A line-based chat server: each line a client sends goes to every other client.",
        discussion: """
            Lines from a client reach the others as `NAME: TEXT`; server notices start with `* `. \
            Commands: `/nick NAME`, `/who`, `/quit`; `//TEXT` sends a line that starts with `/`. \
            A receiver more than --max-pending bytes behind is disconnected (reason `slow`); a \
            line longer than --max-line bytes closes its connection (reason `toolong`). \
            Prints `listening on HOST:PORT` on stdout once it accepts connections. SIGTERM or \
            SIGINT stops it gracefully, and it exits 0.
            """,
        version: PackageVersion.string)

    @Option(help: "Address to listen on: an IPv4 or IPv6 literal, or a host name.")
    var host = "0.0.0.0"

    @Option(parsing: .unconditional, help: "TCP port to listen on (0 picks a free one).")
    var port = 8888

    @Option(parsing: .unconditional, help: "The longest line a client may send, in bytes.")
    var maxLine = 4096

    @Option(parsing: .unconditional, help: "Bytes a receiver may fall behind before it is disconnected.")
    var maxPending = 256 * 1024

    @Option(parsing: .unconditional, help: "Seconds without a line before a client is told it is idle (0: never).")
    var idleWarning = 300.0

    @Option(parsing: .unconditional, help: "Seconds without a line before a client is disconnected (0: never).")
    var idleTimeout = 600.0

    @Option(parsing: .unconditional, help: "Seconds a connection the server closes gets to take its last output before it is cut.")
    var closeTimeout = 5.0

    @Flag(help: "Log joins, renames, leaves and closes on stderr.")
    var verbose = false

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be between 0 and 65535, got \(port)") }
        guard maxLine > 0 else { throw ValidationError("--max-line must be positive, got \(maxLine)") }
        guard maxPending > 0 else { throw ValidationError("--max-pending must be positive, got \(maxPending)") }
        guard idleWarning >= 0, idleTimeout >= 0 else { throw ValidationError("idle times must not be negative") }
        guard closeTimeout > 0 else { throw ValidationError("--close-timeout must be positive, got \(closeTimeout)") }
    }

    /// How long the log may delay the exit, draining what is queued for a slow reader.
    static let logFlushTimeout: Duration = .seconds(1)

    func run() throws {
        // First, before any thread exists (the log writer is one), so every thread inherits the
        // mask and the signals arrive only through the reactor's signalfd.
        Signals.block([SIGTERM, SIGINT])
        // Before the first log line: a stderr whose reader went away must give EPIPE, not SIGPIPE.
        Signals.ignoreSIGPIPE()
        // The log never blocks the reactor: a reader that stops reading stderr costs log lines
        // (dropped and counted), not service.
        let log = QueuedLogHandler.bootstrap(label: "chat", logLevel: .info)
        defer { log.flush(timeout: Self.logFlushTimeout) }
        try serve(log: log)
    }

    func serve(log: LogQueue) throws {
        var limits = ChatLimits()
        limits.maxLineBytes = maxLine
        limits.maxPendingBytes = maxPending
        limits.idleWarning = Self.duration(idleWarning)
        limits.idleTimeout = Self.duration(idleTimeout)
        limits.closeTimeout = Self.duration(closeTimeout) ?? .seconds(5)
        let verbose = verbose
        let room = Room(limits: limits) { message in if verbose { log.enqueue("chat: \(message)\n") } }

        let address: SocketAddress
        do {
            address = try SocketAddress(host: host, port: port)
        } catch {
            throw fail("invalid --host: \(error)", log: log)
        }
        var configuration = ReactorConfiguration()
        // A graceful close (`/quit`, idle, too long, EOF) whose output a peer never takes is cut after this.
        configuration.closeTimeout = limits.closeTimeout
        let reactor = try Reactor(handler: ChatHandler(room: room), configuration: configuration)
        let bound: SocketAddress
        do {
            bound = try reactor.listen(on: address)
        } catch {
            throw fail("cannot listen on \(address): \(error)", log: log)
        }
        try reactor.stop(onSignals: [SIGTERM, SIGINT])
        UnbufferedOutput.write("listening on \(bound)\n", to: 1)
        reactor.run()
        let stats = reactor.statistics
        let closed = stats.closed.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        log.enqueue("chat: stopped after \(stats.accepted) connection(s); closed: \(closed)\n")
    }

    static func duration(_ seconds: Double) -> Duration? {
        seconds > 0 ? .milliseconds(Int64((seconds * 1000).rounded())) : nil
    }

    func fail(_ message: String, log: LogQueue) -> ExitCode {
        log.enqueue("chat: error: \(message)\n")
        return ExitCode.failure
    }
}
