import Glibc

/// The server's one dictionary of string keys and string values, binary safe, shared by every
/// reactor of the process under one lock.
///
/// Why shared under a lock, not one dictionary per reactor: Redis clients expect one keyspace
/// (`redis-cli --pipe` loads keys on one connection and `DBSIZE` on another must count them,
/// whichever reactor the kernel gave each connection to). The lock is taken once per read, not
/// once per command (see the server's handler), so with pipelining it costs a few nanoseconds
/// per request, and with one reactor it is never contended.
///
/// Why not Swift's `Dictionary`: looking a key up would need a `[UInt8]` built from the request
/// bytes, an allocation per command. This is an open-addressing table with linear probing and
/// backward-shift deletion. Each entry is one malloc block holding its key and value (like
/// Redis's embedded strings); a value overwritten by one that fits is overwritten in place, so
/// `SET` of an existing key allocates nothing. Keys are hashed with the standard library's
/// `Hasher` (SipHash with a per-process random seed), which keeps hash flooding out as Redis's
/// SipHash does.
///
/// Not thread-safe by itself: call ``lock()`` / ``unlock()`` around every use.
public final class Keyspace: @unchecked Sendable {
    /// A table slot: the key's hash (0: empty) and its entry.
    @usableFromInline struct Bucket {
        @usableFromInline var hash: UInt64
        @usableFromInline var entry: UnsafeMutableRawPointer?
    }

    /// An entry's header before its key and value bytes.
    @usableFromInline static let headerSize = 16

