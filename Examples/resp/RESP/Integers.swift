/// Redis's rules for integers in requests and values (`string2ll` in redis/src/util.c): an
/// optional `-`, then either `0` alone or a digit 1-9 followed by digits, at most 20 bytes, and
/// within Int64. No sign `+`, no spaces, no leading zeros, no `-0`.
public enum Integers {
    @inline(__always)
    public static func parse(_ bytes: UnsafeRawBufferPointer) -> Int64? {
        let n = bytes.count
        guard n > 0, n < 21 else { return nil }
        if n == 1 && bytes[0] == UInt8(ascii: "0") { return 0 }
        var i = 0
        let negative = bytes[0] == UInt8(ascii: "-")
        if negative {
            i = 1
            guard n > 1 else { return nil }
        }
        let first = bytes[i] &- UInt8(ascii: "0")
        guard first >= 1 && first <= 9 else { return nil }
        var value = UInt64(first)
        i += 1
        while i < n {
            let digit = bytes[i] &- UInt8(ascii: "0")
            guard digit <= 9 else { return nil }
            let (times10, o1) = value.multipliedReportingOverflow(by: 10)
            let (sum, o2) = times10.addingReportingOverflow(UInt64(digit))
            guard !o1, !o2 else { return nil }
            value = sum
            i += 1
        }
        if negative {
            guard value <= UInt64(Int64.max) + 1 else { return nil }
            return value == UInt64(Int64.max) + 1 ? Int64.min : -Int64(value)
        }
        guard value <= UInt64(Int64.max) else { return nil }
        return Int64(value)
    }

    /// Writes `value` in decimal at `out` (room for 20 bytes needed); returns the byte count.
    @inline(__always)
    public static func format(_ value: Int64, into out: UnsafeMutableRawPointer) -> Int {
        var magnitude = value.magnitude
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes of scratch on the stack
        return withUnsafeMutableBytes(of: &digits) { scratch in
            var at = scratch.count
            repeat {
                at -= 1
                scratch[at] = UInt8(ascii: "0") &+ UInt8(magnitude % 10)
                magnitude /= 10
            } while magnitude != 0
            if value < 0 {
                at -= 1
                scratch[at] = UInt8(ascii: "-")
            }
            let length = scratch.count - at
            out.copyMemory(from: scratch.baseAddress! + at, byteCount: length)
            return length
        }
    }
}
