import Glibc

// The HAProxy PROXY protocol, versions 1 (text) and 2 (binary), as a load balancer sends it at
// the start of a connection: who the client is, before the client's own bytes.
// Specification: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt
//
// Everything here is pure and allocates nothing: `ProxyProtocol.parse` looks at a prefix of the
// stream, and `ProxyHeaderReader` keeps the few bytes a header split across reads needs in a
// fixed inline buffer. This file imports only Glibc (inet_pton), so the fuzzer builds it alone.

/// An IPv4 or IPv6 address and port carried by a PROXY header.
public struct ProxyAddress: Equatable, Hashable, Sendable, CustomStringConvertible {
    /// The address family.
    public enum Family: UInt8, Sendable { case ipv4 = 4, ipv6 = 6 }

    /// Whether the address is IPv4 or IPv6.
    public let family: Family
    /// The address bytes in network order: 4 for IPv4 (the rest zero), 16 for IPv6, as two
    /// unaligned loads so the value is plain and comparable.
    let low: UInt64
    let high: UInt64
    /// The port, in host order.
    public let port: UInt16

    /// An address from `bytes` (4 for IPv4, 16 for IPv6, in network order) and a port.
    public init(family: Family, bytes: UnsafeRawBufferPointer, port: UInt16) {
        precondition(bytes.count >= (family == .ipv4 ? 4 : 16), "too few address bytes")
        var raw: (UInt64, UInt64) = (0, 0)
        withUnsafeMutableBytes(of: &raw) { out in
            out.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[..<(family == .ipv4 ? 4 : 16)]))
        }
        self.family = family
        self.low = raw.0
        self.high = raw.1
        self.port = port
    }

    /// Calls `body` with the address bytes (4 or 16).
    public func withAddressBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        var raw = (low, high)
        return withUnsafeBytes(of: &raw) { body(UnsafeRawBufferPointer(rebasing: $0[..<(family == .ipv4 ? 4 : 16)])) }
    }

    /// The address as inet_ntop writes it (no port).
    public var host: String {
        var raw = (low, high)
        return withUnsafeBytes(of: &raw) { bytes in
            withUnsafeTemporaryAllocation(of: CChar.self, capacity: 64) { text in
                let af = family == .ipv4 ? AF_INET : AF_INET6
                guard inet_ntop(af, bytes.baseAddress, text.baseAddress, 64) != nil else { return "?" }
                return String(cString: text.baseAddress!)
            }
        }
    }

    /// `10.0.0.1:4242` or `[2001:db8::1]:4242`, like `SocketAddress`.
    public var description: String { family == .ipv4 ? "\(host):\(port)" : "[\(host)]:\(port)" }
}

/// A parsed PROXY header.
public struct ProxyHeader: Equatable, Sendable {
    /// 1 (text) or 2 (binary).
    public let version: UInt8
    /// A v2 `LOCAL` command: the balancer's own connection (a health check), not a client's.
    public let isLocal: Bool
    /// The client's address, or nil when the header names none (v2 `LOCAL`, v2 with an
    /// unspecified or Unix family, v1 `UNKNOWN`): then serve the connection as the balancer's.
    public let source: ProxyAddress?
    /// The address the client connected to (the balancer's listener), when given.
    public let destination: ProxyAddress?
    /// The whole header's length in bytes, including v2 TLVs. It may be more than
    /// ``ProxyProtocol/parse(_:)`` was given: the rest is skipped, never stored.
    public let length: Int
}

/// Why bytes are not a PROXY header. Every case has a fixed description, for the log line.
public enum ProxyHeaderError: UInt8, Error, Sendable, CustomStringConvertible {
    /// The header is not PROXY at all, or a v1 text line that does not parse.
    case notProxy, v1TooLong, v1BadLineEnd, v1BadProtocol, v1BadAddress, v1BadPort
    /// A v2 binary header that does not parse.
    case v2BadVersion, v2BadCommand, v2BadFamily, v2NotStream, v2ShortAddresses

    public var description: String {
        switch self {
        case .notProxy: return "the connection does not start with a PROXY v1 or v2 signature"
        case .v1TooLong: return "PROXY v1 line has no CRLF within 107 bytes"
        case .v1BadLineEnd: return "PROXY v1 line has a CR not followed by LF"
        case .v1BadProtocol: return "PROXY v1 protocol is not TCP4, TCP6 or UNKNOWN"
        case .v1BadAddress: return "PROXY v1 address is not a valid address of its family"
        case .v1BadPort: return "PROXY v1 port is not a number from 0 to 65535"
        case .v2BadVersion: return "PROXY v2 version is not 2"
        case .v2BadCommand: return "PROXY v2 command is neither LOCAL nor PROXY"
        case .v2BadFamily: return "PROXY v2 address family or transport is unknown"
        case .v2NotStream: return "PROXY v2 PROXY command for a datagram transport"
        case .v2ShortAddresses: return "PROXY v2 length is too short for its addresses"
        }
    }
}

