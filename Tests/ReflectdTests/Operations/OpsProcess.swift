// Running the built `reflectd` as an operator runs it: posix_spawn (optionally through /bin/sh for
// `ulimit` or LISTEN_PID=$$, optionally with an inherited listening socket at fd 3), stdout and
// stderr on pipes drained by threads, signals, and bounded waits. Also /proc readings of the child
// (VmRSS, open fds).
//
// Every name here starts with `Ops` so it cannot clash with the helpers in Support/.

import Foundation
import Glibc
import Synchronization

/// Small process-wide helpers of the operations tests.
enum Ops {
    /// Monotonic seconds.
    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// Polls `condition` every `interval` seconds until it holds or `timeout` seconds pass.
    static func waitUntil(timeout: Double, interval: Double = 0.02, _ condition: () throws -> Bool) rethrows -> Bool {
        let deadline = now() + timeout
        while true {
            if try condition() { return true }
            if now() >= deadline { return false }
            usleep(useconds_t(interval * 1e6))
        }
    }

    /// The `reflectd` executable built next to the running test bundle (e.g. `.build/debug/`).
    static func reflectdPath() throws -> String {
        var directories: [String] = []
        for bundle in Bundle.allBundles where bundle.bundlePath.hasSuffix(".xctest") {
            directories.append((bundle.bundlePath as NSString).deletingLastPathComponent)
        }
        if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            directories.append((exe as NSString).deletingLastPathComponent)
        }
        directories.append((Bundle.main.bundlePath as NSString).deletingLastPathComponent)
        if let first = CommandLine.arguments.first {
            directories.append((first as NSString).deletingLastPathComponent)
        }
        for directory in directories {
            let candidate = directory + "/reflectd"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw OpsFailure("no built reflectd next to the test bundle (looked in \(directories)); run swift build first")
    }

    /// Raises this process's soft fd limit to the hard limit; returns the new soft limit.
    @discardableResult
    static func raiseFileLimit() -> Int {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
            getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        return Int(limit.rlim_cur)
    }

    static var hardFileLimit: Int {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        return Int(limit.rlim_max)
    }

    /// True when a socket can bind to ::1 (IPv6 loopback is configured).
    static func ipv6LoopbackAvailable() -> Bool {
        guard let fd = try? OpsSockets.socket(AF_INET6) else { return false }
        defer { Glibc.close(fd) }
        var address = sockaddr_in6()
        address.sin6_family = sa_family_t(AF_INET6)
        address.sin6_addr = in6addr_loopback
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) == 0
            }
        }
    }

    /// A TCP port on 127.0.0.1 that nothing listens on right now (bound to port 0, then closed).
    static func unusedPort() throws -> Int {
        let listener = try OpsListener(host: "127.0.0.1")
        let port = listener.port
        listener.close()
        return port
    }

    /// True when something accepts TCP connections on `host:port`.
    static func somethingListens(host: String, port: Int) -> Bool {
        guard let client = try? OpsClient.connect(host: host, port: port, timeout: 1) else { return false }
        client.close()
        return true
    }

    /// A fresh directory under /tmp, for socket files.
    static func temporaryDirectory() throws -> String {
        var template = Array("/tmp/reflectd-ops-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw OpsFailure("mkdtemp: errno \(errno)") }
        return String(cString: made)
    }
}

/// A test failure in starting or talking to a process or a socket.
struct OpsFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Reads a pipe until EOF on its own thread and keeps everything it read.
final class OpsOutput: Sendable {
    private let data = Mutex<[UInt8]>([])
    private let done = DispatchSemaphore(value: 0)

    init(fd: CInt) {
        let thread = Thread { [self] in
            var buffer = [UInt8](repeating: 0, count: 16 * 1024)
            while true {
                let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                if n > 0 {
                    self.data.withLock { $0 += buffer[..<n] }
                } else if n < 0 && errno == EINTR {
                    continue
                } else {
                    break
                }
            }
            Glibc.close(fd)
            self.done.signal()
        }
        thread.start()
    }

    var text: String { String(decoding: data.withLock { $0 }, as: UTF8.self) }
    var lines: [String] { text.split(separator: "\n").map(String.init) }

