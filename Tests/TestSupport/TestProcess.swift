// The one process runner of the tests: an executable of this package (or a third-party one) run
// as an operator runs it. posix_spawn (optionally through /bin/sh for `ulimit` or LISTEN_PID=$$,
// optionally with inherited listening sockets from fd 3), stdin from /dev/null, bytes or a file,
// stdout and stderr on pipes drained by threads (stderr optionally never read), signals, bounded
// waits, and /proc readings of the child.

import Foundation
import Glibc

/// A child process. `kill()` (SIGKILL and reap) is safe to call any number of times, and runs on
/// deinit.
public final class TestProcess: @unchecked Sendable {
    // @unchecked: `end` and `announced` are behind their locks; the rest is immutable.

    /// How a child process ended.
    public enum End: Equatable, CustomStringConvertible {
        case exited(Int32)
        case signaled(Int32)

        public var description: String {
            switch self {
            case .exited(let code): return "exit status \(code)"
            case .signaled(let signal): return "killed by signal \(signal)"
            }
        }
    }

    /// Where the child's stdin comes from.
    public enum Input {
        /// /dev/null.
        case null
        /// These bytes through a pipe, which is then closed (end of input).
        case bytes([UInt8])
        /// These bytes through a pipe that stays open until the process ends.
        case bytesThenWait([UInt8])
        /// A regular file.
        case file(String)
    }

    /// What happens to the child's stderr.
    public enum ErrorOutput {
        /// Read as it comes (``stderr``).
        case collected
        /// A pipe nobody reads until ``ProcessOutput/resume()``: a stalled log reader.
        case paused
    }

    /// The child's process id.
    public let pid: pid_t
    /// The child's process id, under Foundation.Process's name (ChildServer's `process` was one).
    public var processIdentifier: Int32 { pid }
    /// Everything the child wrote on stdout.
    public let stdout: ProcessOutput
    /// Everything the child wrote on stderr (unless paused).
    public let stderr: ProcessOutput
    /// The command line, for failure messages.
    public let commandLine: String
    private let end = Locked<End?>(nil)
    private let announced = Locked<Int?>(nil)
    /// The write end of a stdin pipe kept open until the process ends.
    private let heldInput: CInt

    private init(pid: pid_t, stdout: ProcessOutput, stderr: ProcessOutput, commandLine: String, heldInput: CInt) {
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self.commandLine = commandLine
        self.heldInput = heldInput
    }

    deinit {
        kill()
        stderr.resume()
        if heldInput >= 0 { Glibc.close(heldInput) }
    }

    // MARK: finding and starting

    /// An executable of this package, built next to the running test bundle (for example
    /// `.build/debug/NAME` beside the `.xctest`).
    public static func binaryPath(_ name: String) throws -> String {
        var directories: [String] = []
        if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            var directory = (exe as NSString).deletingLastPathComponent
            // On Linux the test runner may be `…/debug/<Package>PackageTests.xctest`, a file in the build directory.
            if directory.hasSuffix(".xctest") { directory = (directory as NSString).deletingLastPathComponent }
            directories.append(directory)
        }
        for bundle in Bundle.allBundles where bundle.bundlePath.hasSuffix(".xctest") {
            directories.append((bundle.bundlePath as NSString).deletingLastPathComponent)
        }
        directories.append((Bundle.main.bundlePath as NSString).deletingLastPathComponent)
        if let first = CommandLine.arguments.first {
            directories.append((first as NSString).deletingLastPathComponent)
        }
        for directory in directories {
            let candidate = directory + "/" + name
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw TestFailure("no built \(name) next to the test bundle (looked in \(directories)); run swift build first")
    }

