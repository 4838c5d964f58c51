import Glibc

/// Finds the exit line in a byte stream cut into arbitrary segments.
///
/// The exit line is exactly `exit` followed by `\n` or `\r\n`, at the start of the stream or
/// right after a `\n`. The detector is a few bytes of state: whether the next byte starts a line,
/// how many bytes of a candidate `exit\r` it has matched, and how many of those were already
/// released as data. Held-back bytes are released as data as soon as the line turns out to be
/// something else (`exits`, `exit now`), at end of input (`exit` with no newline is data), or
/// when the caller gives up waiting for the rest of the line (``releaseHeld()``, the bounded
/// hold). A released candidate is still tracked: if the line then completes as an exit line, the
/// verdict still says exit, and only the released part was echoed.
///
/// Everything else is data, byte for byte: NUL, 0xFF and lone CR included.
public struct ExitLineDetector: Sendable, Equatable {
    /// The next byte starts a line.
    @usableFromInline var atLineStart = true
    /// Bytes of `exit\r` matched so far by a candidate that began in an earlier segment.
    @usableFromInline var held: UInt8 = 0
    /// How many of the `held` bytes were already released as data (``releaseHeld()``).
    @usableFromInline var released: UInt8 = 0

    /// A new detector, at the start of a stream.
    public init() {}

    /// What to do with one segment.
    public struct Verdict: Equatable, Sendable {
        /// Write this many bytes of ``ExitLineDetector/candidate``, starting at
        /// ``releaseFrom``, first: bytes held back from earlier segments that turned out to be data.
        public var release: Int
        /// Then write this many bytes from the start of the segment.
        public var echo: Int
        /// The exit line ended in this segment: close after writing; the rest is discarded.
        public var exit: Bool
        /// Where in ``ExitLineDetector/candidate`` the released bytes start: after the part
        /// already released by ``ExitLineDetector/releaseHeld()``.
        public var releaseFrom: Int

        @inlinable
        public init(release: Int, echo: Int, exit: Bool, releaseFrom: Int = 0) {
            self.release = release
            self.echo = echo
            self.exit = exit
            self.releaseFrom = releaseFrom
        }

        /// The bytes of ``ExitLineDetector/candidate`` to write first.
        @inlinable
        public var released: Range<Int> { releaseFrom..<(releaseFrom + release) }
    }

    /// Bytes held back that were not released yet: while this is non-zero, the caller should
    /// bound how long it waits for the rest of the line.
    @inlinable
    public var unreleased: Int { Int(held) - Int(released) }

    /// Gives up waiting for the rest of the line: the held bytes not yet released become data
    /// now. Returns the range of ``candidate`` to write (empty if nothing was held). The line is
    /// still tracked: ``scan(_:clearUpTo:)`` reports exit if it completes as an exit line.
    public mutating func releaseHeld() -> Range<Int> {
        let range = Int(released)..<Int(held)
        released = held
        return range
    }

    /// The bytes a candidate holds back are always a prefix of this.
    public static let candidate: StaticString = "exit\r"

    private static let newline = UInt8(ascii: "\n")
    private static let carriageReturn = UInt8(ascii: "\r")

    /// Advances a candidate that has matched `matched` bytes by one byte.
    /// Returns the new count, `nil` when the byte ends the exit line, or -1 when it breaks it.
    @inline(__always)
    private static func step(_ matched: UInt8, _ byte: UInt8) -> Int8? {
        switch matched {
        case 0: return byte == UInt8(ascii: "e") ? 1 : -1
        case 1: return byte == UInt8(ascii: "x") ? 2 : -1
        case 2: return byte == UInt8(ascii: "i") ? 3 : -1
        case 3: return byte == UInt8(ascii: "t") ? 4 : -1
        case 4: return byte == newline ? nil : (byte == carriageReturn ? 5 : -1)
        default: return byte == newline ? nil : -1
        }
    }

