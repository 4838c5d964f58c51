// --max-connections-per-client: one over the limit is refused at once and places come back
// however connections end; refused connections hold no place (a client that keeps them open
// locks nobody out); with default flags one address cannot take every connection the fd limit
// leaves room for; bad values are refused. Through the built binary on loopback, with clients
// on 127.0.0.1 and 127.0.0.2 as two addresses.

import TestSupport
import Foundation
import Glibc
import XCTest

final class PerClientLimitTests: ServerTestCase {

    // MARK: point 2: refusals hold nothing

    /// One address at its per-client limit keeps 6 refused connections open (it never closes
    /// them); with `--max-connections 8` those would fill every place during a 2 s linger
    /// (0.2.0: the other address was refused). Now they are closed at once and hold nothing.
    func testRefusedByThePerClientLimitHoldNoPlace() throws {
        let (server, port) = try startAndWait(["--host", "127.0.0.1", "--port", "0", "--max-connections", "8",
                                        "--max-connections-per-client", "2"])
        let admitted = try (0..<2).map { _ in try TestSocket.connect(host: "127.0.0.1", port: port, from: "127.0.0.1") }
        for (k, client) in admitted.enumerated() { try client.expectEcho("admitted \(k)\n") }
        let refused = try (0..<6).map { _ in try TestSocket.connect(host: "127.0.0.1", port: port, from: "127.0.0.1") }
        assertRefusedAtOnce(refused)

        // Another address gets in at once, while the refused sockets are still open on our side.
        let began = monotonicSeconds()
        let other = try TestSocket.connect(host: "127.0.0.1", port: port, from: "127.0.0.2")
        try other.expectEcho("another address\n", timeout: 1)
        XCTAssertLessThan(monotonicSeconds() - began, 0.5)
        XCTAssertEqual(closedCounts(server)["limit"], 6)
        XCTAssertTrue(server.stderr.text.contains("connection from 127.0.0.1:"), "the refusal names the real peer")
        for client in admitted { try client.expectEcho("still here\n") }
        _ = refused
    }

    // MARK: point 8: the default per-client limit

    /// With default flags and `ulimit -n 1000`, one address opens 1,100 silent connections and
    /// keeps them; another address still gets its echo (0.2.0: every fd went to the first).
    func testOneAddressCannotTakeEveryConnectionByDefault() throws {
        let (server, port) = try startAndWait(["--host", "127.0.0.1", "--port", "0"], prologue: "ulimit -n 1000")
        let hog = try ClientCrowd.connect(count: 1_100, host: "127.0.0.1", port: port, timeout: 30)
        XCTAssertTrue(eventually(timeout: 5) {
            server.stderr.text.components(separatedBy: "reason limit").count - 1 >= 100
        }, "not every connection over the default limit was refused; stderr:\n\(server.stderr.text.suffix(1500))")
        let other = try TestSocket.connect(host: "127.0.0.1", port: port, from: "127.0.0.2")
        try other.expectEcho("room for another address\n", timeout: 2)
        let line = server.stderr.lines.first { $0.contains("connections per client address") } ?? ""
        XCTAssertTrue(line.contains("--max-connections-per-client auto"), "the default is logged at startup: \(line)")
        _ = hog
    }

    /// `off` removes the default limit; a number sets it; bad values are refused with a message.
    func testPerClientLimitOffAndBadValues() throws {
        let (server, port) = try startAndWait(["--host", "127.0.0.1", "--port", "0", "--max-connections-per-client", "off"],
                                       prologue: "ulimit -n 64")
        _ = port
        XCTAssertFalse(server.stderr.text.contains("connections per client address"))
        for bad in ["0", "-3", "many", "auto5"] {
            let failing = try TestProcess.reflectd(["--port", "0", "--max-connections-per-client", bad])
            track(failing)
            let text = assertFailsAtOnce(failing)
            XCTAssertTrue(text.contains("--max-connections-per-client"), text)
        }
    }

    /// A fourth connection from one address is accepted and closed with reason `limit`; places
    /// come back however connections end (EOF, reset, exit line), and the refusals are counted.
    func testPerClientLimitRefusesOneOverAndGivesPlacesBackHoweverConnectionsEnd() throws {
        let server = try TestProcess.reflectd(["--host", "127.0.0.1", "--port", "0", "--metrics-port", "0",
                                                 "--max-connections-per-client", "3", "--reactors", "2"])
        track(server)
        let port = try server.waitForListeningLine().port
        let metricsPort = try server.waitForMetricsPort()
        var open = try (0..<3).map { _ in try TestSocket.connect(host: "127.0.0.1", port: port) }
        for (i, c) in open.enumerated() { try c.expectEcho("client \(i)\n") }
        let fourth = try TestSocket.connect(host: "127.0.0.1", port: port)
        let (end, bytes) = fourth.waitForEnd(timeout: 3)
        XCTAssertTrue(end == .eof || end == .reset, "the fourth should be closed at once, saw \(end)")
        XCTAssertEqual(bytes, 0)
        fourth.close()
        XCTAssertTrue(logged(server, "connections from 127.0.0.1 open already (reason limit)"), server.stderr.text)

        // End them every way, twenty rounds; the limit must let three in each round.
        for round in 0..<20 {
            switch round % 3 {
            case 0: open[0].close()
            case 1: open[0].closeWithReset()
            default:
                try open[0].send("exit\n")
                _ = open[0].waitForEnd(timeout: 3)
                open[0].close()
            }
            open.removeFirst()
            var admitted: TestSocket?
            XCTAssertTrue(eventually(timeout: 3, interval: 0.02) {
                guard let c = try? TestSocket.connect(host: "127.0.0.1", port: port),
                      (try? c.expectEcho("round \(round)\n", timeout: 0.5)) != nil else { return false }
                admitted = c
                return true
            }, "round \(round): a place should come back")
            if let admitted { open.append(admitted) }
        }
        // A reconnect can beat the server to the EOF of the connection it replaces and be refused
        // too: the counter must equal the refusals logged, the fourth's among them.
        for c in open { c.close() }
        let refusals = server.stderr.text.components(separatedBy: "open already (reason limit)").count - 1
        XCTAssertGreaterThanOrEqual(refusals, 1)
        let (metrics, unmet) = try MetricsScrape.scrape(port: metricsPort, until: [
            "reflectd_connections_rejected_per_client_total": refusals, "reflectd_connections_closed_total{reason=\"limit\"}": refusals])
        XCTAssertEqual(unmet, [], metrics.text)
    }

    func testNonPositivePerClientLimitIsRefusedWithAMessage() throws {
        // `=` so that the argument parser takes -3 as the option's value, not as another option.
        for value in ["0", "-3"] {
            let server = try TestProcess.reflectd(["--port", "0", "--max-connections-per-client=\(value)"])
            track(server)
            let end = server.waitForExit(timeout: 10)
            XCTAssertNotNil(end)
            XCTAssertNotEqual(end, .exited(0))
            XCTAssertTrue(eventually(timeout: 2) { server.stderr.text.contains("The value '\(value)' is invalid for '--max-connections-per-client") },
                          server.stderr.text)
        }
    }

}
