// Signals: SIGTERM and SIGINT stop gracefully (pending echo delivered, even to a client that
// floods without reading), a second stop signal cuts the wait short, SIGQUIT stops without a
// crash banner, SIGUSR1 logs statistics, SIGHUP and SIGALRM are ignored with a notice.
//
// Through the built `reflectd` on loopback: every socket operation and wait has a deadline, and
// tearDown (ServerTestCase) kills whatever a test left running.

import Foundation
import Glibc
import XCTest
import TestSupport
import Synchronization

final class SignalTests: ServerTestCase {

    /// A writer thread sends `payloadSize` bytes without reading; SIGTERM after ~300 ms; then the
    /// client reads: a prefix of what it sent, then a clean EOF, and reflectd exits 0 within 5 s.
    private func floodThenStop(payloadSize: Int, requireBlockedWriter: Bool,
                               file: StaticString = #filePath, line: UInt = #line) throws {
        let (server, port) = try startServer()
        let client = try TestSocket.connect(port: port)
        try roundTrip(client, "hello\n")
        let stream = PatternStream()
        let payload = stream.bytes(from: 0, count: payloadSize)
        let sent = Mutex<Result<Int, SocketFailure>?>(nil)
        let writer = TestThread {
            let result = payload.withUnsafeBytes { client.sendAll($0, timeout: 20) }
            sent.withLock { $0 = result }
        }
        usleep(300_000)
        if requireBlockedWriter {
            XCTAssertNil(sent.withLock { $0 }, "the writer was not blocked at SIGTERM; the test proves nothing", file: file, line: line)
        }
        let signalled = monotonicSeconds()
        server.send(signal: SIGTERM)
        let (received, end) = client.receiveUntilEnd(timeout: 8, limit: payload.count)
        XCTAssertLessThanOrEqual(received.count, payload.count, file: file, line: line)
        XCTAssertNil(stream.firstMismatch(received), "what comes back must be a prefix of what was sent", file: file, line: line)
        XCTAssertEqual(end, .eof, "the client should see a clean EOF after \(received.count) bytes, not a reset", file: file, line: line)
        XCTAssertTrue(writer.join(timeout: 25), "the writer thread is stuck", file: file, line: line)
        // A reset may be reported to the writer instead of the reader (the kernel reports a socket
        // error once). A graceful server discards input after its FIN, so the writer finishes.
        switch sent.withLock({ $0 }) {
        case .success(let count): XCTAssertEqual(count, payload.count, file: file, line: line)
        case .failure(let failure): XCTFail("the client's send failed while reflectd was stopping: \(failure)", file: file, line: line)
        case nil: XCTFail("the writer reported nothing", file: file, line: line)
        }
        client.close()
        assertExitsCleanly(server, within: max(0.1, 5 - (monotonicSeconds() - signalled)), file: file, line: line)
    }

    func testSIGHUPAndSIGALRMAreIgnoredWithANotice() throws {
        let server = try start(["--host", "127.0.0.1", "--port", "0", "--log-level", "notice"])
        let port = try server.waitForTCPPort()
        let client = try TestSocket.connect(host: "127.0.0.1", port: port)
        try client.expectEcho("before\n")
        server.send(signal: SIGHUP)
        waitForLog(server, "received SIGHUP: ignored")
        server.send(signal: SIGALRM)
        waitForLog(server, "received SIGALRM: ignored")
        XCTAssertNil(server.pollExit(), "reflectd died of SIGHUP or SIGALRM")
        XCTAssertTrue(client.looksOpen)
        try client.expectEcho("after SIGHUP and SIGALRM\n")
    }

    func testSIGUSR1LogsOneLineOfStatistics() throws {
        let server = try start(["--host", "127.0.0.1", "--port", "0", "--log-level", "notice"])
        let port = try server.waitForTCPPort()
        let stays = try TestSocket.connect(host: "127.0.0.1", port: port)
        try stays.expectEcho("12345\n")                        // 6 bytes each way
        let leaves = try TestSocket.connect(host: "127.0.0.1", port: port)
        try leaves.expectEcho("abc\n")                         // 4 bytes each way
        try leaves.send("exit\n")                              // 5 bytes in, none out
        XCTAssertEqual(leaves.waitForEnd(timeout: 2).0, .eof)
        leaves.close()                                         // ends the server's linger
        usleep(200_000)
        server.send(signal: SIGUSR1)
        waitForLog(server, "received SIGUSR1: statistics:")
        let line = server.stderr.lines.first { $0.contains("received SIGUSR1") } ?? ""
        for part in ["open=1", "accepted=2", "exit=1", "bytes_in=15", "bytes_out=10", "log_lines_dropped=0"] {
            XCTAssertTrue(line.contains(part), "the statistics line should contain \(part): \(line)")
        }
        XCTAssertNil(server.pollExit(), "reflectd died of SIGUSR1")
        try stays.expectEcho("after SIGUSR1\n")
    }

