import Foundation
import Glibc
import TestSupport
import XCTest

/// A server run as a child process on an ephemeral loopback port: `resp-server`, or for the
/// byte-for-byte comparison the real `redis-server`.
final class ServerUnderTest {
    let process = Process()
    let port: Int
    private let stderrFile: URL

    /// `resp-server --host 127.0.0.1 --port 0 ARGUMENTS`, once it printed `listening on ...`.
    static func resp(_ arguments: [String] = []) throws -> ServerUnderTest {
        try ServerUnderTest(binary: try binary("resp-server"), arguments: ["--host", "127.0.0.1", "--port", "0"] + arguments,
                            announcesPort: true)
    }

    /// `redis-server --save '' --appendonly no --port P` on a free port, once it answers.
    static func redis() throws -> ServerUnderTest {
        guard let path = Tools.path("redis-server") else { throw XCTSkip("redis-server is not installed (CI installs it)") }
        let port = try TestListener().port  // closed again at once: free for redis-server
        return try ServerUnderTest(binary: URL(fileURLWithPath: path),
                                   arguments: ["--save", "", "--appendonly", "no", "--port", "\(port)", "--bind", "127.0.0.1"],
                                   announcesPort: false, port: port)
    }

    private init(binary: URL, arguments: [String], announcesPort: Bool, port fixed: Int = 0) throws {
        stderrFile = FileManager.default.temporaryDirectory.appendingPathComponent("resp-\(UUID().uuidString).err")
        _ = FileManager.default.createFile(atPath: stderrFile.path, contents: nil)
        let stdout = Pipe()
        process.executableURL = binary
        process.arguments = arguments
        process.standardOutput = announcesPort ? stdout : FileHandle.nullDevice
        process.standardError = try FileHandle(forWritingTo: stderrFile)
        process.standardInput = FileHandle.nullDevice
        try process.run()
        if announcesPort {
            let line = Self.readLine(stdout.fileHandleForReading.fileDescriptor, timeout: 10)
            guard let line, line.hasPrefix("listening on 127.0.0.1:"), let port = Int(line.split(separator: ":").last ?? "") else {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
                throw Failure("resp-server did not announce its port; stdout: \(line ?? "nothing")")
            }
            self.port = port
        } else {
            port = fixed
            guard eventually(timeout: 10, { (try? TestSocket.connect(port: fixed, timeout: 1)) != nil }) else {
                kill(process.processIdentifier, SIGKILL)
                throw Failure("\(binary.lastPathComponent) does not accept on port \(fixed)")
            }
        }
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: stderrFile)
    }

    var log: String { (try? String(contentsOf: stderrFile, encoding: .utf8)) ?? "" }

    var residentKiB: Int {
        let status = (try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8)) ?? ""
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? -1
        }
        return -1
    }

    func signal(_ signal: Int32) { kill(process.processIdentifier, signal) }

    func waitForExit(timeout: Double = 8) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        return process.isRunning ? nil : process.terminationStatus
    }

    /// A binary built next to the test bundle (`.build/debug/NAME` beside the `.xctest`).
    static func binary(_ name: String) throws -> URL {
        var candidates: [URL] = []
        if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            candidates.append(URL(fileURLWithPath: exe).deletingLastPathComponent())
        }
        for bundle in Bundle.allBundles where bundle.bundlePath.hasSuffix(".xctest") {
            candidates.append(bundle.bundleURL.deletingLastPathComponent())
        }
        for directory in candidates {
            let url = directory.appendingPathComponent(name)
            if FileManager.default.isExecutableFile(atPath: url.path) { return url }
        }
        throw Failure("no \(name) binary next to the tests; looked in \(candidates.map(\.path))")
    }

    static func readLine(_ fd: CInt, timeout: Double) -> String? {
        var bytes: [UInt8] = []
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 100) > 0 else { continue }
            var byte: UInt8 = 0
            guard read(fd, &byte, 1) == 1 else { return nil }
            if byte == UInt8(ascii: "\n") { return String(decoding: bytes, as: UTF8.self) }
            bytes.append(byte)
        }
        return nil
    }
}

struct Failure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The third-party tools: redis-cli and redis-benchmark (Debian's redis-tools).
enum Tools {
    static func path(_ name: String) -> String? {
        for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") + ["/usr/bin"] {
            let candidate = "\(directory)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    static func require(_ name: String) throws -> String {
        guard let path = path(name) else { throw XCTSkip("\(name) is not installed (CI installs redis-tools)") }
        return path
    }

    /// Runs a tool with `input` on stdin; its status, stdout and stderr. Killed after `timeout`.
    static func run(_ name: String, _ arguments: [String], input: [UInt8] = [], timeout: Double = 60) throws
        -> (status: Int32, stdout: [UInt8], stderr: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try require(name))
        process.arguments = arguments
        let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        let outBox = Locked<[UInt8]>([]), errBox = Locked<[UInt8]>([])
        let readers = [TestThread { outBox.withLock { $0 = Array(stdout.fileHandleForReading.readDataToEndOfFile()) } },
                       TestThread { errBox.withLock { $0 = Array(stderr.fileHandleForReading.readDataToEndOfFile()) } }]
        let writer = TestThread { [input] in
            stdin.fileHandleForWriting.write(Data(input))
            try? stdin.fileHandleForWriting.close()
        }
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(5_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            throw Failure("\(name) \(arguments.joined(separator: " ")) did not finish within \(timeout) s")
        }
        _ = writer.join(timeout: 5)
        for reader in readers { _ = reader.join(timeout: 5) }
        return (process.terminationStatus, outBox.withLock { $0 }, String(decoding: errBox.withLock { $0 }, as: UTF8.self))
    }

    /// `redis-cli -h 127.0.0.1 -p PORT ARGS`, its stdout as text.
    static func cli(_ port: Int, _ arguments: [String], input: [UInt8] = [], timeout: Double = 60) throws -> String {
        let result = try run("redis-cli", ["-h", "127.0.0.1", "-p", "\(port)"] + arguments, input: input, timeout: timeout)
        XCTAssertEqual(result.status, 0, "redis-cli \(arguments) failed: \(result.stderr)")
        return String(decoding: result.stdout, as: UTF8.self)
    }
}
