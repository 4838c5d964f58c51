import Logging
import Reactor

/// How the echo treats the exit line.
public struct ExitLinePolicy: Sendable, Equatable {
    /// Whether the exit line closes the connection. Off, the echo is a pure RFC 862 echo: no
    /// scan, nothing held back, `exit` is data.
    public var enabled: Bool
    /// How long an undecided line-start prefix (`e` … `exit\r`) is held back while no more input
    /// arrives. Then it is echoed (and still tracked). Zero echoes it at the end of the read.
    /// Why 250 ms by default: more than the 200 ms a Nagle-enabled sender may wait for a
    /// delayed ACK before sending the rest of its line, and short enough for an interactive user.
    public var hold: Duration

    /// The exit line on, with `hold` (250 ms by default).
    public init(enabled: Bool = true, hold: Duration = .milliseconds(250)) {
        self.enabled = enabled
        self.hold = hold
    }

    /// The default policy: the exit line on, held 250 ms at most.
    public static let standard = ExitLinePolicy()
    /// A pure echo (RFC 862).
    public static let off = ExitLinePolicy(enabled: false)
}

/// The per-connection state of the echo: the exit-line detector and, only while a prefix is
/// held back, the timer that bounds the hold.
public struct EchoState: Sendable {
    public var detector = ExitLineDetector()
    /// Armed only while the detector holds bytes it has not released.
    public var holdTimer: TimerID?

    public init() {}
}

/// The echo protocol as functions any handler can call, whatever its type: every byte goes
/// back unchanged and in order, except the exit line, which closes the connection
/// (see ``ExitLineDetector``).
///
/// The echo is written straight from the reactor's shared read buffer: nothing is copied and
/// nothing is allocated per message. A read that ends in an undecided exit-line prefix holds
/// those few bytes back, for at most ``ExitLinePolicy/hold`` without new input: a
/// request/response client whose message happens to end in `\ne` is answered in full after the
/// hold instead of waiting forever. Only then is a timer armed, so the common path costs nothing.
public enum EchoProtocol {
    /// The close reason of a client that sent the exit line.
    public static let exitReason = CloseReason("exit")

    /// Echoes `bytes`, holding back a possible exit line until it is known or the hold ends.
    ///
    /// Inlined into the handler: the common case (nothing held back, no line in the segment starts
    /// with `e`) is one vector scan and one write; the rest is specialised but out of line.
    @inlinable @inline(__always)
    public static func read<H>(_ bytes: UnsafeRawBufferPointer, connection: borrowing Connection<H>,
                               state: inout EchoState, policy: ExitLinePolicy) -> Action {
        guard policy.enabled else {
            connection.write(bytes)
            return .continue
        }
        guard let clear = state.detector.skim(bytes) else {
            // All of it is echoed and nothing is held: a hold timer has nothing left to release.
            connection.write(bytes)
            if _slowPath(state.holdTimer != nil) { cancelHold(connection: connection, state: &state) }
            return .continue
        }
        return readScanned(bytes, clearUpTo: clear, connection: connection, state: &state, policy: policy)
    }

    /// ``read(_:connection:state:policy:)`` for a segment that may hold or end an exit line.
    @inlinable @inline(never)
    static func readScanned<H>(_ bytes: UnsafeRawBufferPointer, clearUpTo clear: Int, connection: borrowing Connection<H>,
                               state: inout EchoState, policy: ExitLinePolicy) -> Action {
        let verdict = state.detector.scan(bytes, clearUpTo: clear)
        if verdict.release > 0 { writeCandidate(verdict.released, to: connection) }
        if verdict.echo > 0 { connection.write(UnsafeRawBufferPointer(rebasing: bytes[..<verdict.echo])) }
        if verdict.exit { return .close(exitReason) }
        if _slowPath(state.detector.unreleased > 0) {
            hold(connection: connection, state: &state, policy: policy)
        } else if _slowPath(state.holdTimer != nil) {
            cancelHold(connection: connection, state: &state)
        }
        return .continue
    }

