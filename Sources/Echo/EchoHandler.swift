import Logging
import Reactor

/// The echo protocol: every byte goes back unchanged and in order, except the exit line, which
/// closes the connection (see ``ExitLineDetector``).
///
/// The echo is written straight from the reactor's shared read buffer: nothing is copied and
/// nothing is allocated per message.
public struct EchoHandler: ConnectionHandler {
    public typealias ConnectionState = ExitLineDetector

    /// The close reason of a client that sent the exit line.
    public static let exitReason = CloseReason("exit")

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

    @inline(__always)
    public func onRead(_ bytes: UnsafeRawBufferPointer, connection: borrowing Connection<Self>,
                       state: inout ExitLineDetector) -> Action {
        let verdict = state.scan(bytes)
        if verdict.release > 0 { writeHeld(verdict.release, to: connection) }
        if verdict.echo > 0 { connection.write(UnsafeRawBufferPointer(rebasing: bytes[..<verdict.echo])) }
        return verdict.exit ? .close(Self.exitReason) : .continue
    }

    public func onReadEOF(_ connection: borrowing Connection<Self>, state: inout ExitLineDetector) -> Action {
        // `exit` without its newline, then EOF: it was data after all.
        let held = state.finish()
        if held > 0 { writeHeld(held, to: connection) }
        return .close(.eof)
    }

    public func onClose(_ connection: borrowing Connection<Self>, state: inout ExitLineDetector, reason: CloseReason) {
        logger.info("close \(connection.peer) (\(connection.id)) reason=\(reason)")
    }

    private func writeHeld(_ count: Int, to connection: borrowing Connection<Self>) {
        let candidate = ExitLineDetector.candidate
        connection.write(UnsafeRawBufferPointer(start: candidate.utf8Start, count: count))
    }
}