/// What a prefix of a connection's stream says about its PROXY header.
public enum ProxyParseResult: Equatable, Sendable {
    /// A prefix of a possible header: more bytes are needed.
    case incomplete
    /// Not a PROXY header.
    case invalid(ProxyHeaderError)
    /// A header (its addresses are known; ``ProxyHeader/length`` says where the data starts).
    case header(ProxyHeader)
}

/// The PROXY protocol parser: a pure function of a stream prefix.
public enum ProxyProtocol {
    /// The longest v1 header, CRLF included (spec section 2.1).
    public static let v1MaxLength = 107
    /// The most bytes ``parse(_:)`` ever needs to decide: a v1 line, or a v2 header's 16 fixed
    /// bytes plus 36 of IPv6 addresses. With this many bytes it never says `incomplete`.
    public static let decisionBytes = 108

    /// The 12-byte v2 signature, `\r\n\r\n\0\r\nQUIT\n`.
    static var v2Signature: StaticString { "\r\n\r\n\0\r\nQUIT\n" }

    /// Parses the start of a connection's stream.
    ///
    /// `incomplete` only for a prefix shorter than ``decisionBytes`` that some header could
    /// continue; `invalid` as soon as no header can. A prefix of a valid header is never invalid.
    public static func parse(_ bytes: UnsafeRawBufferPointer) -> ProxyParseResult {
        guard let first = bytes.first else { return .incomplete }
        if first == UInt8(ascii: "P") { return parseV1(bytes) }
        if first == 0x0D { return parseV2(bytes) }
        return .invalid(.notProxy)
    }

    // MARK: version 1

    /// `PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n`, or `PROXY UNKNOWN ...\r\n`.
    static func parseV1(_ bytes: UnsafeRawBufferPointer) -> ProxyParseResult {
        let prefix: StaticString = "PROXY "
        let n = bytes.count
        for i in 0..<min(n, prefix.utf8CodeUnitCount) where bytes[i] != prefix.utf8Start[i] {
            return .invalid(.notProxy)
        }
        // The line ends at the first CR, which must be followed by LF; a LF before it is no line end.
        var end = -1
        for i in 0..<min(n, v1MaxLength) where bytes[i] == 0x0D || bytes[i] == 0x0A {
            if bytes[i] == 0x0A { return .invalid(.v1BadLineEnd) }
            end = i
            break
        }
        if end < 0 { return n >= v1MaxLength ? .invalid(.v1TooLong) : .incomplete }
        if end + 2 > v1MaxLength { return .invalid(.v1TooLong) }
        if end + 1 >= n { return .incomplete }
        if bytes[end + 1] != 0x0A { return .invalid(.v1BadLineEnd) }
        let line = UnsafeRawBufferPointer(rebasing: bytes[prefix.utf8CodeUnitCount..<end])
        let length = end + 2

        var fields = V1Fields(line)
        guard let proto = fields.next() else { return .invalid(.v1BadProtocol) }
        if equals(proto, "UNKNOWN") {
            // The rest of the line is ignored (spec 2.1): the balancer does not know the client.
            return .header(ProxyHeader(version: 1, isLocal: false, source: nil, destination: nil, length: length))
        }
        let family: ProxyAddress.Family
        if equals(proto, "TCP4") { family = .ipv4 } else if equals(proto, "TCP6") { family = .ipv6 } else {
            return .invalid(.v1BadProtocol)
        }
        guard let sourceText = fields.next(), let destinationText = fields.next() else { return .invalid(.v1BadAddress) }
        guard let sourcePortText = fields.next(), let destinationPortText = fields.next(), fields.atEnd else {
            return .invalid(.v1BadPort)
        }
        guard let sourcePort = port(sourcePortText), let destinationPort = port(destinationPortText) else {
            return .invalid(.v1BadPort)
        }
        guard let source = address(sourceText, family, sourcePort),
              let destination = address(destinationText, family, destinationPort) else {
            return .invalid(.v1BadAddress)
        }
        return .header(ProxyHeader(version: 1, isLocal: false, source: source, destination: destination, length: length))
    }

