// reflectd with --proxy-protocol, over loopback: the built binary, started as a user starts it,
// with clients that play the load balancer by writing the PROXY header themselves; refused
// headers hold no place, and the per-client limit behind the proxy counts the header's address.
// (scripts/netns-rig.sh puts the real HAProxy in front.)

import TestSupport
import Foundation
import Glibc
import XCTest

final class ProxyServerTests: ServerTestCase {

    private func start(_ arguments: [String]) throws -> (TestProcess, Int) {
        try startAndWait(["--host", "127.0.0.1", "--port", "0"] + arguments)
    }

    private static let payload: [UInt8] = (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ 7) }

    private func v1(_ source: String, port: Int = 4242) -> [UInt8] {
        Array("PROXY TCP4 \(source) 10.0.0.1 \(port) 8887\r\n".utf8)
    }

    func testHeaderAndDataInOneSegmentAreEchoedAndLoggedAsTheClient() throws {
        let (server, port) = try start(["--proxy-protocol"])
        let client = try TestSocket.connect(host: "127.0.0.1", port: port)
        try client.send(v1("192.0.2.33") + Self.payload)
        XCTAssertEqual(try client.receive(exactly: Self.payload.count), Self.payload)
        client.close()
        XCTAssertTrue(logged(server, "open 192.0.2.33:4242 via 127.0.0.1:"), server.stderr.text)
        XCTAssertTrue(logged(server, "close 192.0.2.33:4242 via 127.0.0.1:"), server.stderr.text)
    }

    func testV2HeaderWithTLVsSplitAcrossSegmentsThenData() throws {
        let (server, port) = try start(["--proxy-protocol"])
        let header = ProxyHeaders.v2IPv6(source: ProxyHeaders.ipv6("2001:db8::77"), sourcePort: 5050,
                                         destination: ProxyHeaders.ipv6("2001:db8::1"), destinationPort: 8887,
                                         tlv: [0x05, 0x00, 0x04, 1, 2, 3, 4] + [0x04, 0x01, 0x00] + [UInt8](repeating: 0, count: 256))
        let client = try TestSocket.connect(host: "127.0.0.1", port: port)
        // Cut the header inside the signature, inside the addresses and inside the TLVs, with
        // pauses so each piece is its own read.
        var start = 0
        for cut in [5, 20, 40, 60, 200, header.count] {
            try client.send(Array(header[start..<cut]))
            start = cut
            usleep(30_000)
        }
        try client.send(Self.payload)
        XCTAssertEqual(try client.receive(exactly: Self.payload.count), Self.payload)
        XCTAssertTrue(logged(server, "open [2001:db8::77]:5050 via 127.0.0.1:"), server.stderr.text)
        client.close()
    }

    func testExitLineRightAfterTheHeaderInTheSameSegmentCloses() throws {
        let (server, port) = try start(["--proxy-protocol"])
        let client = try TestSocket.connect(host: "127.0.0.1", port: port)
        try client.send(v1("192.0.2.34") + Array("exit\n".utf8))
        let (end, bytes) = client.waitForEnd(timeout: 3)
        XCTAssertEqual(end, .eof)
        XCTAssertEqual(bytes, 0, "the exit line is not echoed, and nothing of the header is")
        XCTAssertTrue(logged(server, "close 192.0.2.34:4242 via 127.0.0.1:"), server.stderr.text)
        XCTAssertTrue(server.stderr.text.contains("reason=exit"), server.stderr.text)
    }

    func testMalformedHeaderIsClosedWithReasonProxyAndLogged() throws {
        let (server, port) = try start(["--proxy-protocol"])
        for bad in ["GET / HTTP/1.1\r\nHost: x\r\n\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\nhello"] {
            let client = try TestSocket.connect(host: "127.0.0.1", port: port)
            try client.send(Array(bad.utf8))
            let (end, bytes) = client.waitForEnd(timeout: 3)
            XCTAssertTrue(end == .eof || end == .reset, "\(bad.debugDescription): \(end)")
            XCTAssertEqual(bytes, 0, "nothing of a refused connection is echoed")
            client.close()
        }
        XCTAssertTrue(logged(server, "does not start with a PROXY v1 or v2 signature"), server.stderr.text)
        XCTAssertTrue(logged(server, "port is not a number from 0 to 65535"), server.stderr.text)
        // The close lines follow the warnings through the log queue: wait for them too.
        let closes = { server.stderr.text.components(separatedBy: "reason=proxy").count - 1 }
        XCTAssertTrue(eventually(timeout: 3) { closes() >= 2 }, server.stderr.text)
        XCTAssertEqual(closes(), 2, server.stderr.text)
    }

    func testIncompleteHeaderIsClosedAfterThreeSeconds() throws {
        let (server, port) = try start(["--proxy-protocol"])
        let client = try TestSocket.connect(host: "127.0.0.1", port: port)
        let began = monotonicSeconds()
        try client.send(Array("PROXY TCP4 192.0.2".utf8))
        let (end, bytes) = client.waitForEnd(timeout: 8)
        let elapsed = monotonicSeconds() - began
        XCTAssertTrue(end == .eof || end == .reset, "\(end)")
        XCTAssertEqual(bytes, 0)
        XCTAssertGreaterThanOrEqual(elapsed, 2.9, "closed before the 3 s deadline")
        XCTAssertLessThan(elapsed, 7.5)
        XCTAssertTrue(logged(server, "incomplete after 3"), server.stderr.text)
        // The close line follows the warning through the log queue: wait for it too.
        XCTAssertTrue(logged(server, "reason=proxy"), server.stderr.text)
    }

    func testV2LocalHealthCheckIsServedAsTheBalancer() throws {
        let (server, port) = try start(["--proxy-protocol"])
        let client = try TestSocket.connect(host: "127.0.0.1", port: port)
        try client.send(ProxyHeaders.v2Local() + Self.payload)
        XCTAssertEqual(try client.receive(exactly: Self.payload.count), Self.payload)
        client.close()
        XCTAssertTrue(logged(server, "proxy=v2 local"), server.stderr.text)
        XCTAssertTrue(server.stderr.text.contains("open 127.0.0.1:"), server.stderr.text)
    }

    func testWithoutTheFlagAProxyHeaderIsEchoedAsData() throws {
        let (_, port) = try start([])
        let client = try TestSocket.connect(host: "127.0.0.1", port: port)
        let bytes = ProxyHeaders.v2IPv4(source: [1, 2, 3, 4], sourcePort: 1, destination: [5, 6, 7, 8], destinationPort: 2)
            + v1("192.0.2.1") + Self.payload
        try client.send(bytes)
        XCTAssertEqual(try client.receive(exactly: bytes.count), bytes)
        client.close()
    }

    func testPerClientLimitBehindTheProxyCountsTheHeaderAddress() throws {
        let (server, port) = try start(["--proxy-protocol", "--max-connections-per-client", "2"])
        let a1 = try TestSocket.connect(host: "127.0.0.1", port: port)
        try a1.send(v1("198.51.100.1", port: 1))
        try a1.expectEcho("a1\n")
        let a2 = try TestSocket.connect(host: "127.0.0.1", port: port)
        try a2.send(v1("198.51.100.1", port: 2))
        try a2.expectEcho("a2\n")
        let a3 = try TestSocket.connect(host: "127.0.0.1", port: port)
        try a3.send(v1("198.51.100.1", port: 3) + Array("a3\n".utf8))
        let (end, bytes) = a3.waitForEnd(timeout: 3)
        XCTAssertTrue(end == .eof || end == .reset, "\(end)")
        XCTAssertEqual(bytes, 0, "the third from 198.51.100.1 is refused")
        // Other clients through the same balancer address are not affected.
        let b = try TestSocket.connect(host: "127.0.0.1", port: port)
        try b.send(v1("198.51.100.2", port: 1))
        try b.expectEcho("b\n")
        XCTAssertTrue(logged(server, "2 connections from 198.51.100.1 open already (reason limit)"), server.stderr.text)
        a1.close()
        XCTAssertTrue(eventually(timeout: 3, interval: 0.05) {
            guard let c = try? TestSocket.connect(host: "127.0.0.1", port: port) else { return false }
            defer { c.close() }
            return (try? c.send(self.v1("198.51.100.1", port: 9))) != nil && (try? c.expectEcho("again\n", timeout: 0.5)) != nil
        }, "a place of 198.51.100.1 should come back when a1 closes")
        for c in [a2, a3, b] { c.close() }
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

}