    /// Waits (bounded) until every writer closed the pipe.
    @discardableResult
    func waitForEOF(timeout: Double) -> Bool {
        guard done.wait(timeout: .now() + timeout) == .success else { return false }
        done.signal()
        return true
    }
}

/// A child process. `kill()` (SIGKILL and reap) is safe to call any number of times.
final class OpsProcess: @unchecked Sendable {
    enum End: Equatable, CustomStringConvertible {
        case exited(Int32)
        case signaled(Int32)

        var description: String {
            switch self {
            case .exited(let code): return "exit status \(code)"
            case .signaled(let signal): return "killed by signal \(signal)"
            }
        }
    }

    let pid: pid_t
    let stdout: OpsOutput
    let stderr: OpsOutput
    let commandLine: String
    private let end = Mutex<End?>(nil)

    private init(pid: pid_t, stdout: OpsOutput, stderr: OpsOutput, commandLine: String) {
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self.commandLine = commandLine
    }

    /// Starts the built reflectd directly.
    static func reflectd(_ arguments: [String]) throws -> OpsProcess {
        try spawn(try Ops.reflectdPath(), arguments)
    }

    /// Starts the built reflectd through `/bin/sh -c`, whose `script` runs first and ends with
    /// `exec "$0" "$@"` (the shell's pid, and so `$$`, becomes reflectd's pid).
    static func reflectd(shellPrologue script: String, _ arguments: [String],
                         environment: [String: String] = [:], inheritedListeners: [CInt] = []) throws -> OpsProcess {
        try spawn("/bin/sh", ["-c", script + "\nexec \"$0\" \"$@\"", try Ops.reflectdPath()] + arguments,
                  environment: environment, inheritedListeners: inheritedListeners)
    }

