import Reactor

/// A per-source token bucket with a table of fixed size: `rate` datagrams per second per source,
/// with a burst of `rate` (one second's worth). A source is an IPv4 address or an IPv6 /64 (one
/// host usually owns a whole /64, so counting single IPv6 addresses would let it multiply its
/// rate by 2^64).
///
/// Memory is bounded whatever the number of sources: the table is allocated once with
/// ``capacity`` entries of ``entrySize`` bytes (the default: 8,192 × 24 B = 192 KiB per reactor)
/// and never grows. It is 4-way set associative: a new source takes the least recently seen
/// entry of its set. A source evicted that way starts again with a full burst, so a flood of
/// distinct forged sources can give one victim at most one extra burst per turn of the whole
/// table (8,192 forged datagrams, randomly spread over the sets by a per-process hash key); the
/// replies to it still never outnumber the datagrams the attacker sent.
///
/// One limiter per reactor, used only on its thread. With several reactors, SO_REUSEPORT spreads
/// a source's ports over them, so a source that uses many ports gets up to `rate` per reactor.
public final class SourceRateLimiter {
    /// Datagrams per second per source, and the burst.
    public let rate: Int
    /// Entries in the table (a power of two).
    public let capacity: Int
    /// Bytes per entry.
    public static let entrySize = MemoryLayout<Entry>.stride
    /// Why 8,192: a reactor tracks that many recently active sources exactly; beyond that only
    /// the least recently seen are forgotten, which costs them nothing and a forger little.
    public static let defaultCapacity = 8_192
    static let ways = 4
    /// Tokens are counted in thousandths of a datagram, so that refill needs no division per
    /// datagram finer than a microsecond.
    static let unit: Int64 = 1_000

    @usableFromInline
    struct Entry {
        /// IPv4: 0xFFFF_FFFF_0000_0000 | address (an IPv6 /64 with that prefix is multicast,
        /// refused before the limiter, so the two never collide). IPv6: the /64 prefix.
        var key: UInt64 = 0
        /// When the source was last seen (monotonic ns); 0: the entry is empty.
        var last: Int64 = 0
        /// Tokens left, in thousandths of a datagram.
        var tokens: Int64 = 0
    }

    @usableFromInline let table: UnsafeMutablePointer<Entry>
    let setMask: Int
    let hashKey: UInt64
    /// Entries in use, for tests and metrics: at most ``capacity``.
    public private(set) var occupied = 0

    /// - Parameters:
    ///   - rate: datagrams per second per source (and burst); positive.
    ///   - capacity: entries in the table, rounded up to a power of two of at least 4.
    public init(rate: Int, capacity: Int = SourceRateLimiter.defaultCapacity) {
        precondition(rate > 0, "rate must be positive")
        var size = Self.ways
        while size < capacity { size <<= 1 }
        self.rate = rate
        self.capacity = size
        setMask = size / Self.ways - 1
        table = .allocate(capacity: size)
        table.initialize(repeating: Entry(), count: size)
        var seed = SystemRandomNumberGenerator()
        hashKey = seed.next() | 1
    }

    deinit { table.deallocate() }

    /// The table's size in bytes: fixed at creation.
    public var tableBytes: Int { capacity * Self.entrySize }

    /// The key of a source: its IPv4 address or its IPv6 /64.
    @inlinable
    public static func key(_ source: DatagramSource) -> UInt64 {
        if let v4 = source.ipv4 { return 0xFFFF_FFFF_0000_0000 | UInt64(v4) }
        return source.ipv6?.prefix ?? 0
    }

    /// Whether the source may have one more datagram answered at `now` (monotonic ns); takes
    /// a token when it may.
    public func admit(_ source: DatagramSource, now: Int64) -> Bool {
        admit(key: Self.key(source), now: now)
    }

    /// ``admit(_:now:)`` by key.
    public func admit(key: UInt64, now: Int64) -> Bool {
        let burst = Int64(rate) * Self.unit
        let set = Int(truncatingIfNeeded: (key &* hashKey) >> 40) & setMask
        let base = table + set * Self.ways
        var victim = 0
        var oldest = Int64.max
        for w in 0..<Self.ways {
            let entry = base + w
            if entry.pointee.last != 0 && entry.pointee.key == key {
                // Refill for the time since the last datagram, up to the burst; a second or more
                // refills completely (and keeps the product far from overflow).
                let elapsed = min(max(now - entry.pointee.last, 0), 1_000_000_000)
                let refill = elapsed * Int64(rate) / 1_000_000  // ns × per-second / 10^6 = thousandths
                entry.pointee.tokens = min(burst, entry.pointee.tokens + refill)
                entry.pointee.last = now
                guard entry.pointee.tokens >= Self.unit else { return false }
                entry.pointee.tokens -= Self.unit
                return true
            }
            if entry.pointee.last < oldest {
                oldest = entry.pointee.last
                victim = w
            }
        }
        let entry = base + victim
        if entry.pointee.last == 0 { occupied += 1 }
        entry.pointee = Entry(key: key, last: max(now, 1), tokens: burst - Self.unit)
        return true
    }
}
