// Running the built `reflectd` executable as a user would: posix_spawn with stdout and stderr on
// pipes (drained by threads so the server never blocks on a full pipe), signals, bounded waits.

import TestSupport
import Foundation
import Glibc
import Synchronization

/// How a child process ended.
enum ExitStatus: Equatable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32)

    var description: String {
        switch self {
        case .exited(let code): return "exit status \(code)"
        case .signaled(let signal): return "killed by signal \(signal)"
        }
    }
}

/// A test failure in starting or talking to a child process.
struct ProcessFailure: Error, CustomStringConvertible {
    let description: String
}

/// Reads a pipe until EOF on its own thread, keeping everything it read.
final class PipeCollector: Sendable {
    private let data = Mutex<[UInt8]>([])
    private let done = DispatchSemaphore(value: 0)

    init(fd: CInt) {
        let thread = Thread { [self] in
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n > 0 {
                    data.withLock { $0 += buffer[..<n] }
                } else if n < 0 && errno == EINTR {
                    continue
                } else {
                    break
                }
            }
            close(fd)
            done.signal()
        }
        thread.start()
    }

    var text: String { String(decoding: data.withLock { $0 }, as: UTF8.self) }

    var lines: [String] { text.split(separator: "\n", omittingEmptySubsequences: true).map(String.init) }

    /// Waits (bounded) until the writers closed the pipe, so `text` is complete.
    @discardableResult
    func waitForEOF(timeout: Double) -> Bool {
        guard done.wait(timeout: .now() + timeout) == .success else { return false }
        done.signal()
        return true
    }
}

/// A child process started by a test. Killed (SIGKILL) and reaped by `kill()` if still running.
final class ServerProcess: @unchecked Sendable {
    let pid: pid_t
    let stdout: PipeCollector
    let stderr: PipeCollector
    let commandLine: String
    private let status = Mutex<ExitStatus?>(nil)

    private init(pid: pid_t, stdout: PipeCollector, stderr: PipeCollector, commandLine: String) {
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self.commandLine = commandLine
    }

    /// The `reflectd` executable next to the running test bundle (for example `.build/debug/`).
    static func reflectdPath() throws -> String {
        var directories: [String] = []
        if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            directories.append((exe as NSString).deletingLastPathComponent)
        }
        for bundle in Bundle.allBundles where bundle.bundlePath.hasSuffix(".xctest") {
            directories.append((bundle.bundlePath as NSString).deletingLastPathComponent)
        }
        directories.append((Bundle.main.bundlePath as NSString).deletingLastPathComponent)
        directories.append(Bundle.main.bundlePath)
        if let first = CommandLine.arguments.first {
            directories.append((first as NSString).deletingLastPathComponent)
        }
        for directory in directories {
            let candidate = directory + "/reflectd"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw ProcessFailure(description: "no built reflectd executable next to the test bundle (looked in \(directories)); build it first (swift build)")
    }

    /// Starts the built reflectd with `arguments`.
    static func reflectd(_ arguments: [String]) throws -> ServerProcess {
        try launch(try reflectdPath(), arguments)
    }

