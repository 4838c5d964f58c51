import Glibc
import Synchronization

/// Who counts as one client for a per-client connection limit: an IPv4 address, or an IPv6 /64
/// (one site or host usually holds a whole /64, so limiting single IPv6 addresses limits nothing).
///
/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a dual-stack listener reports for IPv4
/// clients) count as the IPv4 address, not as the /64 that would group every IPv4 client.
public struct ClientKey: Hashable, Sendable, CustomStringConvertible {
    /// An IPv6 /64 prefix as a big-endian number, or an IPv4 address under a tag that no IPv6
    /// source can have (ffff:ffff::/32 is multicast, never the source of a TCP connection).
    let value: UInt64

    static let ipv4Tag: UInt64 = 0xFFFF_FFFF_0000_0000

    /// The client an address belongs to.
    public init(_ address: ProxyAddress) {
        self = address.withAddressBytes { ClientKey(bytes: $0) }
    }

    /// The client of an IP literal (`connection.peer.host`); nil for anything else (a Unix peer).
    public init?(host: String) {
        var raw: (UInt64, UInt64) = (0, 0)
        let key: ClientKey? = withUnsafeMutableBytes(of: &raw) { out in
            if inet_pton(AF_INET, host, out.baseAddress) == 1 {
                return ClientKey(bytes: UnsafeRawBufferPointer(rebasing: out[..<4]))
            }
            if inet_pton(AF_INET6, host, out.baseAddress) == 1 { return ClientKey(bytes: UnsafeRawBufferPointer(out)) }
            return nil
        }
        guard let key else { return nil }
        self = key
    }

    /// 4 bytes (IPv4) or 16 (IPv6), network order.
    init(bytes: UnsafeRawBufferPointer) {
        if bytes.count == 4 {
            value = Self.ipv4Tag | UInt64(bytes.loadUnaligned(as: UInt32.self))
            return
        }
        let mapped = bytes[0..<10].allSatisfy { $0 == 0 } && bytes[10] == 0xFF && bytes[11] == 0xFF
        if mapped {
            value = Self.ipv4Tag | UInt64(bytes.loadUnaligned(fromByteOffset: 12, as: UInt32.self))
        } else {
            value = UInt64(bigEndian: bytes.loadUnaligned(as: UInt64.self))
        }
    }

    public var description: String {
        let isV4 = value & Self.ipv4Tag == Self.ipv4Tag
        var raw: (UInt64, UInt64) = (value.bigEndian, 0)
        if isV4 { raw.0 = value & 0xFFFF_FFFF }
        return withUnsafeBytes(of: &raw) { bytes in
            withUnsafeTemporaryAllocation(of: CChar.self, capacity: 64) { text in
                guard inet_ntop(isV4 ? AF_INET : AF_INET6, bytes.baseAddress, text.baseAddress, 64) != nil else { return "?" }
                return String(cString: text.baseAddress!) + (isV4 ? "" : "/64")
            }
        }
    }
}

/// At most `maximum` connections open at once per client, for the whole process: one table
/// shared by every reactor.
///
/// A lock is taken twice per connection (open and close), never per message. A client's entry
/// is removed when its last connection closes, so the table holds only clients with connections
/// open: 100,000 of them take about 3.2 MB (a Swift dictionary of 8-byte keys and 4-byte counts
/// at most 75 % full: 262,144 buckets × 12 bytes plus the occupancy bitmap; ``tableBytes``),
/// checked by `testClientTableOf100000ClientsStaysWithinItsMemoryBound`. Swift dictionaries do not shrink,
/// so the table keeps the size of its busiest moment.
public final class ClientLimit: Sendable {
    /// The most connections one client may have open at once.
    public let maximum: Int
    private let table = Mutex<[ClientKey: UInt32]>([:])
    private let refused = Atomic<Int>(0)

    /// A limit of `maximum` connections per client.
    public init(maximum: Int) {
        precondition(maximum > 0, "a per-client limit must be positive")
        self.maximum = maximum
    }

    /// Takes a place for a new connection of `client`; false (and counted) when it has
    /// `maximum` open already. A true must be matched by exactly one ``release(_:)``.
    public func acquire(_ client: ClientKey) -> Bool {
        let taken = table.withLock { table -> Bool in
            let open = table[client, default: 0]
            guard open < maximum else { return false }
            table[client] = open + 1
            return true
        }
        if !taken { refused.add(1, ordering: .relaxed) }
        return taken
    }

    /// Takes a place for `client` even past ``maximum``: for a connection that exists already
    /// (handed over from another process at an upgrade). Counts no refusal.
    public func forceAcquire(_ client: ClientKey) {
        table.withLock { $0[client, default: 0] += 1 }
    }

    /// Gives back a place taken with ``acquire(_:)``.
    public func release(_ client: ClientKey) {
        table.withLock { table in
            guard let open = table[client] else {
                preconditionFailure("per-client place of \(client) given back twice")
            }
            if open <= 1 { table[client] = nil } else { table[client] = open - 1 }
        }
    }

    /// Connections open now by `client`.
    public func count(_ client: ClientKey) -> Int { table.withLock { Int($0[client] ?? 0) } }

    /// Clients with at least one connection open.
    public var clients: Int { table.withLock { $0.count } }

    /// Connections refused so far because their client was at the limit.
    public var rejected: Int { refused.load(ordering: .relaxed) }

    /// The bytes of the table's storage now: its buckets (key and count each) and the occupancy
    /// bitmap, one bit per bucket. This is what the documented memory bound is about.
    public var tableBytes: Int {
        table.withLock { table in
            let buckets = table.capacity == 0 ? 0 : (table.capacity * 4 + 2) / 3  // capacity is 3/4 of the buckets
            let bucketCount = buckets == 0 ? 0 : 1 << (Int.bitWidth - (buckets - 1).leadingZeroBitCount)
            return bucketCount * (MemoryLayout<ClientKey>.stride + MemoryLayout<UInt32>.stride) + bucketCount / 8
        }
    }
}