    /// A program on PATH (or /usr/bin), or nil: for third-party tools that CI installs.
    public static func installed(_ name: String) -> String? {
        for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") + ["/usr/bin", "/usr/local/bin"] {
            let candidate = "\(directory)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// Starts the built reflectd directly.
    public static func reflectd(_ arguments: [String], stderr: ErrorOutput = .collected) throws -> TestProcess {
        try spawn(try binaryPath("reflectd"), arguments, stderr: stderr)
    }

    /// Starts the built reflectd through `/bin/sh -c`, whose `script` runs first and ends with
    /// `exec "$0" "$@"` (the shell's pid, and so `$$`, becomes reflectd's pid).
    public static func reflectd(shellPrologue script: String, _ arguments: [String],
                                environment: [String: String] = [:], inheritedListeners: [CInt] = []) throws -> TestProcess {
        try spawn("/bin/sh", ["-c", script + "\nexec \"$0\" \"$@\"", try binaryPath("reflectd")] + arguments,
                  environment: environment, inheritedListeners: inheritedListeners)
    }

    /// Starts `executable` (a path) and waits (at most `timeout` seconds) for its first
    /// `listening on HOST:PORT` line; ``port`` is then that port.
    public static func server(_ executable: String, _ arguments: [String], stderr: ErrorOutput = .collected,
                              timeout: Double = 10) throws -> TestProcess {
        let process = try spawn(executable, arguments, stderr: stderr)
        _ = try process.waitForTCPPort(timeout: timeout)
        return process
    }

    /// Starts `executable` on a `port` it does not announce, and waits (at most `timeout` seconds)
    /// until it accepts there; ``port`` is then that port.
    public static func server(_ executable: String, _ arguments: [String], fixedPort port: Int,
                              timeout: Double = 10) throws -> TestProcess {
        let process = try spawn(executable, arguments)
        guard eventually(timeout: timeout, { LoopbackSockets.somethingListens(port: port) }) else {
            process.kill()
            throw TestFailure("\(process.commandLine) does not accept on port \(port) within \(timeout) s; stderr: \(process.stderr.text)")
        }
        process.announced.withLock { $0 = port }
        return process
    }

    /// posix_spawn `executable`: stdin from `input`, stdout and stderr on pipes, default signal
    /// dispositions and an empty mask (as from a shell), `environment` added to ours, and
    /// `inheritedListeners` placed at fds 3, 4, … without close-on-exec (as systemd passes them).
    public static func spawn(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                             inheritedListeners: [CInt] = [], input: Input = .null, stderr: ErrorOutput = .collected) throws -> TestProcess {
        // Nothing else is inherited: fds this test process has open (from earlier tests, from
        // XCTest) would otherwise count against the child's fd limit, as a user's shell would not.
        markEveryFDCloseOnExec()
        var outPipe: [CInt] = [-1, -1], errPipe: [CInt] = [-1, -1], inPipe: [CInt] = [-1, -1]
        guard pipe(&outPipe) == 0, pipe(&errPipe) == 0 else { throw TestFailure("pipe: errno \(errno)") }
        for fd in outPipe + errPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var inputBytes: [UInt8]? = nil
        var holdInput = false
        switch input {
        case .bytes(let bytes): inputBytes = bytes
        case .bytesThenWait(let bytes): inputBytes = bytes; holdInput = true
        case .null, .file: break
        }
        if inputBytes != nil {
            guard pipe(&inPipe) == 0 else { throw TestFailure("pipe: errno \(errno)") }
            for fd in inPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        }
        // Each inherited socket is first copied above the range 3..<3+n, so that no dup2 below
        // overwrites a source still needed and none is dup2(fd, fd), which keeps close-on-exec.
        let sources = inheritedListeners.map { fcntl($0, F_DUPFD_CLOEXEC, 100) }
        defer { for fd in sources where fd >= 0 { Glibc.close(fd) } }
        guard !sources.contains(where: { $0 < 0 }) else { throw TestFailure("fcntl(F_DUPFD_CLOEXEC): errno \(errno)") }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        switch input {
        case .null: posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        case .file(let path): posix_spawn_file_actions_addopen(&actions, 0, path, O_RDONLY, 0)
        case .bytes, .bytesThenWait: posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
        }
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
        if inPipe[0] >= 0 { Glibc.close(inPipe[0]) }
        guard rc == 0 else {
            Glibc.close(outPipe[0])
            Glibc.close(errPipe[0])
            if inPipe[1] >= 0 { Glibc.close(inPipe[1]) }
            throw TestFailure("posix_spawn \(executable): \(String(cString: strerror(rc)))")
        }
        var heldInput: CInt = -1
        if let inputBytes {
            // Written from another thread: a large input fills the pipe before the child reads it.
            let writeEnd = inPipe[1]
            let closeAfterwards = !holdInput
            let writer = writeEnd
            Thread.detachNewThread {
                inputBytes.withUnsafeBytes { raw in
                    var offset = 0
                    while offset < raw.count {
                        let n = Glibc.write(writer, raw.baseAddress! + offset, raw.count - offset)
                        if n < 0 && errno == EINTR { continue }
                        if n <= 0 { break }
                        offset += n
                    }
                }
                if closeAfterwards { Glibc.close(writer) }
            }
            if holdInput { heldInput = writeEnd }
        }
        return TestProcess(pid: pid, stdout: ProcessOutput(fd: outPipe[0]), stderr: ProcessOutput(fd: errPipe[0], paused: stderr == .paused),
                           commandLine: ([executable] + arguments).joined(separator: " "), heldInput: heldInput)
    }

    /// Sets FD_CLOEXEC on every fd from 3 up (glibc's posix_spawn_file_actions_addclosefrom_np
    /// does not import into Swift). dup2 in the child clears it on the fds it places.
    public static func markEveryFDCloseOnExec() {
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

    // MARK: running to the end

    /// What a process run to its end left.
    public struct Finished: CustomStringConvertible {
        /// The exit status, or nil if it was killed at the deadline (or by a signal).
        public let status: Int32?
        /// stdout as text.
        public let stdout: String
        /// stdout byte for byte (a binary protocol's replies).
        public let stdoutBytes: [UInt8]
        /// stderr as text.
        public let stderr: String

        public var description: String { "status \(status.map(String.init) ?? "timed out"), stderr: \(stderr.debugDescription)" }
    }

    /// Runs `executable` to its end, or to `timeout` seconds (then kills it).
    public static func run(_ executable: String, _ arguments: [String], input: Input = .null, timeout: Double = 30) throws -> Finished {
        let process = try spawn(executable, arguments, input: input)
        let end = process.waitForExit(timeout: timeout)
        if end == nil { process.kill() }
        process.stdout.waitForEOF(timeout: 5)
        process.stderr.waitForEOF(timeout: 5)
        var status: Int32? = nil
        if case .exited(let code) = end { status = code }
        return Finished(status: status, stdout: process.stdout.text, stdoutBytes: process.stdout.bytes, stderr: process.stderr.text)
    }

    // MARK: startup lines

    /// Waits for `count` `listening on …` lines on stdout and returns what follows
    /// `listening on ` in each.
    public func waitForListening(count: Int, timeout: Double = 10) throws -> [String] {
        let deadline = monotonicSeconds() + timeout
        while true {
            let found = stdout.lines.filter { $0.hasPrefix("listening on ") }.map { String($0.dropFirst("listening on ".count)) }
            if found.count >= count { return found }
            if let end = pollExit() {
                stderr.waitForEOF(timeout: 2)
                throw TestFailure("\(commandLine) ended (\(end)) before listening; stdout: \(stdout.text.debugDescription) stderr: \(stderr.text)")
            }
            if monotonicSeconds() >= deadline {
                throw TestFailure("\(commandLine) printed \(found.count) of \(count) listening lines in \(timeout) s; stdout: \(stdout.text.debugDescription) stderr: \(stderr.text)")
            }
            usleep(10_000)
        }
    }

    /// Waits for the first `listening on HOST:PORT` line; returns the line and the port in it.
    public func waitForListeningLine(timeout: Double = 10) throws -> (line: String, port: Int) {
        let address = try waitForListening(count: 1, timeout: timeout)[0]
        guard let port = LoopbackSockets.port(of: address) else {
            throw TestFailure("cannot parse a port from \(address.debugDescription)")
        }
        announced.withLock { $0 = $0 ?? port }
        return ("listening on \(address)", port)
    }

    /// Waits for the first listening line and returns the TCP port in it.
    public func waitForTCPPort(timeout: Double = 10) throws -> Int {
        try waitForListeningLine(timeout: timeout).port
    }

    /// The port of the first listening line once one was waited for (``server(_:_:stderr:timeout:)``
    /// waits for it); 0 before.
    public var port: Int { announced.withLock { $0 } ?? 0 }

    /// The metrics port from the line `metrics on http://HOST:PORT/metrics` on stdout (or in the
    /// log, where servers before issue 11 printed it).
    public func waitForMetricsPort(timeout: Double = 10) throws -> Int {
        let deadline = monotonicSeconds() + timeout
        while true {
            for line in stdout.lines + stderr.lines {
                guard let start = line.range(of: "metrics on http://"),
                      let end = line.range(of: "/metrics", range: start.upperBound..<line.endIndex) else { continue }
                let hostPort = String(line[start.upperBound..<end.lowerBound])
                if let port = LoopbackSockets.port(of: hostPort) { return port }
            }
            if let end = pollExit() { throw TestFailure("\(commandLine) ended (\(end)) before announcing metrics; stderr: \(stderr.text)") }
            if monotonicSeconds() >= deadline { throw TestFailure("no `metrics on http://…` line within \(timeout) s; stdout: \(stdout.text) stderr: \(stderr.text)") }
            usleep(10_000)
        }
    }

    // MARK: signals and exit

    /// True until the child has ended (and been reaped).
    public var isRunning: Bool { pollExit() == nil }

    /// Sends `signal` to the child unless it has ended.
    public func send(signal: CInt) {
        guard pollExit() == nil else { return }
        Glibc.kill(pid, signal)
    }

    /// Reaps the child if it ended; never blocks.
    public func pollExit() -> End? {
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

    /// Waits at most `timeout` seconds for the child to end; how it ended, or nil if it still runs.
    public func waitForExit(timeout: Double) -> End? {
        var result: End?
        _ = eventually(timeout: timeout, interval: 0.005) {
            result = pollExit()
            return result != nil
        }
        return result
    }

    /// SIGKILL if still running, then reap.
    public func kill() {
        if pollExit() == nil {
            Glibc.kill(pid, SIGKILL)
            _ = waitForExit(timeout: 10)
        }
    }

    // MARK: /proc

    /// Resident set size in KiB, from /proc/PID/status.
    public func residentKiB() -> Int? { status("VmRSS:") }

    /// The most the resident set has been since the child started, in KiB (VmHWM, the high-water
    /// mark): a peak between two samples of ``residentKiB()`` does not escape it.
    public func peakResidentKiB() -> Int? { status("VmHWM:") }

    private func status(_ field: String) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix(field) {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
        }
        return nil
    }

    /// User plus system CPU time the child has used so far, from /proc/PID/stat.
    public func cpuSeconds() -> Double? {
        guard let stat = readProcFile("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return nil }
        // Fields after "(comm)" start at field 3 (state); utime is field 14, stime field 15.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let utime = Double(fields[11]), let stime = Double(fields[12]) else { return nil }
        return (utime + stime) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// The child's open fds that are sockets, by fd number.
    public func socketFDs() -> [CInt] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd") else { return [] }
        return entries.compactMap { name -> CInt? in
            guard let fd = CInt(name),
                  let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(name)"),
                  target.hasPrefix("socket:") else { return nil }
            return fd
        }
    }

    /// How many fds the child has open.
    public func openFDCount() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? 0
    }
}
