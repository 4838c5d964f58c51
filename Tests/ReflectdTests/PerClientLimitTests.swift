// Refusals hold nothing (issue 19, points 2 and 8): a connection refused by --max-connections,
// --max-connections-per-client or a PROXY error gives back every place at once, so a client that
// keeps refused connections open locks nobody out; and with default flags one address cannot take
// every connection the fd limit leaves room for. Through the built binary on loopback, with
// clients on 127.0.0.1 and 127.0.0.2 as two addresses.

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

    /// `--max-connections` refusals and PROXY refusals (a header that is no header) hold nothing
    /// either: 8 bad headers, never closed by the client, leave every place to a good client.
    func testRefusedProxyHeadersHoldNoPlace() throws {
        let (server, port) = try startAndWait(["--host", "127.0.0.1", "--port", "0", "--max-connections", "8", "--proxy-protocol"])
        var bad: [TestSocket] = []
        for k in 0..<8 {
            let client = try TestSocket.connect(host: "127.0.0.1", port: port)
            try client.send(Array("GET / HTTP/1.0 \(k)\r\n\r\n".utf8))
            bad.append(client)
        }
        assertRefusedAtOnce(bad)
        // The 12-byte v2 signature and nothing more: pending, not refused yet, but a 3 s deadline.
        let good = try TestSocket.connect(host: "127.0.0.1", port: port)
        let payload: [UInt8] = (0..<512).map { UInt8(truncatingIfNeeded: $0 &* 37) }
        try good.send(ProxyHeaders.v2IPv4(source: [192, 0, 2, 9], sourcePort: 4000, destination: [10, 0, 0, 1],
                                          destinationPort: 8887) + payload)
        XCTAssertEqual(try good.receive(exactly: payload.count, timeout: 1), payload)
        XCTAssertEqual(closedCounts(server)["proxy"], 8)
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
}
