import ArgumentParser
import Glibc
import Reactor
import ToolSupport

/// reflect: the interactive client of reflectd.
@main
struct Reflect: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reflect",
        abstract: "Send lines from stdin to an echo server and print the echoes.",
        discussion: """
            Every byte read from stdin is sent to the server unchanged, and every byte the server \
            sends back is written to stdout. At the end of stdin, reflect sends the line `exit` \
            (only if the input ended with a newline; an unterminated last line is sent as it is), \
            shuts down its write side so that any echo server sees EOF, waits for the server to \
            close the connection (at most --timeout seconds without a byte from it), and exits 0. \
            An echo of that `exit` line (from a server other than reflectd) is not printed. If the server closes first, it prints \
            "connection closed by server" on stderr and exits 1; so does a connection that cannot \
            be made. stdin may be a terminal, a pipe or a regular file.
            """,
        version: PackageVersion.string)

    @Option(help: "Server address: an IPv4 or IPv6 literal, or a host name.")
    var host = "127.0.0.1"

    @Option(parsing: .unconditional, help: "Server TCP port.")
    var port = 8887

    @Option(parsing: .unconditional,
            help: "After the end of input, seconds to wait for the server to close while it sends nothing (0: forever).")
    var timeout = 10.0

    func validate() throws {
        try OptionChecks.rejectRepeated(["host", "port", "timeout"])
        guard (1...65535).contains(port) else {
            throw ValidationError("--port must be between 1 and 65535, got \(port)")
        }
        guard timeout.isFinite, (0...86_400).contains(timeout) else {
            throw ValidationError("--timeout must be between 0 and 86400 seconds, got \(timeout)")
        }
    }

    func run() throws {
        // A reader of our stdout that goes away must give EPIPE, not kill us before stdin's flags
        // are restored.
        Signals.ignoreSIGPIPE()
        let address: SocketAddress
        do {
            address = try SocketAddress(host: host, port: port)
        } catch {
            throw Self.fail("invalid --host: \(error)")
        }
        let stdin = StandardInput()
        // Whatever happens below, the terminal gets its flags back.
        defer { stdin.restoreFlags() }

        let session = Session(server: address, standardInput: stdin)
        session.closeWait = timeout > 0 ? .nanoseconds(Int64(timeout * 1e9)) : nil
        var configuration = ReactorConfiguration()
        // When the run ends early (the server closed first, a signal, stdout gone), nothing still
        // queued matters, and a terminal stdin would otherwise be lingered on until its grace ends.
        configuration.shutdownGrace = .milliseconds(200)
        // The reactor's own log lines (a signal received) are noise for an interactive tool.
        configuration.logger.logLevel = .error
        let reactor = try Reactor(handler: ClientHandler(session: session), configuration: configuration)
        try reactor.stop(onSignals: [SIGINT, SIGTERM, SIGHUP])
        do {
            session.socket = try reactor.connect(to: address)
        } catch {
            throw Self.fail("cannot connect to \(address): \(describe(error.errno.rawValue))")
        }
        if case .adopt(let fd) = stdin.source {
            do {
                session.stdin = try reactor.adopt(fd: fd, state: .stdin)
            } catch {
                throw Self.fail("cannot watch stdin: \(error)")
            }
        }
        reactor.run()

        let outcome = session.outcome ?? .failed("the event loop stopped unexpectedly")
        switch outcome {
        case .done:
            return
        case .failed(let message):
            throw Self.fail(message)
        case .quiet(let code):
            throw ExitCode(code)
        }
    }

    /// Prints `reflect: message` on stderr and returns the exit status 1.
    static func fail(_ message: String) -> ExitCode {
        Terminal.write("reflect: \(message)\n", to: 2)
        return ExitCode.failure
    }
}
