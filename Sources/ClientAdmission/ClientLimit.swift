import Glibc
import Reactor
import Synchronization

/// Who counts as one client for a per-client connection limit: an IPv4 address, or an IPv6 /64
/// (one site or host usually holds a whole /64, so limiting single IPv6 addresses limits nothing).
///
/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a dual-stack listener reports for IPv4
/// clients) count as the IPv4 address, not as the /64 that would group every IPv4 client. Every
/// other IPv6 address is keyed by its /64 under the IPv6 family, so no IPv6 source (a forged
/// PROXY source such as `ffff:ffff:100:7f::`, `::ffff:0:7f00:1` or `7f00:1::` included) can
/// share an IPv4 client's place: the family is part of the key, not a tag inside the number.
public struct ClientKey: Hashable, Sendable, CustomStringConvertible {
    /// The IPv4 address (network order, in the low 32 bits), or the IPv6 /64 prefix as a
    /// big-endian number.
    let value: UInt64
    /// Which family ``value`` belongs to.
    let isIPv4: Bool

    /// The tag 0.2.0 put above an IPv4 address in a single 64-bit key; kept for the hand-over
    /// record, which carries keys in that form (ClientLimitHandOver.swift).
    static let ipv4Tag: UInt64 = 0xFFFF_FFFF_0000_0000

    init(value: UInt64, isIPv4: Bool) {
        self.value = isIPv4 ? value & 0xFFFF_FFFF : value
        self.isIPv4 = isIPv4
    }

    /// The client an address belongs to.
    public init(_ address: ProxyAddress) {
        self = address.withAddressBytes { ClientKey(bytes: $0) }
    }

    /// The client of a connection's peer; nil for a Unix-domain peer. Allocates nothing.
    public init?(_ peer: SocketAddress) {
        guard let key = peer.withIPAddressBytes({ ClientKey(bytes: $0) }) else { return nil }
        self = key
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
            self.init(value: UInt64(bytes.loadUnaligned(as: UInt32.self)), isIPv4: true)
            return
        }
        let mapped = bytes[0..<10].allSatisfy { $0 == 0 } && bytes[10] == 0xFF && bytes[11] == 0xFF
        if mapped {
            self.init(value: UInt64(bytes.loadUnaligned(fromByteOffset: 12, as: UInt32.self)), isIPv4: true)
        } else {
            self.init(value: UInt64(bigEndian: bytes.loadUnaligned(as: UInt64.self)), isIPv4: false)
        }
    }

    public var description: String {
        var raw: (UInt64, UInt64) = (isIPv4 ? value : value.bigEndian, 0)
        return withUnsafeBytes(of: &raw) { bytes in
            withUnsafeTemporaryAllocation(of: CChar.self, capacity: 64) { text in
                guard inet_ntop(isIPv4 ? AF_INET : AF_INET6, bytes.baseAddress, text.baseAddress, 64) != nil else { return "?" }
                return String(cString: text.baseAddress!) + (isIPv4 ? "" : "/64")
            }
        }
    }
}

/// At most `maximum` connections open at once per client, for the whole process: one table
/// shared by every reactor.
///
/// A lock is taken twice per connection (open and close), never per message. A client's entry
/// is removed when its last connection closes, so the table holds only clients with connections
/// open. IPv4 clients and IPv6 /64s live in two dictionaries (4-byte and 8-byte keys, 4-byte
/// counts), so the families never collide and an IPv4 entry costs 8 bytes a bucket:
/// 100,000 clients, half of each family, take about 2.6 MB (``tableBytes``: buckets at most
/// 75 % full, plus the occupancy bitmaps), checked by
/// `testClientTableOf100000ClientsStaysWithinItsMemoryBound`. Swift dictionaries do not shrink,
/// so the table keeps the size of its busiest moment.
public final class ClientLimit: Sendable {
    /// The most connections one client may have open at once.
    public let maximum: Int
    private let table = Mutex<Table>(Table())
    private let refused = Atomic<Int>(0)

    /// Open connections per client, one dictionary per family.
    struct Table {
        var v4: [UInt32: UInt32] = [:]
        var v6: [UInt64: UInt32] = [:]

