import Echo
import Reactor
import SystemPackage

/// The hand-over wire format between an old and a new reflectd (see README, "Upgrading without
/// dropping connections").
///
/// One `SOCK_SEQPACKET` message per step, each starting with a 12-byte header: the magic `RFLU`,
/// the format version (u16), the message type (u8), a reserved byte (0) and a count (u32). All
/// integers are little-endian. Fds travel with SCM_RIGHTS in the message whose records name them,
/// in record order.
///
/// - `hello` (both ways, old first): body = pid (u32). Versions must be equal, or the side that
///   sees the mismatch sends `refuse` and both give up (the old one keeps serving).
/// - `listeners`: count = N records and N fds; record = reactor (u16), flags (u8: 1 limited,
///   2 owns its Unix socket file, 4 metrics, 8 a UDP socket of the echo), address length (u16),
///   sockaddr bytes.
/// - `connections`: count = N records and N fds (at most 253, SCM_MAX_FD); record = reactor
///   (u16), flags (u16, ``ConnectionFlags``), idle seconds (u32), the exit-line detector (3 bytes:
///   at line start, held, released), pending output length (u32), close reason (name u8-length
///   string, detail u8-length string, errno i32, 0 for none), peer (u16 length, sockaddr bytes);
///   with flag 64 (``ConnectionFlags/extra``) then the name in log lines (u16-length string: the
///   client behind a PROXY header) and the per-client place (u8 0 for none, else a marker, 1 or 2, and the key u64: see ClientKey.handOver).
/// - `output`: count = the connection's sequence number (0-based, over all `connections`
///   records); body = up to 64 KiB of its pending output, in order.
/// - `statistics`: the old process's counters, for the metrics to continue.
/// - `end`: count = connections sent.
/// - `ready` (new → old): count = connections installed; body = pid (u32). The old process
///   closes its copies and exits 0.
/// - `refuse` (either way): body = the reason, UTF-8.
enum HandOverFormat {
    /// The listener flag of a UDP socket (see `listeners` above).
    static let datagramFlag: UInt8 = 8
    static let magic: [UInt8] = Array("RFLU".utf8)
    /// Version 1: the first format. Bump it whenever a record changes.
    static let version: UInt16 = 1
    static let headerSize = 12
    /// Why 200 connections per message: under SCM_MAX_FD (253), and records (~60 B each) stay
    /// far below the socket buffer.
    static let connectionsPerMessage = 200
    static let outputChunk = 64 * 1024

    enum MessageType: UInt8 {
        case hello = 1, listeners, connections, output, statistics, end, ready, refuse
    }

    struct ConnectionFlags: OptionSet {
        let rawValue: UInt16
        static let holdsLimitPlace = ConnectionFlags(rawValue: 1 << 0)
        static let readEOF = ConnectionFlags(rawValue: 1 << 1)
        static let closing = ConnectionFlags(rawValue: 1 << 2)
        static let lingering = ConnectionFlags(rawValue: 1 << 3)
        static let shutdownPending = ConnectionFlags(rawValue: 1 << 4)
        static let pausedByHandler = ConnectionFlags(rawValue: 1 << 5)
        /// The connection has a ``ConnectionExtra`` (a PROXY client's name, a per-client place).
        static let extra = ConnectionFlags(rawValue: 1 << 6)
        static let known: ConnectionFlags = [.holdsLimitPlace, .readEOF, .closing, .lingering, .shutdownPending, .pausedByHandler, .extra]
    }

    /// The version this process writes in its headers. `REFLECTD_UPGRADE_ANNOUNCE_VERSION`
    /// makes a process that is taking over announce another one (for testing the refusal).
    nonisolated(unsafe) static var announced: UInt16 = version  // set once at startup, before any thread
}

/// A message being built.
struct HandOverWriter {
    var bytes: [UInt8] = []

