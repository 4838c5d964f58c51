// --idle-timeout: an idle connection is closed while one that keeps sending stays open.
//
// Through the built `reflectd` on loopback: every socket operation and wait has a deadline, and
// tearDown (ServerTestCase) kills whatever a test left running.

import TestSupport
import Foundation
import Glibc
import XCTest

final class IdleTimeoutTests: ServerTestCase {

    func testIdleConnectionIsClosedWhileOneSendingEvery200msStaysOpen() throws {
        let server = try start(["--host", "127.0.0.1", "--port", "0", "--idle-timeout", "1", "--metrics-port", "0"])
        let port = try server.waitForTCPPort()
        let metricsPort = try server.waitForMetricsPort()

        let active = try TestSocket.connect(host: "127.0.0.1", port: port)
        let silent = try TestSocket.connect(host: "127.0.0.1", port: port)      // never sends
        let quietened = try TestSocket.connect(host: "127.0.0.1", port: port)   // one echo, then silence
        try active.expectEcho("tick 0\n")
        try quietened.expectEcho("one message, then nothing\n")
        let began = monotonicSeconds()

        var closedAt: [String: Double] = [:]
        var tick = 1
        while monotonicSeconds() - began < 4.0 {
            try active.expectEcho("tick \(tick)\n", timeout: 1)
            tick += 1
            for (name, client) in [("silent", silent), ("quietened", quietened)] where closedAt[name] == nil {
                let (end, bytes) = client.waitForEnd(timeout: 0)
                XCTAssertEqual(bytes, 0)
                if end != .timeout {
                    XCTAssertTrue(end == .eof || end == .reset, "\(name) ended with \(end)")
                    closedAt[name] = monotonicSeconds() - began
                }
            }
            let next = began + Double(tick - 1) * 0.2
            if next > monotonicSeconds() { usleep(useconds_t((next - monotonicSeconds()) * 1e6)) }
        }
        XCTAssertGreaterThanOrEqual(tick, 15, "the active client should have sent about every 200 ms")
        for name in ["silent", "quietened"] {
            guard let at = closedAt[name] else {
                XCTFail("the \(name) idle connection was still open after 4 s with --idle-timeout 1")
                continue
            }
            XCTAssertLessThanOrEqual(at, 3.0, "\(name) closed after \(at) s")
            XCTAssertGreaterThanOrEqual(at, 0.9, "\(name) closed after only \(at) s: before the timeout")
        }
        XCTAssertTrue(active.looksOpen, "the active connection must not be touched")
        try active.expectEcho("still here after 4 s\n")
        assertMetrics(port: metricsPort, [
            "reflectd_connections_closed_total{reason=\"timeout\"}": 2,
            "reflectd_connections_open": 1,
        ])
    }
}
