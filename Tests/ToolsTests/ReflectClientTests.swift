// The `reflect` client, run as a user runs it, against a real reflectd on loopback (or a tiny
// in-test server where the test must see what the client sent).

import Foundation
import Glibc
import XCTest

final class ReflectClientTests: XCTestCase {
    private var server: Reflectd!

    override func setUpWithError() throws {
        signal(SIGPIPE, SIG_IGN)
        server = try Reflectd()
    }

    override func tearDown() {
        server?.stop()
        server = nil
    }

    private var portArguments: [String] { ["--host", "127.0.0.1", "--port", String(server.port)] }

    func testLinesAreEchoedAndEndOfInputExitsZero() throws {
        let result = try runTool("reflect", portArguments, input: .text("hello\nworld\n"))
        XCTAssertEqual(result.status, 0, result.description)
        XCTAssertEqual(result.stdout, "hello\nworld\n")
        XCTAssertEqual(result.stderr, "")
    }

    func testEndOfInputSendsExitAndWaitsForTheServerToClose() throws {
        // A server that records everything, echoes, and closes only once it has seen `exit`.
        let received = Recorder()
        let tiny = try TinyServer { fd in
            var buffer = [UInt8](repeating: 0, count: 4096)
            var all: [UInt8] = []
            while true {
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                guard n > 0 else { break }
                buffer.withUnsafeBytes { received.append(UnsafeRawBufferPointer(rebasing: $0[..<n])) }
                all += buffer[..<n]
                if all.count >= 5 && Array(all.suffix(5)) == Array("exit\n".utf8) {
                    // Echo all but the exit line, then close, as reflectd does.
                    _ = all.dropLast(5).withUnsafeBytes { TinyServer.sendAll(fd, $0) }
                    break
                }
            }
            close(fd)
        }
        defer { tiny.stop() }
        let result = try runTool("reflect", ["--port", String(tiny.port)], input: .text("one\ntwo\n"))
        XCTAssertEqual(result.status, 0, result.description)
        XCTAssertEqual(received.text, "one\ntwo\nexit\n")
        XCTAssertEqual(result.stdout, "one\ntwo\n")
    }

    func testLastLineWithoutNewlineIsSentAsIs() throws {
        // reflectd: no newline is added, and the half-close (not an `exit` line) ends the session.
        let result = try runTool("reflect", portArguments, input: .text("first\nno newline"))
        XCTAssertEqual(result.status, 0, result.description)
        XCTAssertEqual(result.stdout, "first\nno newline")
    }

    func testLastLineWithoutNewlineReachesTheServerUnchanged() throws {
        let received = Recorder()
        let tiny = try TinyServer.plainEcho(record: received)
        defer { tiny.stop() }
        let result = try runTool("reflect", ["--port", String(tiny.port)], input: .text("partial"))
        XCTAssertEqual(result.status, 0, result.description)
        XCTAssertEqual(received.text, "partial", "nothing added: no newline, no exit line")
        XCTAssertEqual(result.stdout, "partial")
    }

    func testPlainEchoServerEndsTheSessionAfterTheHalfClose() throws {
        // An RFC 862 server echoes `exit` like any line and closes only on EOF: reflect's
        // half-close after `exit` is what ends the session, and the echoed `exit` is not printed.
        let received = Recorder()
        let tiny = try TinyServer.plainEcho(record: received)
        defer { tiny.stop() }
        let started = Date()
        let result = try runTool("reflect", ["--port", String(tiny.port)], input: .text("one\ntwo\n"), timeout: 20)
        XCTAssertEqual(result.status, 0, result.description)
        XCTAssertEqual(result.stdout, "one\ntwo\n")
        XCTAssertEqual(received.text, "one\ntwo\nexit\n")
        // Well before the 10 s default --timeout: the close came from the server, not the timer.
        XCTAssertLessThan(Date().timeIntervalSince(started), 8)
    }

