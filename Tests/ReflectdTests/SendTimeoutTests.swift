// A client that never reads is closed by the send timeout; one that reads slowly but keeps
// reading outlives it.
//
// Through the built `reflectd` on loopback: every socket operation and wait has a deadline, and
// tearDown (ServerTestCase) kills whatever a test left running.

import TestSupport
import Foundation
import Glibc
import XCTest

final class SendTimeoutTests: ServerTestCase {

    func testNeverReaderIsClosedBySendTimeoutWithinFourSeconds() throws {
        let server = try start(["--host", "127.0.0.1", "--port", "0", "--send-timeout", "2", "--metrics-port", "0"])
        let port = try server.waitForTCPPort()
        let metricsPort = try server.waitForMetricsPort()
        let reader = try TestSocket.connect(host: "127.0.0.1", port: port)
        try reader.expectEcho("a client that reads\n")

        // Sends 32 MiB and never reads, then half-closes (as `exit` or a FIN would): once its echo
        // passes the high watermark the server stops reading it and would never see either.
        let neverReader = try TestSocket.connect(host: "127.0.0.1", port: port)
        let began = monotonicSeconds()
        let writer = flood(neverReader, bytes: 32 << 20)
        usleep(500_000)
        neverReader.shutdownWrite()
        // Poll for an error or hang-up only: reading would take the echo and count as progress.
        var closedAt: Double?
        while monotonicSeconds() - began < 8 {
            let revents = LoopbackSockets.wait(neverReader.fd, 0, until: monotonicSeconds() + 0.05)
            if revents & Int16(POLLERR | POLLHUP) != 0 { closedAt = monotonicSeconds() - began; break }
            try reader.expectEcho("meanwhile\n", timeout: 1)
        }
        let at = try XCTUnwrap(closedAt, "the never-reader was still open 8 s after it stopped reading (--send-timeout 2)")
        XCTAssertLessThan(at, 4, "closed after \(at) s with --send-timeout 2")
        XCTAssertGreaterThan(at, 1.5, "closed after only \(at) s: before the timeout")
        waitForLog(server, "reason=send-timeout")
        finish(writer, neverReader)
        try reader.expectEcho("the reader was never touched\n")
        let (metrics, unmet) = try MetricsScrape.scrape(port: metricsPort, until: [
            "reflectd_connections_closed_total{reason=\"timeout\"}": 1, "reflectd_connections_open": 1,
        ])
        XCTAssertEqual(unmet, [], metrics.text)
    }

    func testSlowReaderThatKeepsReadingOutlivesTheSendTimeout() throws {
        let server = try start(["--host", "127.0.0.1", "--port", "0", "--send-timeout", "1"])
        let client = try TestSocket.connect(host: "127.0.0.1", port: try server.waitForTCPPort())
        let payload = (0..<(2 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 131) }
        try client.send(Array(payload[..<(256 << 10)]))
        // Reads a little every 300 ms for 4 s: progress each time, so the 1 s timeout never fires.
        var received: [UInt8] = []
        let began = monotonicSeconds()
        while monotonicSeconds() - began < 4 {
            usleep(300_000)
            received += try client.receive(exactly: 8 << 10, timeout: 1)
        }
        try client.send(Array(payload[(256 << 10)...]), timeout: 10)
        received += try client.receive(exactly: payload.count - received.count, timeout: 10)
        XCTAssertEqual(received, payload, "a slow reader that keeps reading gets all of its echo")
        XCTAssertFalse(server.stderr.text.contains("send-timeout"), server.stderr.text.suffix(1000).description)
    }
}
