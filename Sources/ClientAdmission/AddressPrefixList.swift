import Glibc
import Reactor

/// A list of IPv4 and IPv6 addresses and CIDR prefixes (`127.0.0.1,10.0.0.0/8,::1,2001:db8::/32`):
/// who may send a PROXY header (`--proxy-protocol-from`), like nginx's `set_real_ip_from` or
/// HAProxy's `accept-proxy` behind an ACL.
///
/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, what a dual-stack listener reports for IPv4
/// peers) match the IPv4 entries, and only those. Checking is a scan of the entries, done once
/// per connection, never per message.
public struct AddressPrefixList: Sendable, CustomStringConvertible {
    /// One address or prefix: the address as a 128-bit number (IPv4 in the low 32 bits of
    /// `low`'s half, see ``Prefix/init(address:bits:)``) and how many leading bits must match.
    struct Prefix: Sendable, Equatable {
        let isIPv4: Bool
        let high: UInt64
        let low: UInt64
        let bits: Int
        let text: String

        func contains(isIPv4 v4: Bool, high h: UInt64, low l: UInt64) -> Bool {
            guard v4 == isIPv4 else { return false }
            let (maskHigh, maskLow) = Self.mask(bits: isIPv4 ? bits + 96 : bits)
            return h & maskHigh == high && l & maskLow == low
        }

        /// The top `bits` of 128 set.
        static func mask(bits: Int) -> (UInt64, UInt64) {
            let high: UInt64 = bits >= 64 ? .max : (bits == 0 ? 0 : ~UInt64(0) << (64 - bits))
            let low: UInt64 = bits <= 64 ? 0 : (bits >= 128 ? .max : ~UInt64(0) << (128 - bits))
            return (high, low)
        }
    }

    let prefixes: [Prefix]

    /// Why a list cannot be used, in words for the user.
    public struct ParseError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Parses a comma-separated list of addresses (`192.0.2.7`, `::1`) and prefixes
    /// (`10.0.0.0/8`, `2001:db8::/32`). A prefix with bits set past its length
    /// (`10.0.0.1/8`) is refused rather than silently widened: it is usually a typo.
    public init(parsing text: String) throws(ParseError) {
        var prefixes: [Prefix] = []
        for raw in text.split(separator: ",", omittingEmptySubsequences: false) {
            let entry = raw.trimmingSpaces
            guard !entry.isEmpty else { throw ParseError(description: "empty entry in '\(text)'") }
            let parts = entry.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count <= 2 else { throw ParseError(description: "'\(entry)' is not an address or address/prefix-length") }
            guard let (isIPv4, high, low) = Self.parseAddress(String(parts[0])) else {
                throw ParseError(description: "'\(parts[0])' is not an IPv4 or IPv6 address")
            }
            let most = isIPv4 ? 32 : 128
            var bits = most
            if parts.count == 2 {
                guard let n = Int(parts[1]), parts[1].allSatisfy(\.isASCII), (0...most).contains(n) else {
                    throw ParseError(description: "'\(entry)': the prefix length must be a number from 0 to \(most)")
                }
                bits = n
            }
            let (maskHigh, maskLow) = Prefix.mask(bits: isIPv4 ? bits + 96 : bits)
            guard high & maskHigh == high, low & maskLow == low else {
                throw ParseError(description: "'\(entry)' has address bits set past /\(bits); write the network address")
            }
            prefixes.append(Prefix(isIPv4: isIPv4, high: high, low: low, bits: bits, text: String(entry)))
        }
        self.prefixes = prefixes
    }

    /// Whether the IP literal `host` (a connection's peer) is in the list; false for anything
    /// that is not an IP address.
    public func contains(host: String) -> Bool {
        guard let (isIPv4, high, low) = Self.parseAddress(host) else { return false }
        return prefixes.contains { $0.contains(isIPv4: isIPv4, high: high, low: low) }
    }

    /// Whether a connection's peer is in the list. A Unix-domain peer is: only processes that
    /// may open the socket file reach it (see `--unix-mode`), so it is as trusted as the host.
    public func contains(_ peer: SocketAddress) -> Bool {
        guard let parsed = peer.withIPAddressBytes({ Self.split($0) }) else { return true }
        return prefixes.contains { $0.contains(isIPv4: parsed.0, high: parsed.1, low: parsed.2) }
    }

    /// The entries as given, comma-separated.
    public var description: String { prefixes.map(\.text).joined(separator: ",") }

    /// Whether every address in the list is a loopback one (127.0.0.0/8, ::1).
    public var isLoopbackOnly: Bool {
        prefixes.allSatisfy { p in
            p.isIPv4 ? (p.bits >= 8 && p.low >> 24 == 127) : (p.bits == 128 && p.high == 0 && p.low == 1)
        }
    }

    /// An IP literal as (IPv4?, high 64 bits, low 64 bits). IPv4 and IPv4-mapped IPv6 give
    /// the IPv4 address in the low 32 bits with the top 96 zero.
    static func parseAddress(_ text: String) -> (Bool, UInt64, UInt64)? {
        var raw: (UInt64, UInt64) = (0, 0)
        return withUnsafeMutableBytes(of: &raw) { out -> (Bool, UInt64, UInt64)? in
            if inet_pton(AF_INET, text, out.baseAddress) == 1 { return split(UnsafeRawBufferPointer(rebasing: out[..<4])) }
            guard inet_pton(AF_INET6, text, out.baseAddress) == 1 else { return nil }
            return split(UnsafeRawBufferPointer(out))
        }
    }

    /// 4 or 16 address bytes in network order as (IPv4?, high, low); see ``parseAddress(_:)``.
    static func split(_ bytes: UnsafeRawBufferPointer) -> (Bool, UInt64, UInt64) {
        if bytes.count == 4 { return (true, 0, UInt64(UInt32(bigEndian: bytes.loadUnaligned(as: UInt32.self)))) }
        let high = UInt64(bigEndian: bytes.loadUnaligned(as: UInt64.self))
        let low = UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        if high == 0 && low >> 32 == 0xFFFF { return (true, 0, low & 0xFFFF_FFFF) }
        return (false, high, low)
    }
}

extension Substring {
    fileprivate var trimmingSpaces: Substring {
        var s = self
        while s.first == " " { s.removeFirst() }
        while s.last == " " { s.removeLast() }
        return s
    }
}
