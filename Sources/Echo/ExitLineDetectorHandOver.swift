extension ExitLineDetector {
    /// The detector's whole state in three bytes, to carry a connection to another process (a
    /// binary upgrade): whether the next byte starts a line (0 or 1), how many bytes of `exit\r`
    /// are held, and how many of those were already released as data.
    public var handOverBytes: [UInt8] { [atLineStart ? 1 : 0, held, released] }

    /// A detector from ``handOverBytes``; nil when the bytes cannot be a detector's state
    /// (more than 5 held, more released than held, a flag other than 0 or 1).
    public init?(handOverBytes bytes: [UInt8]) {
        guard bytes.count == 3, bytes[0] <= 1, bytes[1] <= UInt8(Self.candidate.utf8CodeUnitCount),
              bytes[2] <= bytes[1] else { return nil }
        self.init()
        atLineStart = bytes[0] == 1
        held = bytes[1]
        released = bytes[2]
    }
}
