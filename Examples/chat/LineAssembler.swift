import Glibc
import Reactor

/// Cuts a connection's byte stream into lines, whatever the reads' boundaries.
///
/// This is the chat server's whole per-connection `ConnectionState`: a complete line found inside
/// one read is handed on straight from the reactor's read buffer (no copy); only the unfinished
/// tail of a read is copied, into `partial`, which is freed again as soon as its line completes.
/// A connection that is not in the middle of a line therefore owns no heap memory here.
struct LineAssembler {
    /// The start of a line whose newline has not arrived yet (empty between lines).
    private(set) var partial: [UInt8] = []

    private static let newline = UInt8(ascii: "\n")
    private static let carriageReturn = UInt8(ascii: "\r")

    /// Hands every complete line in `bytes` to `onLine`, without its `\n` or `\r\n`.
    ///
    /// A line longer than `maxLength` bytes (before its newline) is not delivered: the result is
    /// `tooLong(line)` at once, even if its newline has not arrived, so that a client cannot make
    /// the server buffer more than `maxLength` bytes for it. `onLine` stops the scan by returning
    /// anything but `.continue`; bytes after that line are dropped (the connection is closing).
    mutating func feed(_ bytes: UnsafeRawBufferPointer, maxLength: Int,
                       onLine: (UnsafeRawBufferPointer) -> Action, tooLong: () -> Action) -> Action {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return .continue }
        var start = 0
        while start < bytes.count {
            guard let found = memchr(base + start, Int32(Self.newline), bytes.count - start) else {
                // No newline in the rest: keep it for the next read.
                if partial.count + (bytes.count - start) > maxLength {
                    partial = []
                    return tooLong()
                }
                partial.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[start...]))
                return .continue
            }
            let end = base.distance(to: UnsafeRawPointer(found))
            let segment = UnsafeRawBufferPointer(rebasing: bytes[start..<end])
            start = end + 1
            let action: Action
            if partial.isEmpty {
                // The common case: the whole line is in this read. No copy.
                guard segment.count <= maxLength else { return tooLong() }
                action = onLine(Self.strippingCR(segment))
            } else {
                guard partial.count + segment.count <= maxLength else {
                    partial = []
                    return tooLong()
                }
                partial.append(contentsOf: segment)
                let line = partial
                partial = []  // frees the buffer: memory follows activity
                action = line.withUnsafeBytes { onLine(Self.strippingCR($0)) }
            }
            guard case .continue = action else { return action }
        }
        return .continue
    }

    private static func strippingCR(_ line: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        guard let last = line.last, last == carriageReturn else { return line }
        return UnsafeRawBufferPointer(rebasing: line.dropLast())
    }
}
