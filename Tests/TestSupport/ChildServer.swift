// A server executable of this package (or a third-party one) run as a child process on a
// loopback port, for the tests of the examples: started, its port learned from its
// `listening on HOST:PORT` line (or a fixed port polled until it accepts), killed on deinit.

import Foundation
import Glibc

public struct HarnessFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

public final class ChildServer {
    /// Where the server's stderr goes.
    public enum StderrSink {
        /// A temporary file, read back by ``log`` for failure messages.
        case file
        /// A pipe whose read end the test holds open and never reads, as a stalled log reader
        /// (a paused `| less`, a stuck log shipper): once its 64 KiB fill, a server that writes
        /// its log synchronously blocks in the kernel (`anon_pipe_write`).
        case pipeNeverRead
    }

    public let process = Process()
    public let port: Int
    private let stderrFile: URL
    /// The never-read pipe of ``StderrSink/pipeNeverRead``, kept open until the server is gone.
    private let stalledStderr: Pipe?

    /// Starts `binary ARGUMENTS`. With `announcesPort`, waits (at most 10 s) for its
    /// `listening on 127.0.0.1:PORT` line on stdout; otherwise polls `port` until it accepts.
    public init(binary: URL, arguments: [String], announcesPort: Bool = true, port fixed: Int = 0,
                stderr sink: StderrSink = .file) throws {
        let name = binary.lastPathComponent
        stderrFile = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString).err")
        _ = FileManager.default.createFile(atPath: stderrFile.path, contents: nil)
        let stdout = Pipe()
        process.executableURL = binary
        process.arguments = arguments
        process.standardOutput = announcesPort ? stdout : FileHandle.nullDevice
        switch sink {
        case .file:
            stalledStderr = nil
            process.standardError = try FileHandle(forWritingTo: stderrFile)
        case .pipeNeverRead:
            let pipe = Pipe()
            stalledStderr = pipe
            process.standardError = pipe
        }
        process.standardInput = FileHandle.nullDevice
        try process.run()
        if announcesPort {
            let line = Self.readLine(stdout.fileHandleForReading.fileDescriptor, timeout: 10)
            guard let line, line.hasPrefix("listening on 127.0.0.1:"), let port = Int(line.split(separator: ":").last ?? "") else {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
                throw HarnessFailure("\(name) did not announce its port; stdout: \(line ?? "nothing")")
            }
            self.port = port
        } else {
            port = fixed
            guard eventually(timeout: 10, { (try? TestSocket.connect(port: fixed, timeout: 1)) != nil }) else {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
                throw HarnessFailure("\(name) does not accept on port \(fixed)")
            }
        }
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? stalledStderr?.fileHandleForReading.close()
        try? FileManager.default.removeItem(at: stderrFile)
    }

    /// What the server logged on stderr, for failure messages (nothing for a never-read pipe).
    public var log: String {
        if stalledStderr != nil { return "(stderr went to a pipe that is never read)" }
        return (try? String(contentsOf: stderrFile, encoding: .utf8)) ?? ""
    }

    /// Bytes the server wrote into the never-read stderr pipe and nobody took (FIONREAD): at
    /// the pipe's capacity (64 KiB by default) once the server has logged that much. 0 for a file.
    public var stderrPipeBytes: Int {
        guard let stalledStderr else { return 0 }
        var count: CInt = 0
        // FIONREAD (0x541B on Linux; Glibc does not import the ioctl request macros).
        guard ioctl(stalledStderr.fileHandleForReading.fileDescriptor, 0x541B, &count) == 0 else { return -1 }
        return Int(count)
    }

    /// The server's resident set size in KiB, from /proc.
    public var residentKiB: Int { status("VmRSS:") }

    /// The most the server's resident set has been since it started, in KiB (VmHWM, the high
    /// water mark): a peak between two samples of ``residentKiB`` does not escape it.
    public var peakResidentKiB: Int { status("VmHWM:") }

    private func status(_ field: String) -> Int {
        let status = (try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8)) ?? ""
        for line in status.split(separator: "\n") where line.hasPrefix(field) {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? -1
        }
        return -1
    }

    /// Sends `signal` to the server.
    public func signal(_ signal: Int32) { kill(process.processIdentifier, signal) }

    /// Waits at most `timeout` seconds for the server to exit; its exit status, or nil if it is
    /// still running then.
    public func waitForExit(timeout: Double = 8) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        return process.isRunning ? nil : process.terminationStatus
    }

    /// An executable of this package, built next to the test bundle (`.build/debug/NAME`
    /// beside the `.xctest`).
    public static func binary(_ name: String) throws -> URL {
        var candidates: [URL] = []
        if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            candidates.append(URL(fileURLWithPath: exe).deletingLastPathComponent())
        }
        for bundle in Bundle.allBundles where bundle.bundlePath.hasSuffix(".xctest") {
            candidates.append(bundle.bundleURL.deletingLastPathComponent())
        }
        candidates.append(Bundle.main.bundleURL)
        for directory in candidates {
            let url = directory.appendingPathComponent(name)
            if FileManager.default.isExecutableFile(atPath: url.path) { return url }
        }
        throw HarnessFailure("no \(name) binary next to the tests; looked in \(candidates.map(\.path))")
    }

    /// One line from a pipe, read a byte at a time so nothing after it is consumed.
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
