// Looking at the server's end of a connection. getsockopt on the client's socket says nothing
// about the server's TCP_NODELAY or keepalive, and /proc/net/tcp does not show them either. But
// pidfd_getfd(2) (Linux 5.6+, glibc 2.36+; needs ptrace rights over the child, which a parent
// running as root or with CAP_SYS_PTRACE has) copies one of the child's fds into this process,
// and getsockopt on the copy reads the very same socket.

import TestSupport
import Glibc

enum ServerSocket {
    /// pidfd_getfd was refused (EPERM: no ptrace rights over the child here).
    struct NotPermitted: Error, CustomStringConvertible {
        let description: String
    }

    private typealias PidfdOpen = @convention(c) (pid_t, CUnsignedInt) -> CInt
    private typealias PidfdGetfd = @convention(c) (CInt, CInt, CUnsignedInt) -> CInt

    /// Why the server's sockets cannot be inspected here, or nil when they can.
    static func unavailableReason(pid: pid_t) -> String? {
        guard let open = symbol("pidfd_open", as: PidfdOpen.self),
              symbol("pidfd_getfd", as: PidfdGetfd.self) != nil else {
            return "this libc has no pidfd_open/pidfd_getfd (glibc 2.36+ needed)"
        }
        let pidfd = open(pid, 0)
        guard pidfd >= 0 else { return "pidfd_open: \(String(cString: strerror(errno)))" }
        Glibc.close(pidfd)
        return nil
    }

    /// A copy of the server's (process `pid`) socket whose peer is the local port `clientPort`,
    /// or nil if there is none. The caller closes it.
    static func socket(ofProcess pid: pid_t, peerPort clientPort: Int, candidates: [CInt]) throws -> CInt? {
        guard let open = symbol("pidfd_open", as: PidfdOpen.self),
              let getfd = symbol("pidfd_getfd", as: PidfdGetfd.self) else {
            throw TestFailure("pidfd_open/pidfd_getfd not available")
        }
        let pidfd = open(pid, 0)
        guard pidfd >= 0 else { throw TestFailure("pidfd_open(\(pid)): \(String(cString: strerror(errno)))") }
        defer { Glibc.close(pidfd) }
        for target in candidates {
            let copy = getfd(pidfd, target, 0)
            if copy < 0 {
                if errno == EBADF { continue }  // closed since /proc was listed
                if errno == EPERM { throw NotPermitted(description: "pidfd_getfd: EPERM (no ptrace rights over pid \(pid))") }
                throw TestFailure("pidfd_getfd(\(target)): \(String(cString: strerror(errno)))")
            }
            if let peer = LoopbackSockets.peerAddress(copy), LoopbackSockets.port(of: peer) == clientPort {
                _ = fcntl(copy, F_SETFD, FD_CLOEXEC)
                return copy
            }
            Glibc.close(copy)
        }
        return nil
    }

    private static func symbol<T>(_ name: String, as type: T.Type) -> T? {
        // A nil handle is RTLD_DEFAULT: search the libraries already loaded (libc).
        guard let address = dlsym(nil, name) else { return nil }
        return unsafeBitCast(address, to: type)
    }
}
