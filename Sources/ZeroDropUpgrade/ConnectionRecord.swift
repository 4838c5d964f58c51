import Glibc

/// One connection as the wire carries it (its fd travels beside it, with SCM_RIGHTS): what the
/// reactor knew about it (`HandedOverConnection`) and the handler's own state as its
/// ``HandOverCodec`` wrote it.
///
/// Wire (``UpgradeWire/version`` 2): reactor (u16), flags (u16, ``Flags``), idle seconds (u32),
/// pending output length (u32), close reason (name u8-length string, detail u8-length string,
/// errno i32, 0 for none), peer (u16 length, sockaddr bytes), state length (u32), then the
/// codec's bytes when they are at most ``inlineStateLimit``. The pending output follows in
/// `output` messages, a longer state in `connectionState` messages.
public struct ConnectionRecord: Sendable, Equatable {
    /// The reactor flags of a connection in a record.
    public struct Flags: OptionSet, Sendable, Equatable {
        /// The connection-limit place (`HandedOverConnection/holdsLimitPlace`).
        public let rawValue: UInt16
        /// A flag from its bits.
        public init(rawValue: UInt16) { self.rawValue = rawValue }
        /// `HandedOverConnection/holdsLimitPlace`.
        public static let holdsLimitPlace = Flags(rawValue: 1 << 0)
        /// `HandedOverConnection/readEOF`.
        public static let readEOF = Flags(rawValue: 1 << 1)
        /// `HandedOverConnection/closing` is set.
        public static let closing = Flags(rawValue: 1 << 2)
        /// `HandedOverConnection/lingering`.
        public static let lingering = Flags(rawValue: 1 << 3)
        /// `HandedOverConnection/shutdownPending`.
        public static let shutdownPending = Flags(rawValue: 1 << 4)
        /// `HandedOverConnection/pausedByHandler`.
        public static let pausedByHandler = Flags(rawValue: 1 << 5)
        /// `HandedOverConnection/backpressure`.
        public static let backpressure = Flags(rawValue: 1 << 6)
        /// Every flag this version knows; a record with another is refused.
        public static let known: Flags = [.holdsLimitPlace, .readEOF, .closing, .lingering, .shutdownPending, .pausedByHandler,
                                          .backpressure]
    }

    /// Why 1 GiB: the most pending output one connection may announce. A reactor stops reading a
    /// peer past its high watermark, so real connections hold far less; a record that announces
    /// more is not from a sane process.
    public static let maxPendingLength = 1 << 30

    /// Why 1 GiB: the largest handler state one connection may announce (a half-read request of
    /// a protocol whose requests are large). A record that announces more is refused.
    public static let maxStateLength = 1 << 30

    /// Why 512 bytes: a state this small travels inside the record (one message carries 200
    /// records, so at most about 120 KiB, under `HandOverChannel/maxMessage`); a larger one
    /// travels in chunks of its own, as the pending output does.
    public static let inlineStateLimit = 512

    /// The index of the reactor that served it in the old process.
    public var reactor: Int
    /// The reactor's view of it.
    public var flags: Flags
    /// Whole seconds since its last traffic.
    public var idleSeconds: UInt32
    /// How many bytes of pending output follow in `output` messages.
    public var pendingLength: Int
    /// A close in progress: the reason's name, detail and errno (empty, empty, 0 for none).
    public var reasonName: String
    /// See ``reasonName``.
    public var reasonDetail: String
    /// See ``reasonName``.
    public var reasonErrno: Int32
    /// The peer as sockaddr bytes (`SocketAddress/sockaddrBytes`).
    public var peer: [UInt8]
    /// The handler's state, as its codec wrote it (as far as received).
    public var state: [UInt8]
    /// The state's whole length (more than ``inlineStateLimit``: it follows in chunks).
    public var stateLength: Int
    /// The socket (-1 until it is received).
    public var fd: CInt = -1
    /// The pending output received so far.
    public var pending: [UInt8] = []

    /// A record from its parts.
    public init(reactor: Int, flags: Flags, idleSeconds: UInt32, pendingLength: Int, reasonName: String = "",
                reasonDetail: String = "", reasonErrno: Int32 = 0, peer: [UInt8], state: [UInt8]) {
        self.reactor = reactor
        self.flags = flags
        self.idleSeconds = idleSeconds
        self.pendingLength = pendingLength
        self.reasonName = reasonName
        self.reasonDetail = reasonDetail
        self.reasonErrno = reasonErrno
        self.peer = peer
        self.state = state
        stateLength = state.count
    }

    /// The state travels inside the record (not in `connectionState` messages).
    public var stateInline: Bool { stateLength <= Self.inlineStateLimit }

    /// Appends the record (not its fd, not its output).
    public func encode(into w: inout UpgradeWriter) {
        w.u16(UInt16(truncatingIfNeeded: reactor))
        w.u16(flags.rawValue)
        w.u32(idleSeconds)
        w.u32(UInt32(truncatingIfNeeded: pendingLength))
        w.string8(reasonName)
        w.string8(reasonDetail)
        w.i32(reasonErrno)
        w.blob16(peer)
        w.u32(UInt32(truncatingIfNeeded: stateLength))
        if stateInline { w.bytes += state }
    }

    /// Reads one record.
    public static func decode(_ r: inout UpgradeReader) throws(UpgradeError) -> ConnectionRecord {
        let reactor = Int(try r.u16())
        let flags = Flags(rawValue: try r.u16())
        guard flags.subtracting(.known).isEmpty else { throw UpgradeError("unknown connection flags \(flags.rawValue)") }
        let idle = try r.u32()
        let pending = Int(try r.u32())
        guard pending <= maxPendingLength else { throw UpgradeError("a connection announces \(pending) bytes of pending output") }
        let name = try r.string8()
        let detail = try r.string8()
        let errno = try r.i32()
        let peer = Array(try r.blob16())
        guard SockaddrBytes.isPlausible(peer) else { throw UpgradeError("a connection's peer address is invalid") }
        let stateLength = Int(try r.u32())
        guard stateLength <= maxStateLength else { throw UpgradeError("a connection announces \(stateLength) bytes of state") }
        let state = stateLength <= inlineStateLimit ? Array(try r.take(stateLength)) : []
        if !flags.contains(.closing) && !(name.isEmpty && detail.isEmpty && errno == 0) {
            throw UpgradeError("a close reason on a connection that is not closing")
        }
        var record = ConnectionRecord(reactor: reactor, flags: flags, idleSeconds: idle, pendingLength: pending,
                                      reasonName: name, reasonDetail: detail, reasonErrno: errno, peer: peer, state: state)
        record.stateLength = stateLength
        return record
    }
}
