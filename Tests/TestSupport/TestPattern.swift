// Test bytes: deterministic, non-periodic, so that a lost, duplicated or reordered chunk never
// matches by chance.

/// Deterministic, non-periodic test bytes: a reordered, lost or duplicated chunk never matches.
public func testPattern(count: Int, seed: UInt64 = 0x9E37_79B9_7F4A_7C15) -> [UInt8] {
    var state = seed
    var out = [UInt8](repeating: 0, count: count)
    var i = 0
    while i < count {
        // SplitMix64
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        for shift in stride(from: 0, to: 64, by: 8) where i < count {
            out[i] = UInt8(truncatingIfNeeded: z >> UInt64(shift))
            i += 1
        }
    }
    return out
}

/// The index of the first byte where `a` and `b` differ (or the shorter length), nil if equal.
public func firstDifference(_ a: [UInt8], _ b: [UInt8]) -> Int? {
    let n = min(a.count, b.count)
    var i = 0
    while i < n {
        if a[i] != b[i] { return i }
        i += 1
    }
    return a.count == b.count ? nil : n
}

/// An endless test byte stream: a non-periodic block of prime length, repeated. Cheap to send
/// and to check at any offset, and a lost, duplicated or reordered chunk does not match.
public struct PatternStream: Sendable {
    /// One period of the stream.
    public let block: [UInt8]

    /// A stream whose block is `period` bytes (a prime by default).
    public init(period: Int = 1_048_573) { block = testPattern(count: period) }

    /// `count` bytes of the stream from `offset`.
    public func bytes(from offset: Int, count: Int) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(count)
        var position = offset % block.count
        var left = count
        while left > 0 {
            let take = min(left, block.count - position)
            out += block[position..<(position + take)]
            left -= take
            position = 0
        }
        return out
    }

    /// The offset of the first byte of `received` (stream offset `offset` onwards) that is not the
    /// stream's, or nil if all match.
    public func firstMismatch(_ received: [UInt8], at offset: Int = 0) -> Int? {
        block.withUnsafeBufferPointer { b in
            received.withUnsafeBufferPointer { r in
                var position = offset % b.count
                for i in 0..<r.count {
                    if r[i] != b[position] { return offset + i }
                    position += 1
                    if position == b.count { position = 0 }
                }
                return nil
            }
        }
    }
}

/// `count` bytes cycling through every byte value, starting at `start`.
public func everyByteValue(count: Int, start: Int = 0) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 + start) }
}
