import Logging
import Reactor

/// The echo protocol as functions any handler can call, whatever its type: every byte goes
/// back unchanged and in order, except the exit line, which closes the connection
/// (see ``ExitLineDetector``).
///
/// The echo is written straight from the reactor's shared read buffer: nothing is copied and
/// nothing is allocated per message.
public enum EchoProtocol {
    /// The close reason of a client that sent the exit line.
    public static let exitReason = CloseReason("exit")

    /// Echoes `bytes`, holding back a possible exit line until it is known.
    @inlinable
    public static func read<H>(_ bytes: UnsafeRawBufferPointer, connection: borrowing Connection<H>,
                               detector: inout ExitLineDetector) -> Action {
        let verdict = detector.scan(bytes)
        if verdict.release > 0 { writeHeld(verdict.release, to: connection) }
        if verdict.echo > 0 { connection.write(UnsafeRawBufferPointer(rebasing: bytes[..<verdict.echo])) }
        return verdict.exit ? .close(exitReason) : .continue
    }

    /// End of input: `exit` without its newline was data after all. Then close.
    @inlinable
    public static func readEOF<H>(connection: borrowing Connection<H>, detector: inout ExitLineDetector) -> Action {
        let held = detector.finish()
        if held > 0 { writeHeld(held, to: connection) }
        return .close(.eof)
    }

    @inlinable
    static func writeHeld<H>(_ count: Int, to connection: borrowing Connection<H>) {
        let candidate = ExitLineDetector.candidate
        connection.write(UnsafeRawBufferPointer(start: candidate.utf8Start, count: count))
    }
}

/// A complete echo server handler: ``EchoProtocol`` plus one log line per connection open and
/// close at info level.
public struct EchoHandler: ConnectionHandler {
    public typealias ConnectionState = ExitLineDetector

    /// The close reason of a client that sent the exit line.
    public static var exitReason: CloseReason { EchoProtocol.exitReason }

    let logger: Logger

    /// An echo handler that logs each connection's open and close at info level.
    public init(logger: Logger) {
        self.logger = logger
    }

    public func makeState() -> ExitLineDetector { ExitLineDetector() }

    public func onOpen(_ connection: borrowing Connection<Self>, state: inout ExitLineDetector) -> Action {
        logger.info("open \(connection.peer) (\(connection.id))")
        return .continue
    }

    @inlinable
    public func onRead(_ bytes: UnsafeRawBufferPointer, connection: borrowing Connection<Self>,
                       state: inout ExitLineDetector) -> Action {
        EchoProtocol.read(bytes, connection: connection, detector: &state)
    }

    @inlinable
    public func onReadEOF(_ connection: borrowing Connection<Self>, state: inout ExitLineDetector) -> Action {
        EchoProtocol.readEOF(connection: connection, detector: &state)
    }

    public func onClose(_ connection: borrowing Connection<Self>, state: inout ExitLineDetector, reason: CloseReason) {
        logger.info("close \(connection.peer) (\(connection.id)) reason=\(reason)")
    }
}