        subscript(key: ClientKey) -> UInt32? {
            get { key.isIPv4 ? v4[UInt32(truncatingIfNeeded: key.value)] : v6[key.value] }
            set {
                if key.isIPv4 { v4[UInt32(truncatingIfNeeded: key.value)] = newValue } else { v6[key.value] = newValue }
            }
        }

        var count: Int { v4.count + v6.count }

        /// One more connection for `key` unless it has `maximum` already: one hash, where a
        /// read and a write of the subscript above took two (about 300 user instructions per
        /// connect / close cycle for the pair with ``give(_:)``, callgrind 2026-12-07).
        mutating func take(_ key: ClientKey, maximum: Int) -> Bool {
            key.isIPv4 ? Self.take(&v4, UInt32(truncatingIfNeeded: key.value), maximum)
                : Self.take(&v6, key.value, maximum)
        }

        /// One connection less for `key`, its entry removed with its last one; false if it had none.
        mutating func give(_ key: ClientKey) -> Bool {
            key.isIPv4 ? Self.give(&v4, UInt32(truncatingIfNeeded: key.value)) : Self.give(&v6, key.value)
        }

        private static func take<Key: Hashable>(_ counts: inout [Key: UInt32], _ key: Key, _ maximum: Int) -> Bool {
            var taken = false
            // A missing key is added with 0 and taken at once (maximum > 0): no empty entry stays.
            Self.bump(&counts[key, default: 0], maximum, &taken)
            return taken
        }

        private static func bump(_ open: inout UInt32, _ maximum: Int, _ taken: inout Bool) {
            guard Int(open) < maximum else { return }
            open += 1
            taken = true
        }

        private static func give<Key: Hashable>(_ counts: inout [Key: UInt32], _ key: Key) -> Bool {
            guard let index = counts.index(forKey: key) else { return false }
            if counts.values[index] <= 1 { counts.remove(at: index) } else { counts.values[index] -= 1 }
            return true
        }
    }

    /// A limit of `maximum` connections per client.
    public init(maximum: Int) {
        precondition(maximum > 0, "a per-client limit must be positive")
        self.maximum = maximum
    }

    /// Takes a place for a new connection of `client`; false (and counted) when it has
    /// `maximum` open already. A true must be matched by exactly one ``release(_:)``.
    public func acquire(_ client: ClientKey) -> Bool {
        let taken = table.withLock { $0.take(client, maximum: maximum) }
        if !taken { refused.add(1, ordering: .relaxed) }
        return taken
    }

    /// Takes a place for `client` even past ``maximum``: for a connection that exists already
    /// (handed over from another process at an upgrade). Counts no refusal.
    public func forceAcquire(_ client: ClientKey) {
        table.withLock { $0[client] = ($0[client] ?? 0) + 1 }
    }

    /// Gives back a place taken with ``acquire(_:)``.
    public func release(_ client: ClientKey) {
        let given = table.withLock { $0.give(client) }
        precondition(given, "per-client place of \(client) given back twice")
    }

    /// Connections open now by `client`.
    public func count(_ client: ClientKey) -> Int { table.withLock { Int($0[client] ?? 0) } }

    /// Clients with at least one connection open.
    public var clients: Int { table.withLock { $0.count } }

    /// Connections refused so far because their client was at the limit.
    public var rejected: Int { refused.load(ordering: .relaxed) }

    /// The bytes of the table's storage now: each dictionary's buckets (key and count each) and
    /// its occupancy bitmap, one bit per bucket. This is what the documented memory bound is about.
    public var tableBytes: Int {
        table.withLock { table in
            Self.storageBytes(capacity: table.v4.capacity, entry: MemoryLayout<UInt32>.stride + MemoryLayout<UInt32>.stride)
                + Self.storageBytes(capacity: table.v6.capacity, entry: MemoryLayout<UInt64>.stride + MemoryLayout<UInt32>.stride)
        }
    }

    private static func storageBytes(capacity: Int, entry: Int) -> Int {
        let buckets = capacity == 0 ? 0 : (capacity * 4 + 2) / 3  // capacity is 3/4 of the buckets
        let bucketCount = buckets == 0 ? 0 : 1 << (Int.bitWidth - (buckets - 1).leadingZeroBitCount)
        return bucketCount * entry + bucketCount / 8
    }
}
