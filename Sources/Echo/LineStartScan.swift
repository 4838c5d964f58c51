import CScan

/// Finds the places inside a segment where an exit line can start: a `\n` followed by `e`.
///
/// This is the whole per-byte cost of the exit line on a bulk stream, so it is vectorised. On a
/// CPU with AVX2 the C function `cscan_newline_before_e_avx2` (module CScan) checks 64 positions
/// per step; it is compiled for AVX2 by a function attribute, not a global `-mavx2`, and chosen at
/// run time, so the same binary runs on any x86-64. Elsewhere (no AVX2, or not x86-64) a portable
/// loop checks 16 positions per step with Swift's SIMD types (SSE2 on x86-64, NEON on arm64).
@usableFromInline
enum LineStartScan {
    /// The first index `q >= from` with `base[q] == "\n"` and `base[q + 1] == "e"`, or nil.
    @inlinable @inline(__always)
    static func newlineBeforeE(_ base: UnsafePointer<UInt8>, _ n: Int, from: Int) -> Int? {
        // A load and a bit test of the CPU features word that the C runtime fills in at start.
        if cscan_has_avx2() != 0 { return wide(base, n, from: from) }
        return narrow(base, n, from: from)
    }

    /// The AVX2 scan. Only call it where `cscan_has_avx2()` is true.
    @inlinable @inline(__always)
    static func wide(_ base: UnsafePointer<UInt8>, _ n: Int, from: Int) -> Int? {
        let q = cscan_newline_before_e_avx2(base, n, from)
        return q < 0 ? nil : q
    }

    /// Sixteen positions per step, comparing the segment and the segment shifted by one, so the
    /// cost does not depend on how long the lines are. (One memchr per line cost 40 % of the
    /// server's CPU on a bulk stream of 100-byte lines, measured with perf; this loop 11 %.
    /// Wider steps in Swift measured worse: `any` on a SIMD32 mask is not inlined, and two SIMD16
    /// masks OR-ed per step compiled to slower code.)
    @inlinable @inline(__always)
    static func narrow(_ base: UnsafePointer<UInt8>, _ n: Int, from: Int) -> Int? {
        var q = from
        let raw = UnsafeRawPointer(base)
        let newlines = SIMD16<UInt8>(repeating: UInt8(ascii: "\n"))
        let es = SIMD16<UInt8>(repeating: UInt8(ascii: "e"))
        while q + 17 <= n {
            let hits = (raw.loadUnaligned(fromByteOffset: q, as: SIMD16<UInt8>.self) .== newlines)
                .& (raw.loadUnaligned(fromByteOffset: q + 1, as: SIMD16<UInt8>.self) .== es)
            if any(hits) {
                for lane in 0..<16 where hits[lane] { return q + lane }
            }
            q += 16
        }
        guard q + 1 < n else { return nil }
        if n >= 17 {
            // The rest in one vector that ends at the last byte, overlapping what was checked.
            let start = n - 17
            let hits = (raw.loadUnaligned(fromByteOffset: start, as: SIMD16<UInt8>.self) .== newlines)
                .& (raw.loadUnaligned(fromByteOffset: start + 1, as: SIMD16<UInt8>.self) .== es)
            if any(hits) {
                for lane in (q - start)..<16 where hits[lane] { return start + lane }
            }
            return nil
        }
        while q + 1 < n {
            if base[q] == UInt8(ascii: "\n") && base[q + 1] == UInt8(ascii: "e") { return q }
            q += 1
        }
        return nil
    }
}