    @inlinable @inline(never)
    static func cancelHold<H>(connection: borrowing Connection<H>, state: inout EchoState) {
        if let timer = state.holdTimer { connection.cancel(timer) }
        state.holdTimer = nil
    }

    /// A read ended with bytes held back: (re)start the hold, or release them now for a zero hold.
    @usableFromInline
    static func hold<H>(connection: borrowing Connection<H>, state: inout EchoState, policy: ExitLinePolicy) {
        if let timer = state.holdTimer { connection.cancel(timer) }
        state.holdTimer = nil
        if policy.hold <= .zero {
            writeCandidate(state.detector.releaseHeld(), to: connection)
        } else {
            state.holdTimer = connection.schedule(after: policy.hold)
        }
    }

    /// A connection timer fired. If it is the hold timer, the held bytes are echoed now (the line
    /// is still tracked). Returns false for a timer that is not the echo's.
    @discardableResult
    public static func timerFired<H>(_ timer: TimerID, connection: borrowing Connection<H>, state: inout EchoState) -> Bool {
        guard state.holdTimer == timer else { return false }
        state.holdTimer = nil
        writeCandidate(state.detector.releaseHeld(), to: connection)
        return true
    }

    /// End of input: `exit` without its newline was data after all. Then close.
    @inlinable
    public static func readEOF<H>(connection: borrowing Connection<H>, state: inout EchoState) -> Action {
        let held = state.detector.finish()
        if !held.isEmpty { writeCandidate(held, to: connection) }
        if let timer = state.holdTimer {
            connection.cancel(timer)
            state.holdTimer = nil
        }
        return .close(.eof)
    }

    @inlinable
    static func writeCandidate<H>(_ range: Range<Int>, to connection: borrowing Connection<H>) {
        guard !range.isEmpty else { return }
        let candidate = ExitLineDetector.candidate
        connection.write(UnsafeRawBufferPointer(start: candidate.utf8Start + range.lowerBound, count: range.count))
    }
}

/// A complete echo server handler: ``EchoProtocol`` plus one log line per connection open and
/// close at info level.
public struct EchoHandler: ConnectionHandler {
    public typealias ConnectionState = EchoState

    /// The close reason of a client that sent the exit line.
    public static var exitReason: CloseReason { EchoProtocol.exitReason }

    let logger: Logger
    /// How the exit line is treated.
    public let policy: ExitLinePolicy

    /// An echo handler that logs each connection's open and close at info level.
    public init(logger: Logger, policy: ExitLinePolicy = .standard) {
        self.logger = logger
        self.policy = policy
    }

    public func makeState() -> EchoState { EchoState() }

    public func onOpen(_ connection: borrowing Connection<Self>, state: inout EchoState) -> Action {
        logger.info("open \(connection.peer) (\(connection.id))")
        return .continue
    }

    @inlinable
    public func onRead(_ bytes: UnsafeRawBufferPointer, connection: borrowing Connection<Self>,
                       state: inout EchoState) -> Action {
        EchoProtocol.read(bytes, connection: connection, state: &state, policy: policy)
    }

    @inlinable
    public func onReadEOF(_ connection: borrowing Connection<Self>, state: inout EchoState) -> Action {
        EchoProtocol.readEOF(connection: connection, state: &state)
    }

    /// With the exit line off every byte goes back unchanged: a bulk stream may be echoed inside
    /// the kernel (``ReactorConfiguration/kernelEcho``).
    public func echoesUnchanged(_ connection: borrowing Connection<Self>, state: inout EchoState) -> Bool {
        !policy.enabled
    }

    public func onTimer(_ timer: TimerID, connection: borrowing Connection<Self>, state: inout EchoState) -> Action {
        EchoProtocol.timerFired(timer, connection: connection, state: &state)
        return .continue
    }

    public func onClose(_ connection: borrowing Connection<Self>, state: inout EchoState, reason: CloseReason) {
        logger.info("close \(connection.peer) (\(connection.id)) reason=\(reason)")
    }
}