    func testTimeoutEndsTheWaitForAServerThatNeverCloses() throws {
        // Echoes, and ignores EOF: keeps the connection open until the test ends.
        let release = DispatchSemaphore(value: 0)
        let tiny = try TinyServer { fd in
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                guard n > 0 else { break }
                _ = buffer.withUnsafeBytes { TinyServer.sendAll(fd, UnsafeRawBufferPointer(rebasing: $0[..<n])) }
            }
            _ = release.wait(timeout: .now() + 30)
            close(fd)
        }
        defer { release.signal(); tiny.stop() }
        let result = try runTool("reflect", ["--port", String(tiny.port), "--timeout", "1"], input: .text("hello\n"), timeout: 20)
        XCTAssertEqual(result.status, 1, result.description)
        XCTAssertEqual(result.stdout, "hello\n")
        XCTAssertTrue(result.stderr.contains("did not close the connection") && result.stderr.contains("--timeout"), result.description)
    }

    func testBadTimeoutIsRejectedNamingTheOption() throws {
        for value in ["-1", "abc", "100000"] {
            let result = try runTool("reflect", ["--timeout", value])
            XCTAssertNotEqual(result.status, 0, result.description)
            XCTAssertTrue(result.stderr.contains("--timeout"), "\(value): \(result.description)")
        }
    }

    func testServerClosingFirstPrintsMessageAndExitsOne() throws {
        // stdin stays open: the server's close (after the `exit` line) comes before end of input.
        let result = try runTool("reflect", portArguments, input: .textThenWait("before\nexit\nafter\n"), timeout: 15)
        XCTAssertEqual(result.status, 1, result.description)
        XCTAssertTrue(result.stderr.contains("connection closed by server"), result.description)
        XCTAssertEqual(result.stdout, "before\n")
    }

    func testRefusedConnectionExitsOneWithClearMessage() throws {
        let (port, fd) = try refusingPort()
        defer { close(fd) }
        let result = try runTool("reflect", ["--host", "127.0.0.1", "--port", String(port)], input: .text("hello\n"))
        XCTAssertEqual(result.status, 1, result.description)
        XCTAssertEqual(result.stderr, "reflect: cannot connect to 127.0.0.1:\(port): connection refused\n")
        XCTAssertEqual(result.stdout, "")
    }

    func testInputFromRegularFileIsEchoedCompletely() throws {
        // epoll cannot watch a regular file (EPERM): the client reads it directly.
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("reflect-input-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: file) }
        let text = (1...20_000).map { "line \($0) of a regular file\n" }.joined()
        try text.write(to: file, atomically: true, encoding: .utf8)
        let result = try runTool("reflect", portArguments, input: .file(file))
        XCTAssertEqual(result.status, 0, result.description)
        XCTAssertEqual(result.stdout.count, text.count)
        XCTAssertTrue(result.stdout == text, "the echo differs from the file")
    }

    func testEmptyInputFromDevNullSendsOnlyExit() throws {
        // /dev/null is a character device epoll cannot watch either.
        let result = try runTool("reflect", portArguments, input: .null)
        XCTAssertEqual(result.status, 0, result.description)
        XCTAssertEqual(result.stdout, "")
    }

    func testLargePipedInputIsEchoedCompletelyAndInOrder() throws {
        // Several MB through a pipe: more than the client lets run ahead of the echoes, so its
        // stdin is paused and resumed many times.
        let text = (1...150_000).map { "\($0) the quick brown fox jumps over the lazy dog\n" }.joined()
        let result = try runTool("reflect", portArguments, input: .text(text), timeout: 60)
        XCTAssertEqual(result.status, 0, result.description)
        XCTAssertEqual(result.stdout.utf8.count, text.utf8.count)
        XCTAssertTrue(result.stdout == text, "the echo differs from the input")
    }

    func testInvalidPortIsRejected() throws {
        let result = try runTool("reflect", ["--port", "70000"])
        XCTAssertNotEqual(result.status, 0, result.description)
        XCTAssertTrue(result.stderr.contains("--port"), result.description)
    }
}
