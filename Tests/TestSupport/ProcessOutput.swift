// One output pipe of a child process, read until EOF on a thread of its own.

import Foundation
import Glibc

/// Reads a pipe until EOF on its own thread and keeps everything it read. A paused one reads
/// nothing until `resume()`: a log reader that stopped reading (a paused `| less`, a stuck log
/// shipper), whose 64 KiB fill and then block a writer that writes synchronously.
public final class ProcessOutput: @unchecked Sendable {
    // @unchecked: `data` is behind its lock; the rest is immutable.
    private let data = Locked<[UInt8]>([])
    private let done = DispatchSemaphore(value: 0)
    private let go = DispatchSemaphore(value: 0)
    private let fd: CInt

    /// Starts reading `fd` (the read end of a pipe, closed at EOF) on a thread, or, `paused`, once ``resume()`` is called.
    public init(fd: CInt, paused: Bool = false) {
        self.fd = fd
        if !paused { go.signal() }
        let thread = Thread { [self] in
            self.go.wait()
            var buffer = [UInt8](repeating: 0, count: 16 * 1024)
            while true {
                let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                if n > 0 {
                    self.data.withLock { $0 += buffer[..<n] }
                } else if n < 0 && errno == EINTR {
                    continue
                } else {
                    break
                }
            }
            Glibc.close(fd)
            self.done.signal()
        }
        thread.start()
    }

    /// Starts reading a paused pipe.
    public func resume() { go.signal() }

    /// Everything read so far.
    public var bytes: [UInt8] { data.withLock { $0 } }
    /// Everything read so far, as UTF-8 text.
    public var text: String { String(decoding: bytes, as: UTF8.self) }
    /// The complete and partial lines read so far, without their newlines.
    public var lines: [String] { text.split(separator: "\n").map(String.init) }

    /// Bytes written into a paused pipe and not read yet (FIONREAD): at the pipe's capacity (64 KiB
    /// by default) once the child has written that much. -1 once the pipe is closed.
    public var unreadBytes: Int {
        var count: CInt = 0
        // FIONREAD (0x541B on Linux; Glibc does not import the ioctl request macros).
        guard ioctl(fd, 0x541B, &count) == 0 else { return -1 }
        return Int(count)
    }

    /// Waits (bounded) until every writer closed the pipe.
    @discardableResult
    public func waitForEOF(timeout: Double) -> Bool {
        guard done.wait(timeout: .now() + timeout) == .success else { return false }
        done.signal()
        return true
    }
}
