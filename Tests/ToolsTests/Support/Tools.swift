// Running the built executables (reflectd, reflect, reflect-bench) as a user runs them, over
// loopback, with a deadline on every wait: thin views of TestSupport's TestProcess.

import Foundation
import Glibc
import TestSupport
import XCTest

/// Where `swift build` put the executables: next to the running test bundle.
enum Tools {
    /// The path of the built `name`; the test is skipped when it is not built.
    static func path(_ name: String) throws -> String {
        do {
            return try TestProcess.binaryPath(name)
        } catch {
            throw XCTSkip("\(name) is not built next to the tests; run `swift build` first (\(error))")
        }
    }
}

/// What a finished process left.
typealias Finished = TestProcess.Finished

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

    var processInput: TestProcess.Input {
        switch self {
        case .text(let text): return .bytes(Array(text.utf8))
        case .textThenWait(let text): return .bytesThenWait(Array(text.utf8))
        case .file(let url): return .file(url.path)
        case .null: return .null
        }
    }
}

/// Runs a tool to completion (or to `timeout` seconds, then kills it).
func runTool(_ name: String, _ arguments: [String], input: Input = .null, timeout: Double = 30) throws -> Finished {
    try TestProcess.run(try Tools.path(name), arguments, input: input.processInput, timeout: timeout)
}

/// A reflectd started on 127.0.0.1 and a free port, stopped with SIGTERM by `stop()`.
final class Reflectd {
    let process: TestProcess
    var port: Int { process.port }

    /// `arguments` come after the address and log level (for example `--unix PATH`).
    init(arguments: [String] = []) throws {
        process = try TestProcess.server(try Tools.path("reflectd"),
                                         ["--host", "127.0.0.1", "--port", "0", "--log-level", "warning"] + arguments)
    }

    /// SIGTERM (a graceful stop), then SIGKILL after 5 s.
    func stop() {
        process.send(signal: SIGTERM)
        if process.waitForExit(timeout: 5) == nil { process.kill() }
    }
}

typealias TestError = TestFailure
