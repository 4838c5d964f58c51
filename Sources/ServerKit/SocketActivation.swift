import Glibc
import Reactor

/// systemd socket activation (sd_listen_fds(3)): the service manager binds the sockets and passes
/// them from fd 3 on, with LISTEN_PID naming the process they are for and LISTEN_FDS their count.
///
/// Parsed as strictly as sd_listen_fds: when LISTEN_PID names this process, a LISTEN_FDS that is
/// missing, not a positive decimal integer, or beyond the fd limit is an error, and so is any of
/// the fds not being an open listening socket. The server then exits; it never falls back to binding
/// its own address, which under systemd would open a port the operator meant to be activated.
public enum SocketActivation {
    /// The first inherited fd (`SD_LISTEN_FDS_START`): systemd passes its sockets from fd 3 on.
    public static let firstFD: CInt = 3

    /// A bad activation environment, in words naming the variable or the fd.
    public struct Failure: Error {
        /// What was wrong, for the error line.
        public let message: String
    }

    /// The inherited listening fds; nil when this process was not socket-activated (no LISTEN_PID,
    /// or one naming another process). The variables are removed so that child processes do not
    /// think the fds are theirs.
    public static func inheritedFDs(fdLimit: Int) throws(Failure) -> [CInt]? {
        guard let pidText = environment("LISTEN_PID") else { return nil }
        defer {
            unsetenv("LISTEN_PID")
            unsetenv("LISTEN_FDS")
            unsetenv("LISTEN_FDNAMES")
        }
        guard isDecimal(pidText), let pid = Int(pidText), pid > 0, pid <= Int(Int32.max) else {
            throw Failure(message: "LISTEN_PID=\(quoted(pidText)) is not a process id")
        }
        guard pid == Int(getpid()) else { return nil }
        guard let countText = environment("LISTEN_FDS") else {
            throw Failure(message: "LISTEN_PID is this process (\(pid)) but LISTEN_FDS is not set")
        }
        // The most fds that can exist from fd 3 up to the fd limit.
        let most = max(0, fdLimit - Int(firstFD))
        guard isDecimal(countText), countText.contains(where: { $0 != "0" }) else {
            throw Failure(message: "LISTEN_FDS=\(quoted(countText)) is not a positive decimal number of sockets")
        }
        guard let count = Int(countText), count <= most else {
            throw Failure(message: "LISTEN_FDS=\(countText) is more sockets than the fd limit (\(fdLimit)) allows from fd 3 on (at most \(most))")
        }
        let fds = (0..<count).map { firstFD + CInt($0) }
        for fd in fds { try check(fd, countText) }
        return fds
    }

    /// An inherited fd must be open and a listening stream socket; the message names it.
    private static func check(_ fd: CInt, _ countText: String) throws(Failure) {
        let what = "LISTEN_FDS=\(countText): fd \(fd)"
        guard fcntl(fd, F_GETFD) >= 0 else { throw Failure(message: "\(what) is not open") }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFSOCK else {
            throw Failure(message: "\(what) is not a socket")
        }
        var type: CInt = 0, listening: CInt = 0
        var length = socklen_t(MemoryLayout<CInt>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) == 0,
              type == CInt(SOCK_STREAM.rawValue) || type == CInt(SOCK_DGRAM.rawValue) else {
            throw Failure(message: "\(what) is not a stream (TCP or Unix stream) or datagram (UDP) socket")
        }
        if type == CInt(SOCK_DGRAM.rawValue) {
            // ListenDatagram=: a bound UDP socket, served by the UDP echo (DatagramService.swift).
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            return
        }
        length = socklen_t(MemoryLayout<CInt>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &length) == 0, listening != 0 else {
            throw Failure(message: "\(what) is a socket that is not listening")
        }
        // Fds of the service manager must not leak into anything this process might start.
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
    }

    /// Whether an inherited fd is a datagram socket (ListenDatagram=) rather than a listener.
    public static func isDatagram(_ fd: CInt) -> Bool {
        var type: CInt = 0
        var length = socklen_t(MemoryLayout<CInt>.size)
        return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) == 0 && type == CInt(SOCK_DGRAM.rawValue)
    }

    /// The local port of a socket, or nil.
    public static func localPort(_ fd: CInt) -> Int? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard rc == 0 else { return nil }
        let family = CInt(storage.ss_family)
        guard family == AF_INET || family == AF_INET6 else { return nil }
        return withUnsafeBytes(of: &storage) { Int(UInt16(bigEndian: $0.load(fromByteOffset: 2, as: UInt16.self))) }
    }

    private static func environment(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }

    /// Only ASCII digits: no sign, no spaces, no hex.
    private static func isDecimal(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.allSatisfy { $0 >= 48 && $0 <= 57 }
    }

    private static func quoted(_ text: String) -> String {
        "\"" + String(text.prefix(40)) + (text.count > 40 ? "…" : "") + "\""
    }
}
