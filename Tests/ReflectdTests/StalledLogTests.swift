// A log reader that stops reading (a paused `| less`, a stuck shipper) never stops the echo:
// log lines go through a bounded queue, and those dropped while the reader stalls are counted
// and reported when it returns.
//
// Through the built `reflectd` on loopback: every socket operation and wait has a deadline, and
// tearDown (ServerTestCase) kills whatever a test left running.

import TestSupport
import Foundation
import Glibc
import XCTest

final class StalledLogTests: ServerTestCase {

    /// Opens and resets `count` connections one after the other, and between every `every` of
    /// them checks that `client` still echoes; returns the slowest echo, in seconds.
    private func churn(_ count: Int, port: Int, checking client: TestSocket, every: Int = 50) throws -> Double {
        var slowest = 0.0
        for i in 0..<count {
            let passer = try TestSocket.connect(host: "127.0.0.1", port: port)
            passer.closeWithReset()
            if i % every == 0 {
                let began = monotonicSeconds()
                try client.expectEcho("still there at \(i)\n", timeout: 2)
                slowest = max(slowest, monotonicSeconds() - began)
            }
        }
        return slowest
    }

    func testStalledLogReaderDoesNotStopEcho() throws {
        // stderr goes into a pipe nobody reads (its 64 KiB fill after a few hundred lines).
        let server = try start(["--host", "127.0.0.1", "--port", "0"], stderrPaused: true)
        let port = try server.waitForTCPPort()
        let client = try TestSocket.connect(host: "127.0.0.1", port: port)
        try client.expectEcho("before\n")

        let slowest = try churn(5_000, port: port, checking: client)
        print("stalled stderr: slowest of 100 echoes during 5,000 connections: \(Int(slowest * 1000)) ms")
        XCTAssertLessThan(slowest, 0.1, "the existing client waited \(slowest) s for an echo while stderr was stalled")
        try client.expectEcho("after 5,000 connections\n", timeout: 0.5)

        // Still stalled: SIGTERM works, and the exit waits at most 1 s for the log.
        let signalled = monotonicSeconds()
        server.send(signal: SIGTERM)
        let end = server.waitForExit(timeout: 5)
        XCTAssertEqual(end, .exited(0), "reflectd with a stalled stderr did not exit 0 within 5 s of SIGTERM")
        XCTAssertLessThan(monotonicSeconds() - signalled, 5)
        server.stderr.resume()
    }

    func testLogLinesDroppedWhileStalledAreCountedAndReportedWhenTheReaderReturns() throws {
        let server = try start(["--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"], stderrPaused: true)
        let port = try server.waitForTCPPort()
        let metricsPort = try server.waitForMetricsPort()
        let client = try TestSocket.connect(host: "127.0.0.1", port: port)
        // Two lines of about 90 bytes per connection: 8,000 connections overflow the 64 KiB pipe
        // and the 1 MiB queue.
        _ = try churn(8_000, port: port, checking: client, every: 500)
        // Once the server has seen every connection close, nothing more is logged (or dropped).
        let (settled, unmet) = try MetricsScrape.scrape(port: metricsPort, until: [
            "reflectd_connections_accepted_total": 8_001, "reflectd_connections_open": 1,
        ], timeout: 10)
        XCTAssertEqual(unmet, [], settled.text)
        let dropped = settled["reflectd_log_lines_dropped_total"] ?? 0
        XCTAssertGreaterThan(dropped, 0, "8,000 connections at info with stderr stalled dropped no log line")

        server.stderr.resume()
        func reported() -> Int {
            server.stderr.lines.filter { $0.contains(" log lines dropped") }.compactMap {
                $0.components(separatedBy: " log lines dropped").first?.split(separator: " ").last.flatMap { Int($0) }
            }.reduce(0, +)
        }
        XCTAssertTrue(eventually(timeout: 5) { reported() >= dropped },
                      "the `N log lines dropped` reports add up to \(reported()), the metric says \(dropped); stderr tail:\n\(server.stderr.text.suffix(1000))")
        XCTAssertEqual(reported(), dropped, "every dropped line is reported once")
        XCTAssertEqual(try MetricsScrape.scrape(port: metricsPort)["reflectd_log_lines_dropped_total"], dropped)
        try client.expectEcho("reader back\n")
    }
}
