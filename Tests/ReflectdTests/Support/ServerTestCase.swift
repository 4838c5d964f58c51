// The base of the test classes that start the built reflectd: SIGPIPE is ignored, and every
// process and scratch directory a test made is killed or removed in tearDown, whatever the test
// did, so a failed assertion never leaves a server running into the next test.

import TestSupport
import Foundation
import Glibc
import XCTest

class ServerTestCase: XCTestCase {
    private var processes: [TestProcess] = []
    private var directories: [String] = []

    override func setUp() {
        super.setUp()
        signal(SIGPIPE, SIG_IGN)
    }

    override func tearDown() {
        for process in processes {
            process.kill()
            process.stderr.resume()  // a test may have started it with stderr paused
        }
        processes.removeAll()
        for directory in directories { try? FileManager.default.removeItem(atPath: directory) }
        directories.removeAll()
        super.tearDown()
    }

    /// Kills `process` in tearDown.
    @discardableResult
    func track(_ process: TestProcess) -> TestProcess {
        processes.append(process)
        return process
    }

    /// A scratch directory, removed in tearDown.
    func temporaryDirectory() throws -> String {
        var template = Array("/tmp/reflectd-tests-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw TestFailure("mkdtemp: errno \(errno)") }
        let directory = String(cString: made)
        directories.append(directory)
        return directory
    }

    // MARK: starting reflectd and talking to it

    /// Starts the built reflectd with `arguments` (stderr paused: a log reader that stopped
    /// reading); killed in tearDown.
    func start(_ arguments: [String], stderrPaused: Bool = false) throws -> TestProcess {
        track(try TestProcess.reflectd(arguments, stderr: stderrPaused ? .paused : .collected))
    }

    /// Starts reflectd with `arguments` (through `/bin/sh -c` after `prologue`, for `ulimit`),
    /// and waits for its `listening on` line; returns it and the port. Killed in tearDown.
    func startAndWait(_ arguments: [String], prologue: String? = nil) throws -> (TestProcess, Int) {
        let server = try track(prologue.map { try TestProcess.reflectd(shellPrologue: $0, arguments) } ?? TestProcess.reflectd(arguments))
        return (server, try server.waitForTCPPort())
    }

    /// Starts reflectd on 127.0.0.1 and `port` (0: an ephemeral one); returns it and the port it announced.
    func startServer(port: Int = 0) throws -> (TestProcess, Int) {
        try startAndWait(["--host", "127.0.0.1", "--port", String(port)])
    }

    /// Sends `message` and expects it echoed.
    func roundTrip(_ client: TestSocket, _ message: String, file: StaticString = #filePath, line: UInt = #line) throws {
        try client.send(message)
        XCTAssertEqual(try client.receiveString(exactly: message.utf8.count), message, file: file, line: line)
    }

    /// True once `server` logged `text`, within `timeout` seconds.
    func logged(_ server: TestProcess, _ text: String, timeout: Double = 3) -> Bool {
        eventually(timeout: timeout) { server.stderr.text.contains(text) }
    }

    /// The server is gone, so the flooding thread's send fails; then the socket can be closed.
    func finish(_ writer: Thread, _ client: TestSocket) {
        _ = eventually(timeout: 5) { !writer.isExecuting }
        client.close()
    }

    /// Scrapes until the expected samples appear (or `timeout`); a failed scrape fails the test here.
    @discardableResult
    func assertMetrics(port: Int, _ expected: [String: Int], timeout: Double = 3.5,
                               file: StaticString = #filePath, line: UInt = #line) -> MetricsScrape? {
        do {
            let (metrics, unmet) = try MetricsScrape.scrape(port: port, until: expected, timeout: timeout)
            XCTAssertEqual(unmet, [], "metrics after \(timeout) s:\n\(metrics.text)", file: file, line: line)
            return metrics
        } catch {
            XCTFail("scraping http://127.0.0.1:\(port)/metrics failed: \(error)", file: file, line: line)
            return nil
        }
    }


    // MARK: the connection log

    /// Lines of `log` that mention `127.0.0.1:port` (and not a longer port starting with it).
    func lines(_ log: [String], mentioning port: Int) -> [String] {
        let needle = "127.0.0.1:\(port)"
        return log.filter { line in
            var search = line[...]
            while let range = search.range(of: needle) {
                if range.upperBound == search.endIndex || !search[range.upperBound].isNumber { return true }
                search = search[range.upperBound...]
            }
            return false
        }
    }

    /// One open line and one close line naming `reason`, and nothing else, for this peer port.
    func assertOpenAndCloseLogged(_ log: [String], port: Int, reason: String,
                                          file: StaticString = #filePath, line: UInt = #line) {
        let mine = lines(log, mentioning: port)
        XCTAssertEqual(mine.count, 2, "expected one open and one close line for 127.0.0.1:\(port), got \(mine)", file: file, line: line)
        XCTAssertEqual(mine.filter { $0.contains("open") }.count, 1, "\(mine)", file: file, line: line)
        let closes = mine.filter { $0.contains("close") }
        XCTAssertEqual(closes.count, 1, "\(mine)", file: file, line: line)
        XCTAssertTrue(closes.first?.contains(reason) ?? false, "close line should name reason \(reason): \(closes)", file: file, line: line)
    }

    // MARK: refusals

    /// The SIGUSR1 statistics line's `closed:` counts, by reason.
    func closedCounts(_ server: TestProcess, file: StaticString = #filePath, line: UInt = #line) -> [String: Int] {
        let before = server.stderr.lines.filter { $0.contains("received SIGUSR1: statistics:") }.count
        server.send(signal: SIGUSR1)
        _ = eventually(timeout: 3) {
            server.stderr.lines.filter { $0.contains("received SIGUSR1: statistics:") }.count > before
        }
        guard let text = server.stderr.lines.last(where: { $0.contains("received SIGUSR1: statistics:") }),
              let closed = text.range(of: "closed: ") else {
            XCTFail("no statistics line; stderr:\n\(server.stderr.text.suffix(2000))", file: file, line: line)
            return [:]
        }
        let list = text[closed.upperBound...].prefix { $0 != ";" }
        var counts: [String: Int] = [:]
        for pair in list.split(separator: " ") {
            let parts = pair.split(separator: "=")
            if parts.count == 2, let n = Int(parts[1]) { counts[String(parts[0])] = n }
        }
        return counts
    }

    /// Every refused connection ends at once (EOF or reset within `timeout`), without an echo.
    func assertRefusedAtOnce(_ clients: [TestSocket], timeout: Double = 1,
                                     file: StaticString = #filePath, line: UInt = #line) {
        for (k, client) in clients.enumerated() {
            let (end, bytes) = client.waitForEnd(timeout: timeout)
            XCTAssertNotEqual(end, .timeout, "refused connection \(k) still open after \(timeout) s", file: file, line: line)
            XCTAssertEqual(bytes, 0, "refused connection \(k) got bytes", file: file, line: line)
        }
    }

    /// Asserts the process exits 0 within `timeout` seconds.
    func assertExitsCleanly(_ process: TestProcess, within timeout: Double,
                            file: StaticString = #filePath, line: UInt = #line) {
        let end = process.waitForExit(timeout: timeout)
        XCTAssertEqual(end, .exited(0), "reflectd did not exit 0 within \(timeout) s; stderr tail:\n\(process.stderr.text.suffix(2000))",
                       file: file, line: line)
    }


    /// Asserts the process fails within `timeout` (non-zero, not a crash, no listening line);
    /// returns its stderr.
    func assertFailsAtOnce(_ process: TestProcess, within timeout: Double = 5,
                           file: StaticString = #filePath, line: UInt = #line) -> String {
        let end = process.waitForExit(timeout: timeout)
        XCTAssertNotNil(end, "reflectd still runs after \(timeout) s", file: file, line: line)
        XCTAssertNotEqual(end, .exited(0), "reflectd should have failed", file: file, line: line)
        if case .signaled(let signal) = end { XCTFail("reflectd crashed (signal \(signal))", file: file, line: line) }
        process.stderr.waitForEOF(timeout: 2)
        process.stdout.waitForEOF(timeout: 2)
        XCTAssertFalse(process.stdout.text.contains("listening on"), "it announced a listener: \(process.stdout.text)", file: file, line: line)
        XCTAssertFalse(process.stderr.text.contains("Fatal error"), "a crash, not an error message: \(process.stderr.text)", file: file, line: line)
        return process.stderr.text
    }


    /// Waits up to `timeout` for a log line containing `text`; fails the test if none comes.
    func waitForLog(_ server: TestProcess, _ text: String, timeout: Double = 3,
                    file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertTrue(eventually(timeout: timeout) { server.stderr.text.contains(text) },
                      "no log line with \(text.debugDescription) within \(timeout) s; stderr:\n\(server.stderr.text.suffix(2000))",
                      file: file, line: line)
    }

    /// A thread that sends `bytes` to `client` and never reads, until the server stops taking them.
    func flood(_ client: TestSocket, bytes: Int) -> Thread {
        let fd = client.fd
        let thread = Thread {
            let chunk = [UInt8](repeating: 0xA5, count: 64 * 1024)
            var sent = 0
            let deadline = monotonicSeconds() + 20
            while sent < bytes && monotonicSeconds() < deadline {
                let n = chunk.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, 0x4000 /* MSG_NOSIGNAL */) }
                if n > 0 { sent += n; continue }
                guard n < 0, errno == EAGAIN || errno == EINTR else { return }  // reset or closed: done
                _ = LoopbackSockets.wait(fd, Int16(POLLOUT), until: min(deadline, monotonicSeconds() + 0.2))
            }
        }
        thread.start()
        return thread
    }
}
