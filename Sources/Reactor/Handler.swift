import SystemPackage

/// Why a connection was closed. Reactor-made reasons are static members; a handler names its own
/// (`CloseReason("exit")`).
public struct CloseReason: Sendable, Hashable, CustomStringConvertible {
    /// Which reason this is: one of the reactor's own (its words follow from the code, so
    /// copying it retains nothing and a closing connection keeps it as one byte of its slot), or
    /// `.other`, a handler's, whose words are in `words`. See CloseCounts.swift.
    @usableFromInline let code: CloseReasonCode
    /// The socket error behind `.reset` and `.error`, when there was one.
    public let errno: Errno?
    /// The name and detail of an `.other` reason; nil for the reactor's own.
    @usableFromInline let words: CloseReasonWords?

    /// A short lowercase word for logs and metrics labels (`eof`, `reset`, `exit`). Statistics
    /// count closes per name, so use a fixed set of names, not text built at run time.
    public var name: String {
        if let words { return words.name }
        switch code {
        case .eof: return "eof"
        case .reset: return "reset"
        case .shutdown: return "shutdown"
        case .timeout, .sendTimeout, .closeTimeout: return "timeout"
        case .limit: return "limit"
        case .error: return "error"
        case .none, .other: return ""
        }
    }

    /// A finer word for logs where one name covers several causes (`send-timeout` for a
    /// ``timeout``); nil when the name says it all.
    public var detail: String? {
        if let words { return words.detail }
        switch code {
        case .sendTimeout: return "send-timeout"
        case .closeTimeout: return "close-timeout"
        default: return nil
        }
    }

    /// A handler-defined reason, such as `CloseReason("exit")`.
    public init(_ name: String) {
        self.init(name, errno: nil)
    }

    /// Any reason, by its words: a handler's, or one handed over from another process.
    @usableFromInline
    init(_ name: String, errno failure: Errno?, detail: String? = nil) {
        self.code = .other
        self.errno = failure
        self.words = CloseReasonWords(name: name, detail: detail)
    }

    /// One of the reactor's own reasons.
    @usableFromInline
    init(code: CloseReasonCode, errno failure: Errno? = nil) {
        self.code = code
        self.errno = failure
        self.words = nil
    }

    /// Whether a closing connection can keep this reason as its code alone: one of the
    /// reactor's own, with no errno.
    @inlinable var isPreset: Bool { words == nil && self.errno == nil }

    /// The reason a code stands for: one of the reactor's own, with no errno (`code` is neither
    /// `.none` nor `.other`).
    @inlinable
    static func preset(_ code: CloseReasonCode) -> CloseReason {
        precondition(code != .none && code != .other, "close reason code \(code) names no preset")
        return CloseReason(code: code)
    }

    /// The peer shut down its side and every pending byte was written.
    public static let eof = CloseReason(code: .eof)
    /// The peer reset the connection (ECONNRESET, EPIPE).
    public static let reset = CloseReason(code: .reset)
    /// The reactor is stopping.
    public static let shutdown = CloseReason(code: .shutdown)
    /// No traffic in either direction for the idle timeout.
    public static let timeout = CloseReason(code: .timeout)
    /// Pending output made no progress for ``ReactorConfiguration/sendTimeout``: the peer does
    /// not read. Named `timeout` (it counts with ``timeout``), described as `send-timeout`.
    public static let sendTimeout = CloseReason(code: .sendTimeout)
    /// A closing connection's pending output made no progress for
    /// ``ReactorConfiguration/closeTimeout``: the peer stopped reading before it took it all.
    /// Replaces the reason the close began with (its output is lost). Named `timeout`,
    /// described as `close-timeout`.
    public static let closeTimeout = CloseReason(code: .closeTimeout)
    /// The connection limit was reached; the connection was accepted only to be closed.
    public static let limit = CloseReason(code: .limit)
    /// Another socket error.
    public static func error(_ code: Errno) -> CloseReason { CloseReason(code: .error, errno: code) }

    /// The reason for a failed read or write on a connection.
@usableFromInline
    static func failure(_ code: Errno) -> CloseReason {
        switch code {
        case .connectionReset, .brokenPipe: return CloseReason(code: .reset, errno: code)
        default: return .error(code)
        }
    }

    /// Reasons are equal when their names are: `.error(.connectionReset) == .error(.brokenPipe)`.
    public static func == (a: CloseReason, b: CloseReason) -> Bool { a.name == b.name }
    public func hash(into hasher: inout Hasher) { hasher.combine(name) }

    public var description: String {
        if let code = self.errno, name == "error" { return "error (\(Errno.name(code)))" }
        return detail ?? name
    }

    /// The reason in words for a user: the socket error as strerror(3) says it, starting
    /// lowercase ("connection refused"), when there was one; else the ``name``.
    public var explanation: String { self.errno.map(Syscalls.sentence) ?? name }
}

/// What a handler asks the reactor to do after a callback.
public enum Action: Sendable, Equatable {
    /// Keep the connection as it is.
    case `continue`
    /// Stop reading from this connection until ``ReactorContext/resumeReading(_:)`` is called.
    case pauseReading
    /// Write every pending byte, then close the connection with this reason. Nothing more is
    /// read or delivered. A peer that takes none of it for ``ReactorConfiguration/closeTimeout``
    /// is reset instead, with ``CloseReason/closeTimeout``.
    case close(CloseReason)
    /// Refuse the connection: close it at once with this reason, discarding any pending output
    /// (with a reset when there was some, so the peer cannot take a cut stream for a whole one),
    /// with no linger. Every place it held (its fd, its ``ReactorConfiguration/connectionLimit``
    /// place) is free when the callback returns, so a peer that keeps opening refused
    /// connections holds nothing. For a limit, a bad or untrusted header, a deadline: anything
    /// the peer must not be able to hold on to. The handler's onClose runs as for any close.
    case refuse(CloseReason)
}

