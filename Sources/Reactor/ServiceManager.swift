import Glibc

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
        let fd = try Syscalls.unixDatagramSocket()
        defer { Syscalls.closeQuietly(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var pathBytes = Array(path.utf8)
        if pathBytes.first == UInt8(ascii: "@") { pathBytes[0] = 0 }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: pathBytes) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + pathBytes.count + (pathBytes.first == 0 ? 0 : 1))
        var text = Array(state.utf8)
        var iov = iovec()
        let sent = text.withUnsafeMutableBytes { buffer -> Result<Int, SyscallError> in
            iov = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
            return withUnsafeMutablePointer(to: &address) { ap -> Result<Int, SyscallError> in
                withUnsafeMutablePointer(to: &iov) { iovp -> Result<Int, SyscallError> in
                    var message = msghdr()
                    message.msg_name = UnsafeMutableRawPointer(ap)
                    message.msg_namelen = length
                    message.msg_iov = iovp
                    message.msg_iovlen = 1
                    return Result { () throws(SyscallError) -> Int in
                        try Syscalls.sendMessage(fd, &message, "sendmsg(NOTIFY_SOCKET \(path))")
                    }
                }
            }
        }
        _ = try sent.get()
        return true
    }
}
