// Running the built executables (reflectd, reflect, reflect-bench) as a user runs them, over
// loopback, with a deadline on every wait.

import Foundation
import Glibc
import XCTest

/// Where `swift build` put the executables: next to the running test bundle.
enum Tools {
    static let directory: URL = {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
        // On Linux the test runner is `…/debug/<Package>PackageTests.xctest`, a file in the build directory.
        if dir.lastPathComponent.hasSuffix(".xctest") { dir = dir.deletingLastPathComponent() }
        return dir
    }()

    static func path(_ name: String) throws -> String {
        let url = directory.appendingPathComponent(name)
        guard FileManager.default.isExecutableFile(atPath: url.path) else {
            throw XCTSkip("\(name) is not built in \(directory.path); run `swift build` first")
        }
        return url.path
    }
}

/// What a finished process left.
struct Finished {
    /// The exit status, or nil if it was killed at the deadline.
    let status: Int32?
    let stdout: String
    let stderr: String

    var description: String { "status \(status.map(String.init) ?? "timed out"), stderr: \(stderr.debugDescription)" }
}

/// Where a tool's stdin comes from.
enum Input {
    /// These bytes through a pipe, which is then closed (end of input).
    case text(String)
    /// These bytes through a pipe that stays open until the process ends.
    case textThenWait(String)
    /// A regular file.
    case file(URL)
    /// /dev/null.
    case null
}

/// Runs a tool to completion (or to `timeout` seconds, then kills it).
func runTool(_ name: String, _ arguments: [String], input: Input = .null, timeout: Double = 30) throws -> Finished {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: try Tools.path(name))
    process.arguments = arguments
    let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("tools-tests-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: scratch) }
    let out = scratch.appendingPathComponent("stdout"), err = scratch.appendingPathComponent("stderr")
    _ = FileManager.default.createFile(atPath: out.path, contents: nil)
    _ = FileManager.default.createFile(atPath: err.path, contents: nil)
    let outHandle = try FileHandle(forWritingTo: out), errHandle = try FileHandle(forWritingTo: err)
    process.standardOutput = outHandle
    process.standardError = errHandle

    var pipe: Pipe?
    var keepOpen = false
    switch input {
    case .text(let text), .textThenWait(let text):
        let p = Pipe()
        pipe = p
        process.standardInput = p
        if case .textThenWait = input { keepOpen = true }
        try process.run()
        // Written from another thread: a large input fills the pipe before the tool reads it.
        let writer = p.fileHandleForWriting
        let data = Data(text.utf8)
        let done = DispatchSemaphore(value: 0)
        let closeAfterwards = !keepOpen
        Thread.detachNewThread {
            try? writer.write(contentsOf: data)
            if closeAfterwards { try? writer.close() }
            done.signal()
        }
        _ = done.wait(timeout: .now() + timeout)
    case .file(let url):
        process.standardInput = try FileHandle(forReadingFrom: url)
        try process.run()
    case .null:
        process.standardInput = FileHandle(forReadingAtPath: "/dev/null")
        try process.run()
    }

    let deadline = Date().addingTimeInterval(timeout)
    while process.isRunning && Date() < deadline { usleep(10_000) }
    var timedOut = false
    if process.isRunning {
        timedOut = true
        kill(process.processIdentifier, SIGKILL)
    }
    process.waitUntilExit()
    if keepOpen, let pipe { try? pipe.fileHandleForWriting.close() }
    try? outHandle.close()
    try? errHandle.close()
    return Finished(
        status: timedOut ? nil : process.terminationStatus,
        stdout: (try? String(contentsOf: out, encoding: .utf8)) ?? "",
        stderr: (try? String(contentsOf: err, encoding: .utf8)) ?? "")
}

/// A reflectd started on 127.0.0.1 and a free port, stopped with SIGTERM by `stop()`.
final class Reflectd {
    let process = Process()
    let port: Int

    /// `arguments` come after the address and log level (for example `--unix PATH`).
    init(arguments: [String] = []) throws {
        process.executableURL = URL(fileURLWithPath: try Tools.path("reflectd"))
        process.arguments = ["--host", "127.0.0.1", "--port", "0", "--log-level", "warning"] + arguments
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.standardError
        try process.run()
        // The startup line: `listening on 127.0.0.1:PORT`.
        let fd = out.fileHandleForReading.fileDescriptor
        var line = ""
        let deadline = Date().addingTimeInterval(10)
        while !line.contains("\n") && Date() < deadline {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 100) > 0 else { continue }
            var byte: UInt8 = 0
            guard read(fd, &byte, 1) == 1 else { break }
            line.unicodeScalars.append(Unicode.Scalar(byte))
        }
        guard line.hasPrefix("listening on "), let colon = line.lastIndex(of: ":"),
              let port = Int(line[line.index(after: colon)...].trimmingCharacters(in: .whitespacesAndNewlines)) else {
            process.terminate()
            throw TestError("reflectd did not announce its port; it printed \(line.debugDescription)")
        }
        self.port = port
    }

    func stop() {
        guard process.isRunning else { return }
        process.terminate()  // SIGTERM: a graceful stop
        let deadline = Date().addingTimeInterval(5)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }
}

struct TestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
