// The command lines of the four executables as a user meets them: --version from one place,
// bad numbers named with their value, help that reads as typed, and listener errors that say
// which listener failed.

import Foundation
import Glibc
import XCTest

final class CommandLineTests: XCTestCase {
    /// The package's root folder (this file is Tests/ToolsTests/CommandLineTests.swift).
    private let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    func testEveryExecutableReportsTheVersionThatChangelogAndReadmeState() throws {
        var versions: [String: String] = [:]
        for tool in ["reflectd", "reflect", "reflect-bench", "chat"] {
            let result = try runTool(tool, ["--version"])
            XCTAssertEqual(result.status, 0, "\(tool): \(result.description)")
            versions[tool] = result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let version = try XCTUnwrap(versions["reflectd"])
        XCTAssertNotNil(version.range(of: #"^[0-9]+\.[0-9]+\.[0-9]+$"#, options: .regularExpression), version)
        XCTAssertEqual(Set(versions.values), [version], "\(versions)")
        XCTAssertEqual(version, "0.3.0")

        let changelog = try String(contentsOf: root.appendingPathComponent("CHANGELOG.md"), encoding: .utf8)
        // The newest released entry (an `## Unreleased` section may come first: changes not yet in a version).
        let firstHeading = changelog.split(separator: "\n").first { $0.hasPrefix("## ") && $0 != "## Unreleased" }
        XCTAssertTrue(firstHeading?.hasPrefix("## \(version)") == true, "CHANGELOG's newest entry: \(firstHeading ?? "none")")
        let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        XCTAssertTrue(readme.contains("Version: **\(version)**"), "README states another version")
    }

    func testNegativeAndOutOfRangeNumbersNameTheOptionAndTheValue() throws {
        let cases: [(String, [String], String)] = [
            ("reflectd", ["--port", "-1"], "--port must be between 0 and 65535, got -1"),
            ("reflectd", ["--backlog", "-5"], "--backlog must be between 0 and 65535, got -5"),
            ("reflectd", ["--backlog", "3000000000"], "--backlog must be between 0 and 65535, got 3000000000"),
            ("reflectd", ["--keepalive", "-1"], "--keepalive must be between 1 and 32767 seconds, got -1"),
            ("reflectd", ["--reactors", "-2"], "--reactors must be between 1 and"),
            ("reflectd", ["--reactors", "100000"], "got 100000"),
            ("reflectd", ["--metrics-port", "-1"], "--metrics-port must be between 0 and 65535, got -1"),
            ("reflect", ["--port", "-1"], "--port must be between 1 and 65535, got -1"),
            ("reflect-bench", ["bulk", "--duration", "-1"], "--duration must be more than 0"),
            ("chat", ["--port", "-1"], "--port must be between 0 and 65535, got -1"),
        ]
        for (tool, arguments, message) in cases {
            let result = try runTool(tool, arguments, timeout: 10)
            XCTAssertNotEqual(result.status, 0, "\(tool) \(arguments): \(result.description)")
            XCTAssertTrue(result.stderr.contains(message), "\(tool) \(arguments): \(result.description)")
            XCTAssertFalse(result.stderr.contains("Missing value"), "\(tool) \(arguments): \(result.description)")
        }
    }

    func testRepeatedSingleValueOptionIsRejected() throws {
        for arguments in [["--unix", "/tmp/a.sock", "--unix", "/tmp/b.sock"], ["--port", "1", "--port=2"]] {
            let result = try runTool("reflectd", arguments, timeout: 10)
            XCTAssertNotEqual(result.status, 0, result.description)
            XCTAssertTrue(result.stderr.contains("was given more than once"), result.description)
        }
    }

    func testHelpDefaultsReadAsTyped() throws {
        let result = try runTool("reflectd", ["--help"])
        XCTAssertEqual(result.status, 0, result.description)
        // Help wraps long lines: join them before looking.
        let help = result.stdout.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " ")
        XCTAssertFalse(help.contains("ReactorCount"), help)
        for expected in ["(default: 1)", "(default: 8887)", "(default: 0.0.0.0)", "default: info", "(default: 4096)"] {
            XCTAssertTrue(help.contains(expected), "\(expected) in \(help)")
        }
    }

    func testMetricsPortOnTheEchoPortSaysTheListenersClash() throws {
        let result = try runTool("reflectd", ["--host", "127.0.0.1", "--port", "28888", "--metrics-port", "28888"], timeout: 10)
        XCTAssertNotEqual(result.status, 0, result.description)
        XCTAssertTrue(result.stderr.contains("--metrics-port 28888 is also the echo --port"), result.description)
        XCTAssertFalse(result.stderr.contains("another server"), result.description)
    }

    func testListenerErrorNamesTheListener() throws {
        // A port some other process listens on.
        let other = try TinyServer { close($0) }
        defer { other.stop() }
        let echo = try runTool("reflectd", ["--host", "127.0.0.1", "--port", String(other.port)], timeout: 10)
        XCTAssertNotEqual(echo.status, 0, echo.description)
        XCTAssertTrue(echo.stderr.contains("cannot listen on 127.0.0.1:\(other.port) (the echo listener, --host/--port): address already in use"),
                      echo.description)
        let metrics = try runTool("reflectd", ["--host", "127.0.0.1", "--port", "0", "--metrics-port", String(other.port)], timeout: 10)
        XCTAssertNotEqual(metrics.status, 0, metrics.description)
        XCTAssertTrue(metrics.stderr.contains("(the metrics listener, --metrics-port): address already in use"), metrics.description)
        let path = "/nonexistent-\(getpid())/reflectd.sock"
        let unix = try runTool("reflectd", ["--host", "127.0.0.1", "--port", "0", "--unix", path], timeout: 10)
        XCTAssertNotEqual(unix.status, 0, unix.description)
        XCTAssertTrue(unix.stderr.contains(path) && unix.stderr.contains("(the Unix-socket listener, --unix)"), unix.description)
    }
}