/// The protocol logic of a server: the reactor calls it when a connection opens, has data,
/// reaches end of input, or closes.
///
/// The reactor calls a handler on its own thread only, and never re-entrantly: a callback that
/// wants a connection gone returns ``Action/close(_:)`` (or calls ``ReactorContext/close(_:reason:discardingOutput:)``),
/// and the reactor tears it down after the callback returns.
///
/// Each connection carries a `ConnectionState` value stored inline in the reactor's connection
/// table, so per-connection state costs no allocation. Every method has a default, so a handler
/// implements only what it needs:
///
/// ```swift
/// struct Upper: ConnectionHandler {
///     func onRead(_ bytes: UnsafeRawBufferPointer, connection: borrowing Connection<Self>,
///                 state: inout Void) -> Action {
///         connection.write(bytes)   // echo; copy and transform for real work
///         return .continue
///     }
/// }
/// ```
public protocol ConnectionHandler {
    /// Per-connection state, stored inline in the reactor's table. `Void` by default.
    associatedtype ConnectionState = Void

    /// Creates the state of a new connection; ``onOpen(_:state:)`` follows at once.
    func makeState() -> ConnectionState

    /// A connection was accepted. It may write (a greeting) or close at once.
    func onOpen(_ connection: borrowing Connection<Self>, state: inout ConnectionState) -> Action

    /// Bytes arrived. `bytes` points into the reactor's shared read buffer and is valid only
    /// during this call: write it, parse it, or copy what must outlive the call.
    func onRead(_ bytes: UnsafeRawBufferPointer, connection: borrowing Connection<Self>,
                state: inout ConnectionState) -> Action

    /// The peer shut down its write side. The default closes with ``CloseReason/eof`` once every
    /// pending byte is written.
    func onReadEOF(_ connection: borrowing Connection<Self>, state: inout ConnectionState) -> Action

    /// The reactor is stopping: a last chance to write (a goodbye) before the connection closes
    /// with ``CloseReason/shutdown``. Not called for connections already closing.
    func onStop(_ connection: borrowing Connection<Self>, state: inout ConnectionState)

    /// A timer set with ``Connection/schedule(after:repeating:)`` fired. Timers are cancelled
    /// when their connection closes, so this is never called for a closing connection.
    func onTimer(_ timer: TimerID, connection: borrowing Connection<Self>, state: inout ConnectionState) -> Action

    /// The connection's pending output passed ``ReactorConfiguration/highWatermark`` and has
    /// drained below ``ReactorConfiguration/lowWatermark``: a handler that holds back output for
    /// a slow peer (a broadcast, a file being sent) can write again. Not called while closing.
    func onWritable(_ connection: borrowing Connection<Self>, state: inout ConnectionState) -> Action

    /// Whether everything this connection reads now would be written back to it unchanged, in
    /// order and at once, with nothing else to do (an RFC 862 echo). When true, the reactor may
    /// echo a bulk stream inside the kernel (splice(2) through a pipe; see
    /// ``ReactorConfiguration/kernelEcho``) without calling ``onRead(_:connection:state:)`` for
    /// those bytes: they never reach user space, and are counted in
    /// ``ReactorStatistics/bytesEchoedInKernel``. Asked after a read that filled the whole read
    /// buffer (a stream), with the connection still open and reading and nothing pending; the
    /// connection then streams in the kernel until a splice brings less than half the buffer,
    /// and reads again as usual. Never asked for message-sized reads. Default: false.
    func echoesUnchanged(_ connection: borrowing Connection<Self>, state: inout ConnectionState) -> Bool

    /// The connection is done: its output was flushed (or discarded, for an abortive close).
    /// Writes made here are discarded. The state is destroyed after the socket is closed; the
    /// reactor may still linger on the socket for up to 2 s so that the peer's last bytes do not
    /// turn into a reset, without involving the handler.
    func onClose(_ connection: borrowing Connection<Self>, state: inout ConnectionState, reason: CloseReason)
}

extension ConnectionHandler where ConnectionState == Void {
    public func makeState() -> Void {}
}

extension ConnectionHandler {
    public func onOpen(_ connection: borrowing Connection<Self>, state: inout ConnectionState) -> Action { .continue }
    public func onRead(_ bytes: UnsafeRawBufferPointer, connection: borrowing Connection<Self>,
                       state: inout ConnectionState) -> Action { .continue }
    public func onReadEOF(_ connection: borrowing Connection<Self>, state: inout ConnectionState) -> Action {
        .close(.eof)
    }
    public func onStop(_ connection: borrowing Connection<Self>, state: inout ConnectionState) {}
    public func onTimer(_ timer: TimerID, connection: borrowing Connection<Self>, state: inout ConnectionState) -> Action {
        .continue
    }
    public func onWritable(_ connection: borrowing Connection<Self>, state: inout ConnectionState) -> Action { .continue }
    public func echoesUnchanged(_ connection: borrowing Connection<Self>, state: inout ConnectionState) -> Bool { false }
    public func onClose(_ connection: borrowing Connection<Self>, state: inout ConnectionState, reason: CloseReason) {}
}