    init(_ type: HandOverFormat.MessageType, count: Int = 0) {
        bytes = HandOverFormat.magic
        u16(HandOverFormat.announced)
        u8(type.rawValue)
        u8(0)
        u32(UInt32(count))
    }

    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func i32(_ v: Int32) { u32(UInt32(bitPattern: v)) }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func string8(_ s: String) {
        let utf8 = Array(s.utf8.prefix(255))
        u8(UInt8(utf8.count))
        bytes.append(contentsOf: utf8)
    }
    mutating func blob16(_ b: [UInt8]) {
        u16(UInt16(b.count))
        bytes.append(contentsOf: b)
    }
}

/// A malformed or unexpected hand-over message.
struct HandOverError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A received message being read.
struct HandOverReader {
    let bytes: [UInt8]
    var offset = 0
    private(set) var type: HandOverFormat.MessageType = .hello
    private(set) var version: UInt16 = 0
    private(set) var count = 0

    /// Checks the header: the magic, then the version (a mismatch is reported with both).
    init(_ bytes: [UInt8]) throws(HandOverError) {
        guard bytes.count >= HandOverFormat.headerSize, Array(bytes[0..<4]) == HandOverFormat.magic else {
            throw HandOverError("not a reflectd hand-over message (bad magic)")
        }
        self.bytes = bytes
        offset = 4
        version = try u16()
        let rawType = try u8()
        _ = try u8()
        count = Int(try u32())
        guard version == HandOverFormat.version else {
            throw HandOverError("hand-over format version \(version) from the other process; this binary speaks version \(HandOverFormat.version)")
        }
        guard let type = HandOverFormat.MessageType(rawValue: rawType) else {
            throw HandOverError("unknown hand-over message type \(rawType)")
        }
        self.type = type
    }

    var remaining: ArraySlice<UInt8> { bytes[offset...] }

    mutating func take(_ n: Int) throws(HandOverError) -> ArraySlice<UInt8> {
        guard n >= 0, offset + n <= bytes.count else { throw HandOverError("hand-over message \(type) truncated") }
        defer { offset += n }
        return bytes[offset..<(offset + n)]
    }
    mutating func u8() throws(HandOverError) -> UInt8 { try take(1).first! }
    mutating func u16() throws(HandOverError) -> UInt16 {
        let b = try take(2)
        return UInt16(b[b.startIndex]) | UInt16(b[b.startIndex + 1]) << 8
    }
    mutating func u32() throws(HandOverError) -> UInt32 {
        let b = try take(4)
        return b.reversed().reduce(0) { $0 << 8 | UInt32($1) }
    }
    mutating func i32() throws(HandOverError) -> Int32 { Int32(bitPattern: try u32()) }
    mutating func u64() throws(HandOverError) -> UInt64 {
        let b = try take(8)
        return b.reversed().reduce(0) { $0 << 8 | UInt64($1) }
    }
    mutating func string8() throws(HandOverError) -> String {
        let n = Int(try u8())
        return String(decoding: try take(n), as: UTF8.self)
    }
    mutating func blob16() throws(HandOverError) -> [UInt8] { Array(try take(Int(try u16()))) }
}

/// One connection as the wire carries it (the fd travels beside it).
struct HandOverRecord: Sendable {
    var reactor: Int
    var flags: HandOverFormat.ConnectionFlags.RawValue
    var idleSeconds: UInt32
    var detector: [UInt8]
    var pendingLength: Int
    var reasonName: String
    var reasonDetail: String
    var reasonErrno: Int32
    var peer: [UInt8]
    /// With ``HandOverFormat/ConnectionFlags/extra``: the name in log lines and the client's
    /// place under `--max-connections-per-client` (``ClientKey/handOver``), if it holds one.
    var name: String = ""
    var place: ClientKey?
    var fd: CInt = -1
    var pending: [UInt8] = []

