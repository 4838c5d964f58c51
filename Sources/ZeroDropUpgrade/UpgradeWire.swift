/// The hand-over wire format between an old and a new process of the same server (see
/// ``Upgrader`` and ``TakeOver``).
///
/// One `SOCK_SEQPACKET` message per step, each starting with a 12-byte header: the magic `RFLU`,
/// the format version (u16), the message type (u8), a reserved byte (0) and a count (u32). All
/// integers are little-endian. Fds travel with SCM_RIGHTS in the message whose records name them,
/// in record order.
///
/// - `hello` (both ways, old first): body = pid (u32). Versions must be equal, or the side that
///   sees the mismatch sends `refuse` and both give up (the old one keeps serving).
/// - `listeners`: count = N records and N fds (``ListenerRecord``).
/// - `connections`: count = N records and N fds, at most ``connectionsPerMessage``
///   (``ConnectionRecord``: the library's part of a connection and the handler's own state, as
///   its ``HandOverCodec`` wrote it).
/// - `output`: count = the connection's sequence number (0-based, over all `connections`
///   records); body = up to ``outputChunk`` bytes of its pending output, in order.
/// - `connectionState`: count = the connection's sequence number; body = up to ``outputChunk``
///   bytes of its handler state, in order (only for a state longer than
///   ``ConnectionRecord/inlineStateLimit``, which the record does not hold).
/// - `processState`: body = up to ``outputChunk`` bytes of the server's one blob of process state
///   (a keyspace, counters), in order; any number of them, or none.
/// - `end`: count = connections sent; body = the process state's length (u64).
/// - `ready` (new → old): count = connections installed; body = pid (u32). The old process
///   closes its copies and exits.
/// - `refuse` (either way): body = the reason, UTF-8.
/// - `progress` (either way): count = how many its sender sent before; no body, no fds. The
///   sender is alive and busy. From the new process, any number between its hello and its `ready`
///   or `refuse`, while it receives and restores: the old one waits for `ready` as long as the
///   silence between two messages stays under its silence timeout (``Upgrader/silenceTimeout``)
///   and the whole hand-over under ``Upgrader/handOverLimit``; the new process sends them only
///   when the old one asked (`<PREFIX>_PROGRESS_MS`, see ``UpgradeEnvironment/progressInterval``),
///   at most that often. From the old process, before `end`, while the server writes its process
///   state (the new one's wait for the next message starts again).
public enum UpgradeWire {
    /// The four bytes every message starts with.
    public static let magic: [UInt8] = Array("RFLU".utf8)
    /// Version 1: reflectd 0.2's format (the exit-line detector inside the record). Version 2:
    /// the record generic over the handler (its state is one length-prefixed blob written by the
    /// handler's codec) and the process-state blob; `progress` (added while 2 was unreleased; a
    /// new process sends it only to an old one that asked, so no bump). Bump it whenever a record
    /// changes.
    public static let version: UInt16 = 2
    /// magic (4) + version (2) + type (1) + reserved (1) + count (4).
    public static let headerSize = 12
    /// Why 200 connections per message: under SCM_MAX_FD (253), and records (about 60 bytes each
    /// plus the handler's state) stay far below the socket buffer.
    public static let connectionsPerMessage = 200
    /// Why 64 KiB: a chunk of output or process state plus its header stays far below
    /// `HandOverChannel/maxMessage` (256 KiB).
    public static let outputChunk = 64 * 1024

    /// What a message is.
    public enum MessageType: UInt8, Sendable {
        /// The message types, each described in ``UpgradeWire`` above.
        case hello = 1, listeners, connections, output, processState, end, ready, refuse, connectionState, progress
    }

    /// The version this process writes in its headers. `<PREFIX>_ANNOUNCE_VERSION` makes a process
    /// that is taking over announce another one (for testing the refusal; see ``UpgradeEnvironment``).
    nonisolated(unsafe) public static var announced: UInt16 = version  // set once at startup, before any thread
}

/// A malformed or unexpected hand-over message, or an upgrade that failed: the text says which.
public struct UpgradeError: Error, CustomStringConvertible, Sendable {
    /// What went wrong, for a log line.
    public let description: String
    /// An error with this text.
    public init(_ description: String) { self.description = description }
}

/// A message being built: the header first, then the body with the typed appends.
public struct UpgradeWriter: Sendable {
    /// The message so far.
    public var bytes: [UInt8] = []

    /// Bytes without a header: a codec's state, or the process state.
    public init() {}

    /// A message of `type` whose header carries `count`.
    public init(_ type: UpgradeWire.MessageType, count: Int = 0) {
        bytes = UpgradeWire.magic
        u16(UpgradeWire.announced)
        u8(type.rawValue)
        u8(0)
        u32(UInt32(truncatingIfNeeded: count))
    }