    /// Fields separated by exactly one space each (spec 2.1: "a single space").
    struct V1Fields {
        let line: UnsafeRawBufferPointer
        var position = 0
        /// False once a field was empty (two spaces, or a trailing space): that line is invalid.
        var wellFormed = true

        init(_ line: UnsafeRawBufferPointer) { self.line = line }

        var atEnd: Bool { position > line.count && wellFormed }

        mutating func next() -> UnsafeRawBufferPointer? {
            guard position <= line.count else { return nil }
            var end = position
            while end < line.count && line[end] != UInt8(ascii: " ") { end += 1 }
            let field = UnsafeRawBufferPointer(rebasing: line[position..<end])
            position = end + 1
            if field.isEmpty { wellFormed = false; return nil }
            return field
        }
    }

    static func equals(_ field: UnsafeRawBufferPointer, _ word: StaticString) -> Bool {
        guard field.count == word.utf8CodeUnitCount else { return false }
        for i in 0..<field.count where field[i] != word.utf8Start[i] { return false }
        return true
    }

    /// A decimal port: 1 to 5 digits, at most 65535.
    static func port(_ field: UnsafeRawBufferPointer) -> UInt16? {
        guard (1...5).contains(field.count) else { return nil }
        var value = 0
        for byte in field {
            guard byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") else { return nil }
            value = value * 10 + Int(byte - UInt8(ascii: "0"))
        }
        return value <= 65535 ? UInt16(value) : nil
    }

    /// An address in the text form inet_pton accepts for `family`, copied NUL-terminated to the stack.
    ///
    /// Every character is checked first: inet_pton stops at a NUL, so `9.9.9.9\0junk` would
    /// otherwise pass as `9.9.9.9`. IPv4: digits and dots only; IPv6: hex digits, colons, and
    /// dots (for a trailing dotted quad such as `::ffff:192.0.2.1`).
    static func address(_ field: UnsafeRawBufferPointer, _ family: ProxyAddress.Family, _ port: UInt16) -> ProxyAddress? {
        // INET6_ADDRSTRLEN is 46 with the NUL; a longer field is no address.
        guard field.count < 46, field.allSatisfy({ addressCharacter($0, family) }) else { return nil }
        var text: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0)
        var parsed: (UInt64, UInt64) = (0, 0)
        let ok = withUnsafeMutableBytes(of: &text) { text in
            text.copyMemory(from: field)
            return withUnsafeMutableBytes(of: &parsed) { out in
                inet_pton(family == .ipv4 ? AF_INET : AF_INET6, text.baseAddress!.assumingMemoryBound(to: CChar.self), out.baseAddress) == 1
            }
        }
        guard ok else { return nil }
        return withUnsafeBytes(of: &parsed) { ProxyAddress(family: family, bytes: $0, port: port) }
    }

    /// Whether `byte` may appear in a v1 address of `family`.
    @inline(__always)
    static func addressCharacter(_ byte: UInt8, _ family: ProxyAddress.Family) -> Bool {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."): return true
        case UInt8(ascii: "a")...UInt8(ascii: "f"), UInt8(ascii: "A")...UInt8(ascii: "F"), UInt8(ascii: ":"):
            return family == .ipv6
        default: return false
        }
    }

    // MARK: version 2

    /// 12 signature bytes, version and command, family and transport, a 16-bit length, then the
    /// addresses and optional TLVs.
    static func parseV2(_ bytes: UnsafeRawBufferPointer) -> ProxyParseResult {
        let n = bytes.count
        let signature = v2Signature.utf8Start
        for i in 0..<min(n, 12) where bytes[i] != signature[i] { return .invalid(.notProxy) }
        if n < 13 { return .incomplete }
        let versionCommand = bytes[12]
        guard versionCommand >> 4 == 2 else { return .invalid(.v2BadVersion) }
        let command = versionCommand & 0x0F
        guard command <= 1 else { return .invalid(.v2BadCommand) }
        if n < 14 { return .incomplete }
        let family = bytes[13] >> 4, transport = bytes[13] & 0x0F
        guard family <= 3, transport <= 2 else { return .invalid(.v2BadFamily) }
        if n < 16 { return .incomplete }
        let addressLength = Int(bytes[14]) << 8 | Int(bytes[15])
        let length = 16 + addressLength
        if command == 0 {
            // LOCAL: the balancer's own connection; the address block, if any, is ignored.
            return .header(ProxyHeader(version: 2, isLocal: true, source: nil, destination: nil, length: length))
        }
        let needed: Int
        switch family {
        case 1: needed = 12  // two IPv4 addresses, two ports
        case 2: needed = 36  // two IPv6 addresses, two ports
        case 3: needed = 216  // two Unix paths of 108 bytes
        default: needed = 0  // UNSPEC: no address; use the connection's own (spec 2.2)
        }
        guard addressLength >= needed else { return .invalid(.v2ShortAddresses) }
        if family != 0 && transport != 1 { return .invalid(.v2NotStream) }
        guard family == 1 || family == 2 else {
            // UNSPEC, or a Unix client: nothing an IP limit or log can use.
            return .header(ProxyHeader(version: 2, isLocal: false, source: nil, destination: nil, length: length))
        }
        if n < 16 + needed { return .incomplete }
        let block = UnsafeRawBufferPointer(rebasing: bytes[16..<(16 + needed)])
        let size = family == 1 ? 4 : 16
        let af: ProxyAddress.Family = family == 1 ? .ipv4 : .ipv6
        let sourcePort = UInt16(block[2 * size]) << 8 | UInt16(block[2 * size + 1])
        let destinationPort = UInt16(block[2 * size + 2]) << 8 | UInt16(block[2 * size + 3])
        let source = ProxyAddress(family: af, bytes: UnsafeRawBufferPointer(rebasing: block[0..<size]), port: sourcePort)
        let destination = ProxyAddress(family: af, bytes: UnsafeRawBufferPointer(rebasing: block[size..<(2 * size)]), port: destinationPort)
        return .header(ProxyHeader(version: 2, isLocal: false, source: source, destination: destination, length: length))
    }
}