    func encode(into w: inout HandOverWriter) {
        w.u16(UInt16(reactor))
        w.u16(flags)
        w.u32(idleSeconds)
        w.bytes.append(contentsOf: detector)
        w.u32(UInt32(pendingLength))
        w.string8(reasonName)
        w.string8(reasonDetail)
        w.i32(reasonErrno)
        w.blob16(peer)
        if HandOverFormat.ConnectionFlags(rawValue: flags).contains(.extra) {
            w.blob16(Array(name.utf8.prefix(Int(UInt16.max))))
            if let place {
                let (marker, value) = place.handOver
                w.u8(marker)
                w.u64(value)
            } else {
                w.u8(0)
            }
        }
    }

    static func decode(_ r: inout HandOverReader) throws(HandOverError) -> HandOverRecord {
        let reactor = Int(try r.u16())
        let flags = try r.u16()
        guard HandOverFormat.ConnectionFlags(rawValue: flags).subtracting(.known).isEmpty else {
            throw HandOverError("unknown connection flags \(flags)")
        }
        let idle = try r.u32()
        let detector = Array(try r.take(3))
        guard ExitLineDetector(handOverBytes: detector) != nil else { throw HandOverError("invalid exit-line state \(detector)") }
        let pending = Int(try r.u32())
        let name = try r.string8()
        let detail = try r.string8()
        let errno = try r.i32()
        let peer = try r.blob16()
        var record = HandOverRecord(reactor: reactor, flags: flags, idleSeconds: idle, detector: detector, pendingLength: pending,
                                    reasonName: name, reasonDetail: detail, reasonErrno: errno, peer: peer)
        if HandOverFormat.ConnectionFlags(rawValue: flags).contains(.extra) {
            record.name = String(decoding: try r.blob16(), as: UTF8.self)
            switch try r.u8() {
            case 0: break
            case let marker:
                let value = try r.u64()
                guard let key = ClientKey(handOverMarker: marker, value: value) else {
                    throw HandOverError("invalid per-client place marker \(marker)")
                }
                record.place = key
            }
        }
        return record
    }

    /// From a connection detached from a reactor.
    init(_ c: HandedOverConnection<ServerHandler.State>, reactor: Int) {
        var flags: HandOverFormat.ConnectionFlags = []
        if c.holdsLimitPlace { flags.insert(.holdsLimitPlace) }
        if c.readEOF { flags.insert(.readEOF) }
        if c.closing != nil { flags.insert(.closing) }
        if c.lingering { flags.insert(.lingering) }
        if c.shutdownPending { flags.insert(.shutdownPending) }
        if c.pausedByHandler { flags.insert(.pausedByHandler) }
        if let extra = c.state.extra {
            // Only plain echo connections are handed over (see Upgrader): no metrics request and
            // no PROXY header still pending.
            precondition(extra.http == nil && extra.pending == nil, "handing over a connection that is not a plain echo")
            flags.insert(.extra)
            name = extra.name
        }
        if let key = c.state.place {
            // A plain connection under a per-client limit: an empty name says "no ConnectionExtra"
            // (a 0.2.0 receiver names it after its peer, which is the same).
            flags.insert(.extra)
            place = key
        }
        self.reactor = reactor
        self.flags = flags.rawValue
        idleSeconds = c.idleSeconds
        detector = c.state.echo.detector.handOverBytes
        pendingLength = c.pendingOutput.count
        reasonName = c.closing?.name ?? ""
        reasonDetail = c.closing?.detail ?? ""
        reasonErrno = c.closing?.errno?.rawValue ?? 0
        peer = c.peer.sockaddrBytes
        fd = c.fd
        pending = c.pendingOutput
    }

    private init(reactor: Int, flags: UInt16, idleSeconds: UInt32, detector: [UInt8], pendingLength: Int,
                 reasonName: String, reasonDetail: String, reasonErrno: Int32, peer: [UInt8]) {
        self.reactor = reactor
        self.flags = flags
        self.idleSeconds = idleSeconds
        self.detector = detector
        self.pendingLength = pendingLength
        self.reasonName = reasonName
        self.reasonDetail = reasonDetail
        self.reasonErrno = reasonErrno
        self.peer = peer
    }