    /// Appends one byte.
    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    /// Appends a little-endian u16.
    public mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    /// Appends a little-endian u32.
    public mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    /// Appends a little-endian i32.
    public mutating func i32(_ v: Int32) { u32(UInt32(bitPattern: v)) }
    /// Appends a little-endian u64.
    public mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    /// Appends a string of at most 255 UTF-8 bytes (longer is cut) after its length (u8).
    public mutating func string8(_ s: String) {
        let utf8 = Array(s.utf8.prefix(255))
        u8(UInt8(utf8.count))
        bytes.append(contentsOf: utf8)
    }
    /// Appends at most 65,535 bytes (longer is cut) after their length (u16).
    public mutating func blob16<C: Collection>(_ b: C) where C.Element == UInt8 {
        let n = min(b.count, Int(UInt16.max))
        u16(UInt16(n))
        bytes.append(contentsOf: b.prefix(n))
    }
}

/// A received message being read. Every read is bounds-checked and throws on a short message;
/// nothing allocates more than the message holds.
public struct UpgradeReader: Sendable {
    /// The whole message.
    public let bytes: [UInt8]
    /// Where the next read starts.
    public private(set) var offset = 0
    /// The message's type.
    public private(set) var type: UpgradeWire.MessageType = .hello
    /// The format version in its header.
    public private(set) var version: UInt16 = 0
    /// The header's count.
    public private(set) var count = 0

    /// Checks the header: the magic, then the version (a mismatch is reported with both), then
    /// the type.
    public init(_ bytes: [UInt8]) throws(UpgradeError) {
        guard bytes.count >= UpgradeWire.headerSize, bytes[0..<4].elementsEqual(UpgradeWire.magic) else {
            throw UpgradeError("not a hand-over message (bad magic)")
        }
        self.bytes = bytes
        offset = 4
        version = try u16()
        let rawType = try u8()
        _ = try u8()
        count = Int(try u32())
        guard version == UpgradeWire.version else {
            throw UpgradeError("hand-over format version \(version) from the other process; this binary speaks version \(UpgradeWire.version)")
        }
        guard let type = UpgradeWire.MessageType(rawValue: rawType) else {
            throw UpgradeError("unknown hand-over message type \(rawType)")
        }
        self.type = type
    }

    /// Bytes without a header (a codec's state, the process state), read as part of a message
    /// of `type` (named in errors).
    public init<C: Collection>(body: C, of type: UpgradeWire.MessageType) where C.Element == UInt8 {
        bytes = Array(body)
        self.type = type
        version = UpgradeWire.version
    }

    /// The bytes not read yet.
    public var remaining: ArraySlice<UInt8> { bytes[offset...] }

    /// The next `n` bytes.
    public mutating func take(_ n: Int) throws(UpgradeError) -> ArraySlice<UInt8> {
        guard n >= 0, n <= bytes.count - offset else { throw UpgradeError("hand-over message \(type) truncated") }
        defer { offset += n }
        return bytes[offset..<(offset + n)]
    }
    /// One byte.
    public mutating func u8() throws(UpgradeError) -> UInt8 { try take(1).first! }
    /// A little-endian u16.
    public mutating func u16() throws(UpgradeError) -> UInt16 {
        let b = try take(2)
        return UInt16(b[b.startIndex]) | UInt16(b[b.startIndex + 1]) << 8
    }
    /// A little-endian u32.
    public mutating func u32() throws(UpgradeError) -> UInt32 {
        let b = try take(4)
        return b.reversed().reduce(0) { $0 << 8 | UInt32($1) }
    }
    /// A little-endian i32.
    public mutating func i32() throws(UpgradeError) -> Int32 { Int32(bitPattern: try u32()) }
    /// A little-endian u64.
    public mutating func u64() throws(UpgradeError) -> UInt64 {
        let b = try take(8)
        return b.reversed().reduce(0) { $0 << 8 | UInt64($1) }
    }
    /// A string after its length (u8); invalid UTF-8 is repaired, never trusted.
    public mutating func string8() throws(UpgradeError) -> String {
        let n = Int(try u8())
        return String(decoding: try take(n), as: UTF8.self)
    }
    /// Bytes after their length (u16).
    public mutating func blob16() throws(UpgradeError) -> ArraySlice<UInt8> { try take(Int(try u16())) }
    /// Throws unless the whole message was read.
    public func expectEnd() throws(UpgradeError) {
        guard offset == bytes.count else { throw UpgradeError("hand-over message \(type): \(bytes.count - offset) bytes left over") }
    }
}
