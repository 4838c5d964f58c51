// The base of the test classes that start the built reflectd: SIGPIPE is ignored, and every
// process and scratch directory a test made is killed or removed in tearDown, whatever the test
// did, so a failed assertion never leaves a server running into the next test.

import Foundation
import Glibc
import XCTest

class ServerTestCase: XCTestCase {
    private var processes: [OpsProcess] = []
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
    func track(_ process: OpsProcess) -> OpsProcess {
        processes.append(process)
        return process
    }

    /// Kills `server` in tearDown.
    @discardableResult
    func track(_ server: ServerProcess) -> ServerProcess {
        processes.append(server.process)
        return server
    }

    /// A scratch directory, removed in tearDown.
    func temporaryDirectory() throws -> String {
        let directory = try Ops.temporaryDirectory()
        directories.append(directory)
        return directory
    }

    /// Asserts the process exits 0 within `timeout` seconds.
    func assertExitsCleanly(_ process: OpsProcess, within timeout: Double,
                            file: StaticString = #filePath, line: UInt = #line) {
        let end = process.waitForExit(timeout: timeout)
        XCTAssertEqual(end, .exited(0), "reflectd did not exit 0 within \(timeout) s; stderr tail:\n\(process.stderr.text.suffix(2000))",
                       file: file, line: line)
    }

    func assertExitsCleanly(_ server: ServerProcess, within timeout: Double,
                            file: StaticString = #filePath, line: UInt = #line) {
        assertExitsCleanly(server.process, within: timeout, file: file, line: line)
    }

    /// Asserts the process fails within `timeout` (non-zero, not a crash, no listening line);
    /// returns its stderr.
    func assertFailsAtOnce(_ process: OpsProcess, within timeout: Double = 5,
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

    func assertFailsAtOnce(_ server: ServerProcess, within timeout: Double = 5,
                           file: StaticString = #filePath, line: UInt = #line) -> String {
        assertFailsAtOnce(server.process, within: timeout, file: file, line: line)
    }

    /// Waits up to `timeout` for a log line containing `text`; fails the test if none comes.
    func waitForLog(_ server: OpsProcess, _ text: String, timeout: Double = 3,
                    file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertTrue(Ops.waitUntil(timeout: timeout) { server.stderr.text.contains(text) },
                      "no log line with \(text.debugDescription) within \(timeout) s; stderr:\n\(server.stderr.text.suffix(2000))",
                      file: file, line: line)
    }

    /// A thread that sends `bytes` to `client` and never reads, until the server stops taking them.
    func flood(_ client: OpsClient, bytes: Int) -> Thread {
        let fd = client.fd
        let thread = Thread {
            let chunk = [UInt8](repeating: 0xA5, count: 64 * 1024)
            var sent = 0
            let deadline = Ops.now() + 20
            while sent < bytes && Ops.now() < deadline {
                let n = chunk.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, 0x4000 /* MSG_NOSIGNAL */) }
                if n > 0 { sent += n; continue }
                guard n < 0, errno == EAGAIN || errno == EINTR else { return }  // reset or closed: done
                _ = OpsSockets.wait(fd, Int16(POLLOUT), until: min(deadline, Ops.now() + 0.2))
            }
        }
        thread.start()
        return thread
    }
}
