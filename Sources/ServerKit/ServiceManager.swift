import Glibc
import Reactor
import SystemPackage

/// sd_notify(3) without libsystemd: one datagram on `$NOTIFY_SOCKET`.
public enum ServiceManager {
    /// Sends `state` (`READY=1`, `MAINPID=1234\nREADY=1`, `STOPPING=1`) to the service manager
    /// when `$NOTIFY_SOCKET` names one (a path, or `@name` for the abstract namespace). Returns
    /// false when there is none; throws when the send fails.
    @discardableResult
    public static func notify(_ state: String) throws(SyscallError) -> Bool {
        guard let raw = getenv("NOTIFY_SOCKET") else { return false }
        let path = String(cString: raw)
        guard path.hasPrefix("/") || path.hasPrefix("@"), path.utf8.count < 108 else {
            throw SyscallError(call: "NOTIFY_SOCKET '\(path)' is neither an absolute path nor @abstract", errno: .invalidArgument)
        }
        let fd = socket(AF_UNIX, CInt(SOCK_DGRAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SyscallError(call: "socket(AF_UNIX, SOCK_DGRAM)", errno: Errno(rawValue: errno)) }
        defer { Glibc.close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var pathBytes = Array(path.utf8)
        if pathBytes.first == UInt8(ascii: "@") { pathBytes[0] = 0 }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: pathBytes) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + pathBytes.count + (pathBytes.first == 0 ? 0 : 1))
        var text = Array(state.utf8)
        let sent = text.withUnsafeMutableBytes { buffer -> Int in
            var iov = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
            return withUnsafeMutablePointer(to: &address) { ap in
                withUnsafeMutablePointer(to: &iov) { iovp in
                    var message = msghdr()
                    message.msg_name = UnsafeMutableRawPointer(ap)
                    message.msg_namelen = length
                    message.msg_iov = iovp
                    message.msg_iovlen = 1
                    return sendmsg(fd, &message, CInt(MSG_NOSIGNAL))
                }
            }
        }
        guard sent >= 0 else { throw SyscallError(call: "sendmsg(NOTIFY_SOCKET \(path))", errno: Errno(rawValue: errno)) }
        return true
    }
}
