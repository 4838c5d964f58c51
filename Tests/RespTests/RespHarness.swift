import Foundation
import Glibc
import TestSupport
import XCTest

/// A server run as a child process on an ephemeral loopback port: `resp-server`, or for the
/// byte-for-byte comparison the real `redis-server` (the shared harness in TestSupport).
typealias ServerUnderTest = ChildServer

extension ChildServer {
    /// `resp-server --host 127.0.0.1 --port 0 ARGUMENTS`, once it printed `listening on ...`.
    static func resp(_ arguments: [String] = [], stderr: StderrSink = .file) throws -> ChildServer {
        try ChildServer(binary: try binary("resp-server"), arguments: ["--host", "127.0.0.1", "--port", "0"] + arguments,
                        stderr: stderr)
    }

    /// `redis-server --save '' --appendonly no --port P` on a free port, once it answers.
    static func redis() throws -> ChildServer {
        guard let path = Tools.path("redis-server") else { throw XCTSkip("redis-server is not installed (CI installs it)") }
        let port = try TestListener().port  // closed again at once: free for redis-server
        return try ChildServer(binary: URL(fileURLWithPath: path),
                               arguments: ["--save", "", "--appendonly", "no", "--port", "\(port)", "--bind", "127.0.0.1"],
                               announcesPort: false, port: port)
    }
}

typealias Failure = HarnessFailure

/// The third-party tools: redis-cli and redis-benchmark (Debian's redis-tools).
enum Tools {
    static func path(_ name: String) -> String? { TestProcess.installed(name) }

    static func require(_ name: String) throws -> String {
        guard let path = path(name) else { throw XCTSkip("\(name) is not installed (CI installs redis-tools)") }
        return path
    }

    /// Runs a tool with `input` on stdin; its status, stdout and stderr. Killed after `timeout`.
    static func run(_ name: String, _ arguments: [String], input: [UInt8] = [], timeout: Double = 60) throws
        -> (status: Int32, stdout: [UInt8], stderr: String) {
        let result = try TestProcess.run(try require(name), arguments, input: .bytes(input), timeout: timeout)
        guard let status = result.status else {
            throw Failure("\(name) \(arguments.joined(separator: " ")) did not finish within \(timeout) s (or was killed)")
        }
        return (status, result.stdoutBytes, result.stderr)
    }

    /// `redis-cli -h 127.0.0.1 -p PORT ARGS`, its stdout as text.
    static func cli(_ port: Int, _ arguments: [String], input: [UInt8] = [], timeout: Double = 60) throws -> String {
        let result = try run("redis-cli", ["-h", "127.0.0.1", "-p", "\(port)"] + arguments, input: input, timeout: timeout)
        XCTAssertEqual(result.status, 0, "redis-cli \(arguments) failed: \(result.stderr)")
        return String(decoding: result.stdout, as: UTF8.self)
    }
}
