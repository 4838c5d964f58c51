import Glibc

/// The process's descriptor limit (RLIMIT_NOFILE).
///
/// A shell's `ulimit -n 1024` (a common default soft limit) would cap a server at about a thousand
/// clients, the rest waiting silently in the backlog, while the hard limit allows far more. Like Go's
/// runtime and redis, a server raises the soft limit to the hard limit at startup: only the hard
/// limit is the operator's decision.
public enum FileLimit {
    /// What ``raiseToHard()`` did.
    public struct Raise {
        /// The soft limit before and after.
        public let before: Int
        /// The soft limit after the raise: what the process may open.
        public let after: Int
    }

    /// The soft limit now (1024 when it cannot be read).
    public static var soft: Int {
        var limit = rlimit()
        guard getrlimit(CInt(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        return Int(min(limit.rlim_cur, UInt(Int32.max)))
    }

    /// Raises the soft limit to the hard limit. When the hard limit is unlimited (only root can
    /// have that), the kernel's per-process ceiling fs.nr_open is used instead.
    public static func raiseToHard() -> Raise {
        var limit = rlimit()
        guard getrlimit(CInt(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return Raise(before: 1024, after: 1024) }
        let before = Int(min(limit.rlim_cur, UInt(Int32.max)))
        var target = limit.rlim_max
        if target == UInt.max {  // RLIM_INFINITY, which does not import
            target = UInt(nrOpen() ?? before) }
        guard target > limit.rlim_cur else { return Raise(before: before, after: before) }
        limit.rlim_cur = target
        guard setrlimit(CInt(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return Raise(before: before, after: before) }
        return Raise(before: before, after: soft)
    }

    private static func nrOpen() -> Int? {
        let fd = open("/proc/sys/fs/nr_open", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: 32)
        let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return nil }
        return Int(String(decoding: bytes[..<n], as: UTF8.self).filter(\.isNumber))
    }
}