    func testSIGQUITStopsGracefullyWithoutACrashBanner() throws {
        let server = try start(["--host", "127.0.0.1", "--port", "0"])
        let client = try TestSocket.connect(host: "127.0.0.1", port: try server.waitForTCPPort())
        try client.expectEcho("hello\n")
        try client.send("pending at SIGQUIT\n")
        server.send(signal: SIGQUIT)
        XCTAssertEqual(String(decoding: try client.receive(exactly: 19, timeout: 5), as: UTF8.self), "pending at SIGQUIT\n")
        XCTAssertEqual(client.waitForEnd(timeout: 5).0, .eof)
        assertExitsCleanly(server, within: 5)
        server.stderr.waitForEOF(timeout: 2)
        let stderr = server.stderr.text
        XCTAssertTrue(stderr.contains("received SIGQUIT: stopping gracefully"), stderr)
        for banner in ["Crash", "crash", "Backtrace", "backtrace", "💣"] {
            XCTAssertFalse(stderr.contains(banner), "a crash banner on SIGQUIT: \(stderr.suffix(1500))")
        }
    }

    func testSecondSIGTERMCutsTheGracefulWaitShort() throws {
        let server = try start(["--host", "127.0.0.1", "--port", "0"])
        let client = try TestSocket.connect(host: "127.0.0.1", port: try server.waitForTCPPort())
        try client.expectEcho("hello\n")
        // A client that sends and never reads: at the stop its echo is pending, so the graceful
        // stop would wait the whole 4 s grace period for it.
        let writer = flood(client, bytes: 32 << 20)
        usleep(300_000)
        server.send(signal: SIGTERM)
        waitForLog(server, "received SIGTERM: stopping gracefully")
        usleep(200_000)
        XCTAssertNil(server.pollExit(), "reflectd exited without waiting for the pending echo: the test proves nothing")
        let again = monotonicSeconds()
        server.send(signal: SIGTERM)
        let end = server.waitForExit(timeout: 3.5)
        XCTAssertEqual(end, .exited(0), "the second SIGTERM should stop at once")
        XCTAssertLessThan(monotonicSeconds() - again, 1.5, "the second SIGTERM did not cut the 4 s grace period short")
        waitForLog(server, "received SIGTERM again: stopping now")
        finish(writer, client)
    }

    func testSIGTERMThenSIGINTAtOnceCutsTheWaitShort() throws {
        // Two different signals sent back to back are both read (unlike two of the same, which
        // the kernel merges); the second must count even when it is read in the same batch.
        let server = try start(["--host", "127.0.0.1", "--port", "0"])
        let client = try TestSocket.connect(host: "127.0.0.1", port: try server.waitForTCPPort())
        try client.expectEcho("hello\n")
        let writer = flood(client, bytes: 32 << 20)
        usleep(300_000)
        let signalled = monotonicSeconds()
        server.send(signal: SIGTERM)
        server.send(signal: SIGINT)
        XCTAssertEqual(server.waitForExit(timeout: 3.5), .exited(0))
        XCTAssertLessThan(monotonicSeconds() - signalled, 2, "SIGTERM then SIGINT should not wait the 4 s grace period")
        finish(writer, client)
    }

    func testSIGTERMDeliversPendingEchoThenEOFAndExitsZero() throws {
        let (server, port) = try startServer()
        let client = try TestSocket.connect(port: port)
        try roundTrip(client, "hello\n")  // accepted for sure
        let payload = testPattern(count: 10 * 1024)
        try client.send(payload)
        usleep(200_000)
        let signalled = monotonicSeconds()
        server.send(signal: SIGTERM)
        let (received, end) = client.receiveUntilEnd(timeout: 5, limit: payload.count)
        XCTAssertEqual(received.count, payload.count, "the client should get all of its echo")
        XCTAssertNil(firstDifference(received, payload))
        XCTAssertEqual(end, .eof, "the client should see a clean EOF, not a reset")
        client.close()
        assertExitsCleanly(server, within: max(0.1, 5 - (monotonicSeconds() - signalled)))
    }

    func testSIGINTStopsGracefullyToo() throws {
        let (server, port) = try startServer()
        let client = try TestSocket.connect(port: port)
        try roundTrip(client, "hello\n")
        server.send(signal: SIGINT)
        let (received, end) = client.receiveUntilEnd(timeout: 5)
        XCTAssertEqual(received, [])
        XCTAssertEqual(end, .eof)
        client.close()
        assertExitsCleanly(server, within: 5)
    }

    func testSIGTERMWhileAClientFloodsWithoutReading() throws {
        try floodThenStop(payloadSize: 1 << 20, requireBlockedWriter: false)
    }

    /// The same with a flood too big for the socket buffers: at SIGTERM the server has stopped
    /// reading (backpressure) and holds pending echo, which it must still deliver before its FIN.
    func testSIGTERMWhileABlockedClientFloodsWithoutReading() throws {
        try floodThenStop(payloadSize: 32 << 20, requireBlockedWriter: true)
    }
}