    /// The connection to install on a reactor.
    var connection: HandedOverConnection<ServerHandler.State> {
        let f = HandOverFormat.ConnectionFlags(rawValue: flags)
        var state = ServerHandler.State()
        state.echo.detector = ExitLineDetector(handOverBytes: detector) ?? ExitLineDetector()
        let reason = f.contains(.closing)
            ? CloseReason.handedOver(name: reasonName.isEmpty ? "eof" : reasonName,
                                     errno: reasonErrno == 0 ? nil : Errno(rawValue: reasonErrno),
                                     detail: reasonDetail.isEmpty ? nil : reasonDetail)
            : nil
        let peer = SocketAddress(sockaddrBytes: peer) ?? (try! SocketAddress(unixPath: "?"))
        if f.contains(.extra) {
            if !name.isEmpty {
                // The socket's peer is the balancer for a PROXY client (ConnectionExtra.balancer).
                let extra = ConnectionExtra(peer: peer)
                extra.name = name
                state.extra = extra
            }
            state.place = place
        }
        return HandedOverConnection(
            fd: fd, state: state, pendingOutput: pending,
            peer: peer,
            holdsLimitPlace: f.contains(.holdsLimitPlace), readEOF: f.contains(.readEOF),
            pausedByHandler: f.contains(.pausedByHandler), closing: reason, lingering: f.contains(.lingering),
            shutdownPending: f.contains(.shutdownPending), idleSeconds: idleSeconds)
    }
}

/// One listener as the wire carries it.
struct HandOverListenerRecord: Sendable {
    var reactor: Int
    var listener: HandedOverListener
    var metrics: Bool
    /// A UDP socket (`--udp`, or inherited), served with ``Reactor/adoptDatagram(fd:handler:)``.
    var datagram = false
}

extension ReactorStatistics {
    /// Datagrams and bytes in and out, then the drops in ``DatagramDrop`` order.
    var datagramCounters: [Int] {
        get { [datagramsIn, datagramsOut, datagramBytesIn, datagramBytesOut] + DatagramDrop.allCases.map { datagramDrops[$0] } }
        set {
            (datagramsIn, datagramsOut, datagramBytesIn, datagramBytesOut) = (newValue[0], newValue[1], newValue[2], newValue[3])
            for (k, reason) in DatagramDrop.allCases.enumerated() { datagramDrops[reason] = newValue[4 + k] }
        }
    }

    /// The counters that continue across an upgrade (not `open`, which the connections carry).
    func encode(into w: inout HandOverWriter) {
        for v in [accepted, rejectedByLimit, bytesIn, bytesOut, acceptPauses] { w.u64(UInt64(max(0, v))) }
        for table in [closed, acceptErrors] {
            w.u16(UInt16(table.count))
            for (name, value) in table.sorted(by: { $0.key < $1.key }) {
                w.string8(name)
                w.u64(UInt64(max(0, value)))
            }
        }
        // The datagram counters, last: a process from before them stops reading here.
        for v in datagramCounters { w.u64(UInt64(max(0, v))) }
    }

    static func decode(_ r: inout HandOverReader) throws(HandOverError) -> ReactorStatistics {
        var s = ReactorStatistics()
        s.accepted = Int(try r.u64())
        s.rejectedByLimit = Int(try r.u64())
        s.bytesIn = Int(try r.u64())
        s.bytesOut = Int(try r.u64())
        s.acceptPauses = Int(try r.u64())
        for k in 0..<2 {
            var table: [String: Int] = [:]
            for _ in 0..<Int(try r.u16()) {
                let name = try r.string8()
                table[name] = Int(try r.u64())
            }
            if k == 0 { s.closed = table } else { s.acceptErrors = table }
        }
        // A process from before the datagram counters sends none.
        if !r.remaining.isEmpty {
            var values: [Int] = []
            for _ in 0..<(4 + DatagramDrop.allCases.count) { values.append(Int(try r.u64())) }
            s.datagramCounters = values
        }
        return s
    }
}
