// Reading /proc files and limits of this process.

import Glibc

/// The whole of a /proc file. Their size reads as 0, so read(2) until EOF instead of trusting it.
public func readProcFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var data: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n > 0 {
            data += buffer[..<n]
        } else if n < 0 && errno == EINTR {
            continue
        } else {
            break
        }
    }
    return String(decoding: data, as: UTF8.self)
}

/// This process's fd limit (RLIMIT_NOFILE).
public enum FileLimit {
    /// Raises the soft limit to the hard limit; returns the new soft limit.
    @discardableResult
    public static func raise() -> Int {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
            getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        return Int(limit.rlim_cur)
    }

    /// The hard limit.
    public static var hard: Int {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        return Int(limit.rlim_max)
    }
}