    /// posix_spawn `executable`: stdin /dev/null, stdout and stderr on pipes, default signal
    /// dispositions and an empty mask (as from a shell), `environment` added to ours, and
    /// `inheritedListeners` placed at fds 3, 4, … without close-on-exec (as systemd passes them).
    static func spawn(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                      inheritedListeners: [CInt] = []) throws -> OpsProcess {
        // Nothing else is inherited: fds this test process has open (from earlier tests, from
        // XCTest) would otherwise count against the child's fd limit, as a user's shell would not.
        markEveryFDCloseOnExec()
        var outPipe: [CInt] = [-1, -1], errPipe: [CInt] = [-1, -1]
        guard pipe(&outPipe) == 0, pipe(&errPipe) == 0 else { throw OpsFailure("pipe: errno \(errno)") }
        for fd in outPipe + errPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        // Each inherited socket is first copied above the range 3..<3+n, so that no dup2 below
        // overwrites a source still needed and none is dup2(fd, fd), which keeps close-on-exec.
        let sources = inheritedListeners.map { fcntl($0, F_DUPFD_CLOEXEC, 100) }
        defer { for fd in sources where fd >= 0 { Glibc.close(fd) } }
        guard !sources.contains(where: { $0 < 0 }) else { throw OpsFailure("fcntl(F_DUPFD_CLOEXEC): errno \(errno)") }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        for (i, fd) in sources.enumerated() { posix_spawn_file_actions_adddup2(&actions, fd, 3 + CInt(i)) }

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

        var env = ProcessInfo.processInfo.environment
        for key in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] { env[key] = nil }
        env.merge(environment) { $1 }
        let envp: [UnsafeMutablePointer<CChar>?] = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for p in argv + envp { free(p) } }

        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        Glibc.close(outPipe[1])
        Glibc.close(errPipe[1])
        guard rc == 0 else {
            Glibc.close(outPipe[0])
            Glibc.close(errPipe[0])
            throw OpsFailure("posix_spawn \(executable): \(String(cString: strerror(rc)))")
        }
        return OpsProcess(pid: pid, stdout: OpsOutput(fd: outPipe[0]), stderr: OpsOutput(fd: errPipe[0]),
                          commandLine: ([executable] + arguments).joined(separator: " "))
    }

    /// Sets FD_CLOEXEC on every fd from 3 up (glibc's posix_spawn_file_actions_addclosefrom_np
    /// does not import into Swift). dup2 in the child clears it on the fds it places.
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

    // MARK: startup lines

    /// Waits for `count` `listening on …` lines and returns what follows `listening on ` in each.
    func waitForListening(count: Int = 1, timeout: Double = 10) throws -> [String] {
        let deadline = Ops.now() + timeout
        while true {
            let found = stdout.lines.filter { $0.hasPrefix("listening on ") }.map { String($0.dropFirst("listening on ".count)) }
            if found.count >= count { return found }
            if let end = pollExit() {
                stderr.waitForEOF(timeout: 2)
                throw OpsFailure("\(commandLine) ended (\(end)) before listening; stdout: \(stdout.text.debugDescription) stderr: \(stderr.text)")
            }
            if Ops.now() >= deadline {
                throw OpsFailure("\(commandLine) printed \(found.count) of \(count) listening lines in \(timeout) s; stdout: \(stdout.text.debugDescription) stderr: \(stderr.text)")
            }
            usleep(10_000)
        }
    }

    /// Waits for the first listening line and returns the TCP port in it.
    func waitForTCPPort(timeout: Double = 10) throws -> Int {
        let address = try waitForListening(count: 1, timeout: timeout)[0]
        guard let port = Ops.port(of: address) else { throw OpsFailure("no port in listening line \(address.debugDescription)") }
        return port
    }

    /// The metrics port from the line `metrics on http://HOST:PORT/metrics` on stdout (or, from
    /// servers before issue 11, the info log line of the same words).
    func waitForMetricsPort(timeout: Double = 10) throws -> Int {
        let deadline = Ops.now() + timeout
        while true {
            for line in stdout.lines + stderr.lines {
                guard let start = line.range(of: "metrics on http://"),
                      let end = line.range(of: "/metrics", range: start.upperBound..<line.endIndex) else { continue }
                let hostPort = String(line[start.upperBound..<end.lowerBound])
                if let port = Ops.port(of: hostPort) { return port }
            }
            if let end = pollExit() { throw OpsFailure("\(commandLine) ended (\(end)) before announcing metrics; stderr: \(stderr.text)") }
            if Ops.now() >= deadline { throw OpsFailure("no `metrics on http://…` line within \(timeout) s; stderr: \(stderr.text)") }
            usleep(10_000)
        }
    }

    // MARK: signals and exit

    func send(signal: CInt) {
        guard pollExit() == nil else { return }
        Glibc.kill(pid, signal)
    }

    /// Reaps the child if it ended; never blocks.
    func pollExit() -> End? {
        end.withLock { known in
            if let known { return known }
            var raw: CInt = 0
            guard waitpid(pid, &raw, WNOHANG) == pid else { return nil }
            // WIFEXITED and friends are macros that do not import.
            let result: End = raw & 0x7F == 0 ? .exited((raw >> 8) & 0xFF) : .signaled(raw & 0x7F)
            known = result
            return result
        }
    }

    func waitForExit(timeout: Double) -> End? {
        var result: End?
        _ = Ops.waitUntil(timeout: timeout, interval: 0.005) {
            result = pollExit()
            return result != nil
        }
        return result
    }

    /// SIGKILL if still running, then reap.
    func kill() {
        if pollExit() == nil {
            Glibc.kill(pid, SIGKILL)
            _ = waitForExit(timeout: 10)
        }
    }

    // MARK: /proc

    /// Resident set size in KiB, from /proc/PID/status.
    func residentKiB() -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
        }
        return nil
    }

    /// The child's open fds that are sockets, by fd number.
    func socketFDs() -> [CInt] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd") else { return [] }
        return entries.compactMap { name -> CInt? in
            guard let fd = CInt(name),
                  let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(name)"),
                  target.hasPrefix("socket:") else { return nil }
            return fd
        }
    }

    /// How many fds the child has open.
    func openFDCount() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? 0
    }
}

extension Ops {
    /// The port at the end of `127.0.0.1:8887` or `[::1]:8887`.
    static func port(of address: String) -> Int? {
        guard let colon = address.lastIndex(of: ":") else { return nil }
        return Int(address[address.index(after: colon)...].prefix(while: \.isNumber))
    }
}
