import Glibc
import Reactor
import ServerKit
import SystemPackage

/// Where the client's input comes from.
enum InputSource {
    /// A duplicate of stdin that the reactor watches with epoll (a pipe, a terminal, a socket).
    case adopt(CInt)
    /// An fd read directly, without waiting for readiness: a regular file or a device such as
    /// /dev/null. epoll refuses those (EPERM) because they are always ready.
    case direct(CInt)
    /// The last bytes of an adopted stdin that the reactor closed before its end (see
    /// `Session.stdinClosed`), then the end.
    case leftover([UInt8], sent: Int)

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
                return .failed(SyscallError(call: "read", errno: Errno(rawValue: e)).explanation)
            }
        }
    }

    /// Everything an fd has without waiting (until EOF, EAGAIN or an error).
    static func drain(_ fd: CInt, using buffer: UnsafeMutableRawBufferPointer) -> [UInt8] {
        var bytes: [UInt8] = []
        while true {
            let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if n > 0 {
                bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[..<n]))
            } else if n < 0 && errno == EINTR {
                continue
            } else {
                return bytes
            }
        }
    }
}

/// stdin, set up for the reactor, and put back as it was at the end.
///
/// The reactor gets a duplicate of fd 0 and makes it non-blocking. O_NONBLOCK belongs to the open
/// file description, which a terminal shares with the shell and with stdout, so fd 0's flags are
/// restored as soon as the reactor is done with stdin, and again at exit.
///
/// The duplicate matters for a second reason: epoll forgets a registration only when the last fd
/// of its file description is closed. When the reactor closes its duplicate, fd 0 would keep the
/// registration alive and epoll would keep reporting a pipe's EPOLLHUP for an fd the reactor no
/// longer knows, a busy loop. So ``release()`` also points fd 0 at /dev/null.
final class StandardInput {
    let source: InputSource
    private var savedFlags: CInt?

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
        guard let flags = savedFlags else { return }
        savedFlags = nil
        _ = fcntl(STDIN_FILENO, F_SETFL, flags)
    }

    /// The reactor is closing its duplicate of stdin: restore the flags, and let fd 0 drop its
    /// reference to the description, so that the close removes it from the epoll set.
    func release() {
        guard case .adopt = source else { return }
        restoreFlags()
        let null = open("/dev/null", O_RDONLY | O_CLOEXEC)
        if null >= 0 {
            _ = dup2(null, STDIN_FILENO)
            _ = close(null)
        }
    }
}

/// Writes to stdout and stderr without buffering.
enum Terminal {
    static func write(_ text: String, to fd: CInt) { UnbufferedOutput.write(text, to: fd) }
}

/// Why a connection closed, in words: the socket error if there was one.
func describe(_ reason: CloseReason) -> String { reason.explanation }