    /// The common case of ``scan(_:clearUpTo:)``, small enough to inline into the echo: nothing is held
    /// back and no line in the segment starts with `e`, so the whole segment is data. Returns nil
    /// then (with the state advanced, as `scan` would). Otherwise it changes nothing and returns
    /// how far the segment is known to hold no line that starts with `e`: pass that to
    /// ``scan(_:clearUpTo:)`` so that it does not search those bytes again (on a binary bulk
    /// stream most 64 KiB segments hold a `\ne` somewhere: 1 in 65,536 positions).
    @inlinable @inline(__always)
    public mutating func skim(_ bytes: UnsafeRawBufferPointer) -> Int? {
        let n = bytes.count
        guard held == 0, n > 0, let base = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return 0 }
        if atLineStart && base[0] == UInt8(ascii: "e") { return 0 }
        if let q = LineStartScan.newlineBeforeE(base, n, from: 0) { return q }
        atLineStart = base[n - 1] == UInt8(ascii: "\n")
        return nil
    }

    /// Scans one segment and says what to write. Bytes after an exit line are not looked at.
    ///
    /// The common case is one vector pass over the segment: only a line that starts with `e` is
    /// looked at more closely. `clearUpTo` is what ``skim(_:)`` returned: no line starts with `e`
    /// inside the segment before that index (it is ignored while a candidate is held).
    public mutating func scan(_ bytes: UnsafeRawBufferPointer, clearUpTo clear: Int = 0) -> Verdict {
        let n = bytes.count
        guard n > 0, let base = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) else {
            return Verdict(release: 0, echo: 0, exit: false)
        }
        if held > 0 {
            // A candidate from earlier segments continues here.
            var matched = held
            var i = 0
            while i < n {
                guard let next = Self.step(matched, base[i]) else {
                    self = ExitLineDetector()
                    return Verdict(release: 0, echo: 0, exit: true)
                }
                if next < 0 { break }
                matched = UInt8(next)
                i += 1
            }
            if i == n {
                held = matched
                return Verdict(release: 0, echo: 0, exit: false)
            }
            // Broken at base[i]: the held bytes not yet released and base[0..<i] are ordinary
            // data, and the line goes on (unless base[i] is its newline, which the search below finds).
            let releaseFrom = Int(released)
            let release = Int(held) - releaseFrom
            held = 0
            released = 0
            return finishScan(base, n, from: i, lineStart: -1, release: release, releaseFrom: releaseFrom)
        }
        return finishScan(base, n, from: 0, lineStart: atLineStart ? 0 : -1, release: 0, releaseFrom: 0, clear: clear)
    }

    /// Finishes a segment from `from`: checks the line that starts at `lineStart` (if any), then
    /// every other line that starts with `e`, which the search below finds without looking at
    /// lines one by one.
    @inline(__always)
    private mutating func finishScan(_ base: UnsafePointer<UInt8>, _ n: Int, from: Int, lineStart: Int,
                                     release: Int, releaseFrom: Int, clear: Int = 0) -> Verdict {
        if lineStart >= 0 && lineStart < n && base[lineStart] == UInt8(ascii: "e") {
            if let verdict = candidate(base, n, at: lineStart, release: release, releaseFrom: releaseFrom) { return verdict }
        }
        var p = max(from, clear)
        while let q = Self.newlineBeforeE(base, n, from: p) {
            if let verdict = candidate(base, n, at: q + 1, release: release, releaseFrom: releaseFrom) { return verdict }
            p = q + 1
        }
        atLineStart = base[n - 1] == Self.newline
        return Verdict(release: release, echo: n, exit: false, releaseFrom: releaseFrom)
    }

    /// Matches a candidate exit line starting at `start`: the verdict if it is the exit line or
    /// runs to the end of the segment (held back), nil if it turns out to be data.
    @inline(__always)
    private mutating func candidate(_ base: UnsafePointer<UInt8>, _ n: Int, at start: Int,
                                    release: Int, releaseFrom: Int) -> Verdict? {
        var matched: UInt8 = 0
        var j = start
        while j < n {
            guard let next = Self.step(matched, base[j]) else {
                self = ExitLineDetector()
                return Verdict(release: release, echo: start, exit: true, releaseFrom: releaseFrom)
            }
            if next < 0 { return nil }
            matched = UInt8(next)
            j += 1
        }
        held = matched
        released = 0
        atLineStart = false
        return Verdict(release: release, echo: start, exit: false, releaseFrom: releaseFrom)
    }

    /// The first index `q >= from` with `base[q] == "\n"` and `base[q + 1] == "e"`: the only
    /// places inside a segment where an exit line can start. (See ``LineStartScan``: AVX2 where
    /// the CPU has it, 16-byte vectors elsewhere.)
    @inline(__always)
    static func newlineBeforeE(_ base: UnsafePointer<UInt8>, _ n: Int, from: Int) -> Int? {
        LineStartScan.newlineBeforeE(base, n, from: from)
    }

    /// End of input: bytes still held back (and not released yet) are data. Returns the range
    /// of ``candidate`` to write.
    public mutating func finish() -> Range<Int> {
        let range = Int(released)..<Int(held)
        self = ExitLineDetector()
        return range
    }
}
