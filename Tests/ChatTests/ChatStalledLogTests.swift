import Foundation
import Glibc
import TestSupport
import XCTest

/// chat `--verbose` logs through a bounded queue drained by its own thread, so a log reader that
/// stops reading costs log lines, never service: the server neither freezes nor ignores SIGTERM.
final class ChatStalledLogTests: XCTestCase {
    /// With `--verbose` each connection logs its join, leave and close (about 180 bytes). With
    /// stderr to a pipe nobody reads, 3,000 short connections log about 500 KB, the pipe's
    /// 64 KiB seven times over. A server that wrote its log synchronously froze once the pipe
    /// was full (blocked in the kernel in `anon_pipe_write`, deaf to SIGTERM too).
    func testStalledStderrWithVerboseFreezesNeitherChatNorStopping() throws {
        let server = try ChatServer(stderr: .pipeNeverRead)
        for _ in 0..<3_000 {
            // The welcome line is read with a 5 s timeout: a frozen server fails the test here.
            let client = try ChatClient(server)
            client.close()
        }
        // The pipe is full. Its 64 KiB are 16 pages, and a write that does not fit in the last
        // page's room starts a new one, so "full" holds anywhere from about half to all of it.
        XCTAssertGreaterThanOrEqual(server.stderrPipeBytes, 32 * 1024,
                                    "the test did not fill the stderr pipe, so it proves nothing")

        let began = monotonicSeconds()
        let a = try ChatClient(server), b = try ChatClient(server)
        a.send("still here\n")
        XCTAssertEqual(b.nextMessage(timeout: 1), .line("\(a.name): still here"))
        XCTAssertLessThan(monotonicSeconds() - began, 1, "joining and one message took over 1 s with stderr stalled")

        let stopping = monotonicSeconds()
        server.signal(SIGTERM)
        XCTAssertTrue(a.drainUntilEOF(timeout: 5))
        XCTAssertTrue(b.drainUntilEOF(timeout: 5))
        a.close()
        b.close()
        // The exit waits at most chat's log flush timeout (1 s) for the stalled reader.
        XCTAssertEqual(server.waitForExit(timeout: 5), 0, "chat with a stalled stderr did not exit 0 within 5 s of SIGTERM")
        XCTAssertLessThan(monotonicSeconds() - stopping, 5)
    }
}