/// Reads a PROXY header from a connection's first segments, however they are split.
///
/// A header that arrives whole in one segment is parsed where it lies. Otherwise up to
/// ``ProxyProtocol/decisionBytes`` are kept in an inline buffer (no allocation); the rest of a
/// long v2 header (TLVs) is counted off, never stored.
public struct ProxyHeaderReader {
    // 112 bytes of inline storage, at least ProxyProtocol.decisionBytes.
    private var storage: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64,
                          UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    private var count = 0
    /// Every byte fed so far, whatever the reader kept, skipped or left for the data.
    private var fed = 0
    /// Header bytes still to skip once the addresses are known.
    private var skip = 0
    private var parsed: ProxyHeader?

    /// What one segment did.
    public enum Step: Equatable, Sendable {
        /// The header goes on in the next segment.
        case needMore
        /// Not a PROXY header: close the connection.
        case invalid(ProxyHeaderError)
        /// The header ended in this segment; its bytes from `dataStart` on are the client's data.
        case done(ProxyHeader, dataStart: Int)
    }

    /// A reader that has seen no bytes yet.
    public init() {}

    /// Header bytes seen so far (kept or skipped).
    public var consumed: Int { count }

    /// Bytes received so far, in every segment fed: what a log line about an incomplete or late
    /// header should report (``consumed`` stops at what the parser needed to look at).
    public var received: Int { fed }

    /// Takes the next segment of the stream. After `done` or `invalid` the reader is finished.
    public mutating func feed(_ bytes: UnsafeRawBufferPointer) -> Step {
        let n = bytes.count
        fed &+= n
        if let header = parsed {
            let take = min(skip, n)
            skip -= take
            return skip > 0 ? .needMore : .done(header, dataStart: take)
        }
        if count == 0 {
            switch ProxyProtocol.parse(bytes) {
            case .header(let header): return finish(header, seenBefore: 0, segment: n)
            case .invalid(let error): return .invalid(error)
            case .incomplete: break
            }
        }
        let before = count
        let take = min(n, ProxyProtocol.decisionBytes - before)
        let result: ProxyParseResult = withUnsafeMutableBytes(of: &storage) { buffer in
            if take > 0 {
                UnsafeMutableRawBufferPointer(rebasing: buffer[before..<(before + take)])
                    .copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[..<take]))
            }
            return ProxyProtocol.parse(UnsafeRawBufferPointer(rebasing: buffer[..<(before + take)]))
        }
        count = before + take
        switch result {
        case .header(let header): return finish(header, seenBefore: before, segment: n)
        case .invalid(let error): return .invalid(error)
        case .incomplete:
            precondition(count < ProxyProtocol.decisionBytes, "the parser decides within decisionBytes")
            return .needMore
        }
    }

    /// The header is known; `seenBefore` of its bytes came in earlier segments.
    private mutating func finish(_ header: ProxyHeader, seenBefore: Int, segment n: Int) -> Step {
        let inSegment = header.length - seenBefore
        if inSegment <= n { return .done(header, dataStart: inSegment) }
        parsed = header
        skip = inSegment - n
        count = seenBefore + n
        return .needMore
    }
}
