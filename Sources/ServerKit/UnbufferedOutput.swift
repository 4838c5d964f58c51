import Glibc
import SystemPackage

/// Unbuffered writes for the command-line tools built on the reactor (their stdout and stderr):
/// every byte is out before the call returns, so a line is not lost to a crash or a signal that
/// follows, and nothing waits in a buffer that the reactor's own writes would overtake.
///
/// ```swift
/// UnbufferedOutput.write("listening on \(address)\n", to: 1)
/// ```
public enum UnbufferedOutput {
    /// Writes every byte of `bytes` to `fd`, retrying EINTR and waiting with poll(2) while a
    /// non-blocking fd is full (a terminal shares its O_NONBLOCK flag with a duplicate a reactor
    /// adopted). Returns the error that stopped it (EPIPE when the reader went away), or nil.
    @discardableResult
    public static func write(_ bytes: UnsafeRawBufferPointer, to fd: CInt) -> Errno? {
        guard var p = bytes.baseAddress else { return nil }
        var left = bytes.count
        while left > 0 {
            let n = Glibc.write(fd, p, left)
            if n > 0 {
                p += n
                left -= n
                continue
            }
            let e = n < 0 ? errno : EIO
            if e == EINTR { continue }
            if e == EAGAIN {
                var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                _ = poll(&pfd, 1, -1)
                continue
            }
            return Errno(rawValue: e)
        }
        return nil
    }

    /// Writes the UTF-8 bytes of `text` to `fd` (see ``write(_:to:)-(UnsafeRawBufferPointer,_)``).
    @discardableResult
    public static func write(_ text: String, to fd: CInt) -> Errno? {
        var text = text
        return text.withUTF8 { write(UnsafeRawBufferPointer($0), to: fd) }
    }
}
