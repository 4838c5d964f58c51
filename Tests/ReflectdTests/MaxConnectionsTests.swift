// --max-connections: the connection over the limit is closed at once while the others keep
// echoing, the metrics stay reachable and exact at the limit, and a lingering connection holds
// no place.
//
// Through the built `reflectd` on loopback: every socket operation and wait has a deadline, and
// tearDown (ServerTestCase) kills whatever a test left running.

import TestSupport
import Foundation
import Glibc
import XCTest

final class MaxConnectionsTests: ServerTestCase {

    func testEleventhConnectionIsClosedAtOnceWhileTheFirstTenKeepEchoing() throws {
        // Two reactors: the limit is for the whole process, whichever reactor accepts.
        let server = try start(["--host", "127.0.0.1", "--port", "0", "--reactors", "2", "--max-connections", "10"])
        let port = try server.waitForTCPPort()
        var clients: [TestSocket] = []
        for i in 0..<10 {
            let client = try TestSocket.connect(host: "127.0.0.1", port: port)
            try client.expectEcho("first ten: \(i)\n")
            clients.append(client)
        }

        let eleventh = try TestSocket.connect(host: "127.0.0.1", port: port)
        let began = monotonicSeconds()
        let (end, bytes) = eleventh.waitForEnd(timeout: 1)
        let elapsed = monotonicSeconds() - began
        XCTAssertTrue(end == .eof || end == .reset, "the 11th connection should see EOF or reset within 1 s, saw \(end)")
        XCTAssertEqual(bytes, 0, "the 11th connection should get no data")
        XCTAssertLessThan(elapsed, 1.0)
        eleventh.close()

        for (i, client) in clients.enumerated() {
            try client.expectEcho("still echoing: \(i)\n")
        }
        XCTAssertTrue(eventually(timeout: 2) { server.stderr.text.contains("reason limit") },
                      "the refusal should be logged at info with reason limit; stderr:\n\(server.stderr.text.suffix(1500))")

        // A place frees when a connection closes (the server may need a moment to see the EOF).
        clients[0].close()
        var replacement: TestSocket?
        let admitted = eventually(timeout: 2, interval: 0.05) {
            guard let client = try? TestSocket.connect(host: "127.0.0.1", port: port),
                  (try? client.expectEcho("replacement\n", timeout: 0.5)) != nil else { return false }
            replacement = client
            return true
        }
        XCTAssertTrue(admitted, "a new connection should be served once one of the ten closed")
        replacement?.close()
    }

    func testMetricsStayReachableAndExactWhenTheConnectionLimitIsReached() throws {
        // An operator scrapes a full server to see that it is full; the scrape must not be refused
        // and must not be counted as a refused echo client.
        let server = try start(["--host", "127.0.0.1", "--port", "0", "--max-connections", "2", "--metrics-port", "0"])
        let port = try server.waitForTCPPort()
        let metricsPort = try server.waitForMetricsPort()
        let a = try TestSocket.connect(host: "127.0.0.1", port: port)
        let b = try TestSocket.connect(host: "127.0.0.1", port: port)
        try a.expectEcho("a\n")
        try b.expectEcho("b\n")
        assertMetrics(port: metricsPort, [
            "reflectd_connections_open": 2,
            "reflectd_connections_accepted_total": 2,
            "reflectd_connections_rejected_total": 0,
            "reflectd_connections_closed_total{reason=\"limit\"}": 0,
        ], timeout: 0.5)

        let refused = try TestSocket.connect(host: "127.0.0.1", port: port)
        let (end, _) = refused.waitForEnd(timeout: 1)
        XCTAssertTrue(end == .eof || end == .reset, "the third connection should be refused, saw \(end)")
        assertMetrics(port: metricsPort, [
            "reflectd_connections_open": 2,
            "reflectd_connections_accepted_total": 3,
            "reflectd_connections_rejected_total": 1,
            "reflectd_connections_closed_total{reason=\"limit\"}": 1,
        ], timeout: 0.5)
    }

    /// A place held by a lingering connection (closed by the server while the peer still sends)
    /// is given back when the linger starts: `exit` from 8 clients that keep their sockets open
    /// leaves room for 8 new ones at once.
    func testLingeringConnectionsCountAgainstNoLimit() throws {
        let (_, port) = try startAndWait(["--host", "127.0.0.1", "--port", "0", "--max-connections", "8"])
        var leaving: [TestSocket] = []
        for _ in 0..<8 {
            let client = try TestSocket.connect(host: "127.0.0.1", port: port)
            try client.send("exit\n")
            leaving.append(client)
        }
        for client in leaving { XCTAssertEqual(client.waitForEnd(timeout: 2).0, .eof) }
        let next = try (0..<8).map { _ in try TestSocket.connect(host: "127.0.0.1", port: port) }
        for (k, client) in next.enumerated() { try client.expectEcho("next \(k)\n", timeout: 1) }
        _ = leaving
    }

}
