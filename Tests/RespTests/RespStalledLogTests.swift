import Foundation
import Glibc
import TestSupport
import XCTest

/// resp-server logs through a bounded queue drained by its own thread, so a log reader that stops
/// reading costs log lines, never service: the server neither freezes nor ignores SIGTERM.
final class RespStalledLogTests: XCTestCase {
    /// At `--log-level debug` every connection's close is a log line (about 90 bytes). With
    /// stderr to a pipe nobody reads, 5,000 short connections log about 450 KB, the pipe's 64 KiB
    /// seven times over. A server that wrote its log synchronously froze once the pipe was full
    /// (blocked in the kernel in `anon_pipe_write`, deaf to SIGTERM too).
    func testStalledStderrAtDebugLevelFreezesNeitherServingNorStopping() throws {
        let server = try ServerUnderTest.resp(["--log-level", "debug"], stderr: .pipeNeverRead)
        let steady = try TestSocket.connect(port: server.port)
        let connections = 5_000
        for i in 0..<connections {
            let socket = try TestSocket.connect(port: server.port)
            try socket.send(multibulk("SET", "k\(i % 100)", "v\(i)") + multibulk("GET", "k\(i % 100)"))
            let reply = "+OK\r\n$\("v\(i)".utf8.count)\r\nv\(i)\r\n"
            // Throws after 5 s (outside an assertion, which would catch it and go on): a frozen
            // server ends the test here, not hangs it.
            let got = try socket.receiveString(exactly: reply.utf8.count, timeout: 5)
            XCTAssertEqual(got, reply, "connection \(i)")
            socket.close()
        }
        // The pipe is full. Its 64 KiB are 16 pages, and a write that does not fit in the last
        // page's room starts a new one, so "full" holds anywhere from about half to all of it.
        XCTAssertGreaterThanOrEqual(server.stderrPipeBytes, 32 * 1024,
                                    "the test did not fill the stderr pipe, so it proves nothing")

        let began = monotonicSeconds()
        try steady.send(multibulk("PING"))
        let pong = try steady.receiveString(exactly: 7, timeout: 1)
        XCTAssertEqual(pong, "+PONG\r\n")
        XCTAssertLessThan(monotonicSeconds() - began, 1, "a PING took over 1 s with stderr stalled")

        let stopping = monotonicSeconds()
        server.signal(SIGTERM)
        // The exit waits at most resp-server's log flush timeout (1 s) for the stalled reader.
        XCTAssertEqual(server.waitForExit(timeout: 5), 0, "resp-server with a stalled stderr did not exit 0 within 5 s of SIGTERM")
        XCTAssertLessThan(monotonicSeconds() - stopping, 5)
    }
}
