import Glibc

/// Finds the exit line in a byte stream cut into arbitrary segments.
///
/// The exit line is exactly `exit` followed by `\n` or `\r\n`, at the start of the stream or
/// right after a `\n`. The detector is a few bytes of state: whether the next byte starts a line,
/// and how many bytes of a candidate `exit\r` it holds back. Held-back bytes are released as
/// data as soon as the line turns out to be something else (`exits`, `exit now`), or at end of
/// input (`exit` with no newline is data).
///
/// Everything else is data, byte for byte: NUL, 0xFF and lone CR included.
public struct ExitLineDetector: Sendable, Equatable {
    /// The next byte starts a line.
    var atLineStart = true
    /// Bytes of `exit\r` matched so far by a candidate that began in an earlier segment.
    var held: UInt8 = 0

    /// A new detector, at the start of a stream.
    public init() {}

    /// What to do with one segment.
    public struct Verdict: Equatable, Sendable {
        /// Write this many bytes of ``ExitLineDetector/candidate`` first: bytes held back from
        /// earlier segments that turned out to be data.
        public var release: Int
        /// Then write this many bytes from the start of the segment.
        public var echo: Int
        /// The exit line ended in this segment: close after writing; the rest is discarded.
        public var exit: Bool
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

    /// Scans one segment and says what to write. Bytes after an exit line are not looked at.
    ///
    /// The common case costs one memchr per line and one comparison after each newline: only a
    /// line that starts with `e` is looked at more closely.
    public mutating func scan(_ bytes: UnsafeRawBufferPointer) -> Verdict {
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
            // Broken at base[i]: the held bytes and base[0..<i] are ordinary data, and the line
            // goes on (unless base[i] is its newline, which the search below finds).
            let release = Int(held)
            held = 0
            return finishScan(base, n, from: i, lineStart: -1, release: release)
        }
        return finishScan(base, n, from: 0, lineStart: atLineStart ? 0 : -1, release: 0)
    }

    /// Walks the segment from `from`: checks the line starting at `lineStart` (if any), then
    /// jumps from newline to newline.
    @inline(__always)
    private mutating func finishScan(_ base: UnsafePointer<UInt8>, _ n: Int, from: Int, lineStart: Int, release: Int) -> Verdict {
        var i = from
        var start = lineStart
        while true {
            if start >= 0 {
                if start == n {
                    atLineStart = true
                    return Verdict(release: release, echo: n, exit: false)
                }
                if base[start] == UInt8(ascii: "e") {
                    // A candidate: match it byte by byte.
                    var matched: UInt8 = 0
                    var j = start
                    while j < n {
                        guard let next = Self.step(matched, base[j]) else {
                            self = ExitLineDetector()
                            return Verdict(release: release, echo: start, exit: true)
                        }
                        if next < 0 { break }
                        matched = UInt8(next)
                        j += 1
                    }
                    if j == n {
                        // The segment ends inside a candidate: hold it back until we know.
                        held = matched
                        atLineStart = false
                        return Verdict(release: release, echo: start, exit: false)
                    }
                }
                i = start
            }
            // Mid-line: only a newline can start a candidate, so jump to the next one.
            guard let found = memchr(base + i, Int32(Self.newline), n - i) else {
                atLineStart = false
                return Verdict(release: release, echo: n, exit: false)
            }
            start = base.distance(to: found.assumingMemoryBound(to: UInt8.self)) + 1
        }
    }

    /// End of input: bytes still held back are data. Returns how many bytes of
    /// ``candidate`` to write.
    public mutating func finish() -> Int {
        let count = Int(held)
        self = ExitLineDetector()
        return count
    }
}