    /// Starts `executable` with `arguments`: stdin from /dev/null, stdout and stderr on pipes,
    /// default signal dispositions and an empty signal mask (as from a shell).
    /// Sets FD_CLOEXEC on every fd from 3 up (glibc's posix_spawn_file_actions_addclosefrom_np
    /// does not import into Swift). dup2 in the child clears it on the targets 0, 1 and 2.
    static func markEveryFDCloseOnExec() {
        guard let dir = opendir("/proc/self/fd") else { return }
        defer { closedir(dir) }
        var fds: [CInt] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if let fd = CInt(name), fd >= 3 { fds.append(fd) }
        }
        for fd in fds {
            let flags = fcntl(fd, F_GETFD)
            if flags >= 0 { _ = fcntl(fd, F_SETFD, flags | FD_CLOEXEC) }
        }
    }

    static func launch(_ executable: String, _ arguments: [String]) throws -> ServerProcess {
        var outPipe: [CInt] = [-1, -1], errPipe: [CInt] = [-1, -1]
        guard pipe(&outPipe) == 0 else { throw ProcessFailure(description: "pipe: errno \(errno)") }
        guard pipe(&errPipe) == 0 else { throw ProcessFailure(description: "pipe: errno \(errno)") }
        for fd in outPipe + errPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        // Nothing else is inherited: fds this test process has open (from earlier tests, from
        // XCTest) would otherwise count against the child's fd limit, as a user's shell would not.
        markEveryFDCloseOnExec()

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGPIPE, SIGTERM, SIGINT, SIGCHLD, SIGHUP] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var mask = sigset_t()
        sigemptyset(&mask)
        posix_spawnattr_setsigmask(&attributes, &mask)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for arg in argv { free(arg) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        close(outPipe[1])
        close(errPipe[1])
        guard rc == 0 else {
            close(outPipe[0])
            close(errPipe[0])
            throw ProcessFailure(description: "posix_spawn \(executable): \(String(cString: strerror(rc)))")
        }
        return ServerProcess(pid: pid, stdout: PipeCollector(fd: outPipe[0]), stderr: PipeCollector(fd: errPipe[0]),
                             commandLine: ([executable] + arguments).joined(separator: " "))
    }

    /// Waits for the `listening on HOST:PORT` line; returns the line and the port in it.
    func waitForListening(timeout: Double = 10) throws -> (line: String, port: Int) {
        let deadline = monotonicSeconds() + timeout
        while true {
            if let line = stdout.lines.first(where: { $0.contains("listening on ") }) {
                let address = line[line.range(of: "listening on ")!.upperBound...]
                guard let colon = address.lastIndex(of: ":"),
                      let port = Int(address[address.index(after: colon)...].prefix(while: \.isNumber)) else {
                    throw ProcessFailure(description: "cannot parse a port from \(line.debugDescription)")
                }
                return (line, port)
            }
            if let exit = pollExit() {
                throw ProcessFailure(description: "\(commandLine) ended (\(exit)) before listening; stderr: \(stderr.text)")
            }
            if monotonicSeconds() >= deadline {
                throw ProcessFailure(description: "\(commandLine) printed no listening line within \(timeout) s; stdout: \(stdout.text.debugDescription) stderr: \(stderr.text)")
            }
            usleep(10_000)
        }
    }

    func send(signal: CInt) {
        guard pollExit() == nil else { return }
        Glibc.kill(pid, signal)
    }

    /// Reaps the child if it has ended; never blocks.
    func pollExit() -> ExitStatus? {
        status.withLock { known in
            if let known { return known }
            var raw: CInt = 0
            let rc = waitpid(pid, &raw, WNOHANG)
            guard rc == pid else { return nil }
            // WIFEXITED / WEXITSTATUS / WTERMSIG are macros that do not import.
            let result: ExitStatus = raw & 0x7F == 0 ? .exited((raw >> 8) & 0xFF) : .signaled(raw & 0x7F)
            known = result
            return result
        }
    }

    /// Waits up to `timeout` seconds for the child to end.
    func waitForExit(timeout: Double) -> ExitStatus? {
        let deadline = monotonicSeconds() + timeout
        while true {
            if let exit = pollExit() { return exit }
            if monotonicSeconds() >= deadline { return nil }
            usleep(5_000)
        }
    }

    /// SIGKILL if still running, then reap.
    func kill() {
        if pollExit() == nil {
            Glibc.kill(pid, SIGKILL)
            _ = waitForExit(timeout: 10)
        }
    }

    /// User plus system CPU time the process has used so far, from /proc/PID/stat.
    func cpuSeconds() -> Double? {
        guard let stat = readProcFile("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return nil }
        // Fields after "(comm)" start at field 3 (state); utime is field 14, stime field 15.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let utime = Double(fields[11]), let stime = Double(fields[12]) else { return nil }
        return (utime + stime) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}

/// Sockets in TIME_WAIT whose local port is `port` (IPv4 and IPv6), from /proc/net/tcp{,6}.
func timeWaitSockets(localPort port: Int) -> Int {
    var count = 0
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        guard let text = readProcFile(table) else { continue }
        for line in text.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ")
            guard fields.count > 3, let colon = fields[1].lastIndex(of: ":"),
                  let local = Int(fields[1][fields[1].index(after: colon)...], radix: 16) else { continue }
            if local == port && fields[3] == "06" { count += 1 }  // 06: TCP_TIME_WAIT
        }
    }
    return count
}

/// The whole of a /proc file. Their size reads as 0, so read(2) until EOF instead of trusting it.
func readProcFile(_ path: String) -> String? {
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
