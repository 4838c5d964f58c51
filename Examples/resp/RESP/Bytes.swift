import Glibc

/// A growable run of bytes in memory this type manages itself: appending never checks
/// uniqueness or exclusivity (it is not a Swift array), and the storage stays at one address
/// between appends, so pointers into it stay valid while nothing is appended.
///
/// A plain struct with an explicit ``free()``: its owner (a class with a `deinit`) decides when
/// the memory goes back, so per-connection state can hold one without a class of its own.
public struct ByteList {
    public private(set) var base: UnsafeMutableRawPointer?
    public private(set) var count = 0
    public private(set) var capacity = 0

    public init() {}

    public var isEmpty: Bool { count == 0 }

    /// The bytes held, valid until the next append, removal or ``free()``.
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    /// Makes room for `extra` more bytes, growing by doubling.
    @inline(__always)
    public mutating func reserve(_ extra: Int) {
        if count + extra > capacity { grow(to: count + extra) }
    }

    @inline(never)
    mutating func grow(to needed: Int) {
        var newCapacity = max(capacity, 64)
        while newCapacity < needed { newCapacity *= 2 }
        guard let grown = realloc(base, newCapacity) else { fatalError("out of memory growing a buffer to \(newCapacity) bytes") }
        base = grown
        capacity = newCapacity
    }

    @inline(__always)
    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard let source = bytes.baseAddress, !bytes.isEmpty else { return }
        reserve(bytes.count)
        (base! + count).copyMemory(from: source, byteCount: bytes.count)
        count += bytes.count
    }

    @inline(__always)
    public mutating func append(_ byte: UInt8) {
        reserve(1)
        base!.storeBytes(of: byte, toByteOffset: count, as: UInt8.self)
        count += 1
    }

    /// Where the next `n` bytes go: write them, then call ``commit(_:)``.
    @inline(__always)
    public mutating func tail(reserving n: Int) -> UnsafeMutableRawPointer {
        reserve(n)
        return base! + count
    }

    @inline(__always)
    public mutating func commit(_ n: Int) { count += n }

    /// Forgets the bytes, keeping the memory.
    @inline(__always)
    public mutating func removeAll() { count = 0 }

    /// Drops the first `n` bytes (moving the rest to the front).
    public mutating func removeFirst(_ n: Int) {
        precondition(n <= count)
        if n == count { count = 0; return }
        memmove(base!, base! + n, count - n)
        count -= n
    }

    /// Gives the memory back.
    public mutating func free() {
        Glibc.free(base)
        base = nil
        count = 0
        capacity = 0
    }
}

/// A growable list of `Int`s with the same rules as ``ByteList``: the (start, length) pairs of
/// a request's arguments.
public struct IntList {
    public private(set) var base: UnsafeMutablePointer<Int>?
    public private(set) var count = 0
    private var capacity = 0

    public init() {}

    @inline(__always)
    public mutating func append(_ a: Int, _ b: Int) {
        if count + 2 > capacity { grow() }
        base![count] = a
        base![count + 1] = b
        count += 2
    }

    @inline(never)
    mutating func grow() {
        let newCapacity = max(capacity * 2, 16)
        guard let raw = realloc(base, newCapacity * MemoryLayout<Int>.stride) else {
            fatalError("out of memory growing an argument list to \(newCapacity) entries")
        }
        base = raw.assumingMemoryBound(to: Int.self)
        capacity = newCapacity
    }

    @inline(__always)
    public mutating func removeAll() { count = 0 }

    public mutating func free() {
        Glibc.free(base)
        base = nil
        count = 0
        capacity = 0
    }
}
