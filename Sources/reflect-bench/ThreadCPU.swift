import Glibc

/// CPU time of the calling thread, as the kernel accounts it in `/proc/self/task/TID/stat`
/// (user + system, fields 14 and 15, in clock ticks): what `--json` reports per generator
/// thread, so that a run shows whether every thread had work (and how much CPU a message cost).
enum ThreadCPU {
    /// Seconds of CPU the calling thread has used, or nil if /proc cannot be read.
    static func seconds() -> Double? {
        // /proc/thread-self is /proc/self/task/TID of the calling thread (Linux 3.17).
        let fd = open("/proc/thread-self/stat", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 1024)
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return nil }
        // The command name (field 2) is in parentheses and may hold spaces: count fields from
        // the last `)`.
        guard let paren = buffer[..<n].lastIndex(of: UInt8(ascii: ")")) else { return nil }
        let fields = buffer[(paren + 1)..<n].split(separator: UInt8(ascii: " "))
        // fields[0] is field 3 (state), so utime (14) and stime (15) are fields[11] and [12].
        guard fields.count > 12, let user = Int(String(decoding: fields[11], as: UTF8.self)),
              let system = Int(String(decoding: fields[12], as: UTF8.self)) else { return nil }
        let ticks = sysconf(Int32(_SC_CLK_TCK))
        return Double(user + system) / Double(ticks > 0 ? ticks : 100)
    }
}