    // @exclusivity(unchecked): the keyspace lock already serialises every access, and the
    // dynamic exclusivity checks on these class properties were ~7% of the CPU at -P 16 (perf).
    @exclusivity(unchecked) @usableFromInline var buckets: UnsafeMutablePointer<Bucket>
    @exclusivity(unchecked) @usableFromInline var mask: Int
    /// Keys stored.
    @exclusivity(unchecked) public private(set) var count = 0
    /// Bytes the keys and values take: entries as allocated plus the table. This is what
    /// `--maxmemory` is compared with (the data, not the process's whole resident set).
    @exclusivity(unchecked) public private(set) var usedBytes = 0
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    public init(initialCapacity: Int = 1024) {
        var capacity = 16
        while capacity < initialCapacity { capacity *= 2 }
        buckets = .allocate(capacity: capacity)
        buckets.initialize(repeating: Bucket(hash: 0, entry: nil), count: capacity)
        mask = capacity - 1
        usedBytes = capacity * MemoryLayout<Bucket>.stride
        mutex = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        for i in 0...mask where buckets[i].hash != 0 { free(buckets[i].entry) }
        buckets.deallocate()
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    public func lock() { pthread_mutex_lock(mutex) }
    public func unlock() { pthread_mutex_unlock(mutex) }

    // MARK: entries

    @inlinable static func keyLength(_ e: UnsafeMutableRawPointer) -> Int { Int(e.load(as: UInt32.self)) }
    @inlinable static func valueLength(_ e: UnsafeMutableRawPointer) -> Int { Int(e.load(fromByteOffset: 4, as: UInt32.self)) }
    @inlinable static func valueCapacity(_ e: UnsafeMutableRawPointer) -> Int { Int(e.load(fromByteOffset: 8, as: UInt32.self)) }

    @inlinable static func key(_ e: UnsafeMutableRawPointer) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: e + headerSize, count: keyLength(e))
    }

    @inlinable static func value(_ e: UnsafeMutableRawPointer) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: e + headerSize + keyLength(e), count: valueLength(e))
    }

    /// Room for the value: at least 24 bytes, so that INCR's results (at most 20) never move.
    @inlinable static func capacity(for length: Int) -> Int { max(24, (length + 7) & ~7) }

    static func makeEntry(key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) -> (UnsafeMutableRawPointer, Int) {
        let capacity = Self.capacity(for: value.count)
        let size = headerSize + key.count + capacity
        guard let e = malloc(size) else { fatalError("out of memory for a \(size)-byte entry") }
        e.storeBytes(of: UInt32(key.count), as: UInt32.self)
        e.storeBytes(of: UInt32(value.count), toByteOffset: 4, as: UInt32.self)
        e.storeBytes(of: UInt32(capacity), toByteOffset: 8, as: UInt32.self)
        if let k = key.baseAddress { (e + headerSize).copyMemory(from: k, byteCount: key.count) }
        if let v = value.baseAddress { (e + headerSize + key.count).copyMemory(from: v, byteCount: value.count) }
        return (e, size)
    }

    // MARK: lookup

    @inlinable
    static func hash(_ key: UnsafeRawBufferPointer) -> UInt64 {
        var hasher = Hasher()
        hasher.combine(bytes: key)
        let h = UInt64(bitPattern: Int64(hasher.finalize()))
        return h == 0 ? 1 : h
    }

    /// The bucket holding `key`, or the empty bucket where it would go.
    @inlinable
    func find(_ key: UnsafeRawBufferPointer, hash: UInt64) -> (index: Int, found: Bool) {
        var i = Int(truncatingIfNeeded: hash) & mask
        while true {
            let b = buckets[i]
            if b.hash == 0 { return (i, false) }
            if b.hash == hash, let e = b.entry, Self.keyLength(e) == key.count,
               key.count == 0 || memcmp(e + Self.headerSize, key.baseAddress!, key.count) == 0 {
                return (i, true)
            }
            i = (i + 1) & mask
        }
    }

    /// The value of `key`, valid until the next change to the keyspace.
    @inlinable
    public func get(_ key: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? {
        let (i, found) = find(key, hash: Self.hash(key))
        return found ? Self.value(buckets[i].entry!) : nil
    }

    @inlinable
    public func contains(_ key: UnsafeRawBufferPointer) -> Bool {
        find(key, hash: Self.hash(key)).found
    }

    /// What ``set(_:_:condition:)`` of a `valueCount`-byte value under `key` would add to
    /// ``usedBytes``: 0 when the value fits where the old one is, the difference of the entries
    /// when it does not, and for a new key its entry plus the table's doubling if this key is
    /// the one that triggers it. So `--maxmemory` can refuse a write before it runs.
    public func growth(ifSetting key: UnsafeRawBufferPointer, valueCount: Int) -> Int {
        let (i, found) = find(key, hash: Self.hash(key))
        let size = Self.headerSize + key.count + Self.capacity(for: valueCount)
        guard found else {
            let tableGrowth = (count + 1) * 4 > (mask + 1) * 3 ? (mask + 1) * MemoryLayout<Bucket>.stride : 0
            return size + tableGrowth
        }
        let e = buckets[i].entry!
        let capacity = Self.valueCapacity(e)
        guard valueCount > capacity else { return 0 }
        return size - (Self.headerSize + Self.keyLength(e) + capacity)
    }

    public enum SetCondition { case always, ifAbsent, ifPresent }

    /// Stores `value` under `key` (if `condition` allows); returns whether it did.
    @discardableResult
    public func set(_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer, condition: SetCondition = .always) -> Bool {
        let hash = Self.hash(key)
        let (i, found) = find(key, hash: hash)
        if found {
            if condition == .ifAbsent { return false }
            let e = buckets[i].entry!
            let capacity = Self.valueCapacity(e)
            if value.count <= capacity {
                // In place: SET over an existing key allocates nothing.
                if let v = value.baseAddress { (e + Self.headerSize + Self.keyLength(e)).copyMemory(from: v, byteCount: value.count) }
                e.storeBytes(of: UInt32(value.count), toByteOffset: 4, as: UInt32.self)
                return true
            }
            let oldSize = Self.headerSize + Self.keyLength(e) + capacity
            let (replacement, size) = Self.makeEntry(key: key, value: value)
            free(e)
            buckets[i].entry = replacement
            usedBytes += size - oldSize
            return true
        }
        if condition == .ifPresent { return false }
        let (e, size) = Self.makeEntry(key: key, value: value)
        buckets[i] = Bucket(hash: hash, entry: e)
        count += 1
        usedBytes += size
        // Load factor 3/4: linear probing stays short.
        if count * 4 > (mask + 1) * 3 { grow() }
        return true
    }

    /// Removes `key`; returns whether it was there.
    @discardableResult
    public func remove(_ key: UnsafeRawBufferPointer) -> Bool {
        var (i, found) = find(key, hash: Self.hash(key))
        guard found else { return false }
        let e = buckets[i].entry!
        usedBytes -= Self.headerSize + Self.keyLength(e) + Self.valueCapacity(e)
        free(e)
        count -= 1
        // Backward-shift deletion: pull later members of the probe run into the hole, so no
        // tombstones build up and lookups stay as short as at insertion.
        var j = i
        while true {
            j = (j + 1) & mask
            let b = buckets[j]
            if b.hash == 0 { break }
            let home = Int(truncatingIfNeeded: b.hash) & mask
            // Move b into the hole at i unless its home lies cyclically in (i, j].
            let inRange = i <= j ? (home > i && home <= j) : (home > i || home <= j)
            if !inRange {
                buckets[i] = b
                i = j
            }
        }
        buckets[i] = Bucket(hash: 0, entry: nil)
        return true
    }

    /// Removes every key (FLUSHALL), and gives the table's memory back.
    public func removeAll() {
        for i in 0...mask where buckets[i].hash != 0 { free(buckets[i].entry) }
        buckets.deallocate()
        buckets = .allocate(capacity: 1024)
        buckets.initialize(repeating: Bucket(hash: 0, entry: nil), count: 1024)
        mask = 1023
        count = 0
        usedBytes = 1024 * MemoryLayout<Bucket>.stride
    }

    private func grow() {
        let old = buckets
        let oldCapacity = mask + 1
        let capacity = oldCapacity * 2
        buckets = .allocate(capacity: capacity)
        buckets.initialize(repeating: Bucket(hash: 0, entry: nil), count: capacity)
        mask = capacity - 1
        for i in 0..<oldCapacity where old[i].hash != 0 {
            var j = Int(truncatingIfNeeded: old[i].hash) & mask
            while buckets[j].hash != 0 { j = (j + 1) & mask }
            buckets[j] = old[i]
        }
        old.deallocate()
        usedBytes += (capacity - oldCapacity) * MemoryLayout<Bucket>.stride
    }
}
