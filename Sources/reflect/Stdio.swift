import Glibc
import Reactor

/// Where the client's input comes from.
enum InputSource {
    /// A duplicate of stdin that the reactor watches with epoll (a pipe, a terminal, a socket).
    case adopt(CInt)
    /// An fd read directly, without waiting for readiness: a regular file or a device such as
    /// /dev/null. epoll refuses those (EPERM) because they are always ready.
    case direct(CInt)

    enum ReadResult {
        case bytes(Int)
        case end
        case failed(String)
    }

    /// One read of an fd that is normally always ready. Should it not be (a pipe or terminal
    /// left in O_NONBLOCK mode), this waits for it with poll(2) rather than spin.
    static func read(_ fd: CInt, into buffer: UnsafeMutableRawBufferPointer) -> ReadResult {
        while true {
            let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if n > 0 { return .bytes(n) }
            if n == 0 { return .end }
            let e = errno
            switch e {
            case EINTR:
                continue
            case EAGAIN:
                var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                _ = poll(&p, 1, -1)
            case EIO, EBADF:
                // EIO: the terminal hung up. EBADF: stdin was closed when we started. Both: no input.
                return .end
            default:
                return .failed(describe(e))
            }
        }
    }
}

/// stdin, set up for the reactor, and put back as it was at the end.
///
/// The reactor makes an adopted fd non-blocking, and O_NONBLOCK belongs to the open file
/// description, which a terminal shares with the shell and with stdout. So the reactor gets a
/// duplicate of fd 0 (it closes that one when done), and fd 0's flags are restored at exit.
final class StandardInput {
    let source: InputSource
    private let savedFlags: CInt?

    init() {
        var st = stat()
        let flags = fcntl(STDIN_FILENO, F_GETFL)
        guard fstat(STDIN_FILENO, &st) == 0, flags >= 0 else {
            // No stdin at all: empty input.
            source = .direct(STDIN_FILENO)
            savedFlags = nil
            return
        }
        let type = st.st_mode & S_IFMT
        // epoll accepts pipes, sockets and terminals. Other character devices (/dev/null,
        // /dev/zero) have no poll method and make epoll_ctl fail with EPERM, like regular files.
        let pollable = type == S_IFIFO || type == S_IFSOCK || (type == S_IFCHR && isatty(STDIN_FILENO) == 1)
        let copy = pollable ? fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 3) : -1
        if copy >= 0 {
            source = .adopt(copy)
            savedFlags = flags
        } else {
            source = .direct(STDIN_FILENO)
            savedFlags = nil
        }
    }

    /// Gives stdin back its original O_NONBLOCK setting (the reactor set it on the shared description).
    func restoreFlags() {
        guard let savedFlags else { return }
        _ = fcntl(STDIN_FILENO, F_SETFL, savedFlags)
    }
}

/// Writes to stdout and stderr without buffering.
enum Terminal {
    /// Writes every byte, waiting with poll(2) when the fd is non-blocking and full (a terminal
    /// shares its O_NONBLOCK flag with the adopted stdin). Returns the errno of a failure.
    static func writeAll(_ bytes: UnsafeRawBufferPointer, to fd: CInt) -> CInt? {
        guard var p = bytes.baseAddress else { return nil }
        var left = bytes.count
        while left > 0 {
            let n = Glibc.write(fd, p, left)
            if n > 0 {
                p += n
                left -= n
                continue
            }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN {
                var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                _ = poll(&pfd, 1, -1)
                continue
            }
            return e
        }
        return nil
    }

    static func write(_ text: String, to fd: CInt) {
        var text = text
        text.withUTF8 { _ = writeAll(UnsafeRawBufferPointer($0), to: fd) }
    }
}

/// strerror, starting lowercase to fit in a sentence: "connection refused".
func describe(_ code: CInt) -> String {
    var text = String(cString: strerror(code))
    if let first = text.first, first.isUppercase, !text.dropFirst().prefix(1).allSatisfy(\.isUppercase) {
        text = first.lowercased() + text.dropFirst()
    }
    return text
}

/// Why a connection closed, in words: the socket error if there was one.
func describe(_ reason: CloseReason) -> String {
    if let e = reason.errno { return describe(e.rawValue) }
    return reason.name
}
