import Glibc
import Reactor

/// systemd socket activation (sd_listen_fds(3)): the service manager binds the sockets and passes
/// them from fd 3 on, with LISTEN_PID naming the process they are for and LISTEN_FDS their count.
enum SocketActivation {
    static let firstFD: CInt = 3

    /// The inherited listening fds, or nil when this process was not socket-activated.
    /// The variables are removed so that child processes do not think the fds are theirs.
    static func inheritedFDs() -> [CInt]? {
        guard let pidText = getenv("LISTEN_PID").map({ String(cString: $0) }),
              let pid = Int32(pidText), pid == getpid(),
              let countText = getenv("LISTEN_FDS").map({ String(cString: $0) }),
              let count = Int32(countText), count > 0
        else { return nil }
        unsetenv("LISTEN_PID")
        unsetenv("LISTEN_FDS")
        unsetenv("LISTEN_FDNAMES")
        return Array(firstFD..<(firstFD + count))
    }

    /// A second fd for the same socket, for another reactor.
    static func duplicate(_ fd: CInt) throws -> CInt {
        let copy = fcntl(fd, F_DUPFD_CLOEXEC, 0)
        guard copy >= 0 else { throw StartupFailure(message: "cannot duplicate inherited fd \(fd): errno \(errno)") }
        return copy
    }
}
