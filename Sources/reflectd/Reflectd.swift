import ArgumentParser
import Echo
import Glibc
import Logging
import Reactor

extension Logger.Level: @retroactive ExpressibleByArgument {}

/// reflectd: a TCP echo server on an epoll reactor.
@main
struct Reflectd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reflectd",
        abstract: "A TCP echo server: every byte comes back; the line `exit` closes the connection.",
        discussion: """
            Prints `listening on HOST:PORT` (the real bound port) on stdout once it accepts \
            connections, at every log level. SIGTERM or SIGINT stops it gracefully: pending \
            echoes are delivered, clients see EOF, and it exits 0.
            """)

    @Option(help: "Address to listen on: an IPv4 or IPv6 literal, or a host name.")
    var host = "0.0.0.0"

    @Option(help: "TCP port to listen on (0 picks a free one).")
    var port = 8887

    @Option(help: "Length of the kernel's queue of connections not yet accepted.")
    var backlog = Int(SOMAXCONN)

    @Option(help: "Least severe log level: trace, debug, info, notice, warning, error or critical.")
    var logLevel: Logger.Level = .info

    func validate() throws {
        guard (0...65535).contains(port) else {
            throw ValidationError("--port must be between 0 and 65535, got \(port)")
        }
        guard backlog > 0 else { throw ValidationError("--backlog must be positive, got \(backlog)") }
    }

    func run() throws {
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "reflectd")
        Signals.ignoreSIGPIPE()

        var configuration = ReactorConfiguration()
        configuration.logger = logger
        let address: SocketAddress
        do {
            address = try SocketAddress(host: host, port: port)
        } catch {
            throw fail("invalid --host: \(error)")
        }
        let reactor = try Reactor(handler: EchoHandler(logger: logger), configuration: configuration)
        let bound: SocketAddress
        do {
            bound = try reactor.listen(on: address, backlog: backlog)
        } catch {
            throw fail(Self.explain(error, address: address))
        }
        try reactor.stop(onSignals: [SIGTERM, SIGINT])
        announce(bound)
        reactor.run()
        logger.info("stopped", metadata: ["connections": "\(reactor.statistics.accepted)"])
    }

    /// The startup line scripts wait for. Written straight to stdout and flushed, whatever the log level.
    func announce(_ address: SocketAddress) {
        Output.write("listening on \(address)\n", to: 1)
    }

    static func explain(_ error: SyscallError, address: SocketAddress) -> String {
        switch error.errno {
        case .addressInUse:
            return "cannot listen on \(address): address already in use (EADDRINUSE); is another server running on that port?"
        case .permissionDenied:
            return "cannot listen on \(address): permission denied (EACCES); ports below 1024 need privileges"
        case .addressNotAvailable:
            return "cannot listen on \(address): address not available on this machine (EADDRNOTAVAIL)"
        default:
            return "cannot listen on \(address): \(error)"
        }
    }

    func fail(_ message: String) -> ExitCode {
        Output.write("reflectd: error: \(message)\n", to: 2)
        return ExitCode.failure
    }
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
