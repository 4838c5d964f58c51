// Who may send a PROXY header, and what a header can claim (issue 19, points 3 and 4, and the
// health-check reason of point 7): --proxy-protocol-from, the startup warning without it, strict
// v1 fields, per-client keys that no IPv6 source can share with an IPv4 client, the byte count of
// a late header, and HAProxy's health checks counted as `check`. Through the built binary on
// loopback; 127.0.0.2 plays a host that is not the balancer.

import TestSupport
import Foundation
import Glibc
import XCTest

final class ProxyTrustTests: ServerTestCase {

    private func start(_ arguments: [String], host: String = "127.0.0.1") throws -> (TestProcess, Int) {
        try startAndWait(["--host", host, "--port", "0"] + arguments)
    }

    private static let payload: [UInt8] = (0..<2048).map { UInt8(truncatingIfNeeded: $0 &* 193 &+ 11) }

    private func v1(_ source: String, port: Int = 4242) -> [UInt8] {
        Array("PROXY TCP4 \(source) 10.0.0.1 \(port) 8887\r\n".utf8)
    }

    /// The SIGUSR1 statistics line (the last one, after asking for a new one).
    private func statistics(_ server: TestProcess) -> String {
        let count = { server.stderr.lines.filter { $0.contains("statistics:") }.count }
        let before = count()
        server.send(signal: SIGUSR1)
        _ = eventually(timeout: 3) { count() > before }
        return server.stderr.lines.last { $0.contains("statistics:") } ?? ""
    }

    // MARK: point 3: --proxy-protocol-from

    /// 200 direct connections from an address that is not a balancer, each forging another
    /// source: all refused at once with reason `proxy`, logged with the real address, none
    /// echoed (0.2.0 admitted all 200, each as a new client). The balancer still gets in.
    func testHeadersFromUntrustedSourcesAreRefused() throws {
        let (server, port) = try start(["--proxy-protocol", "--proxy-protocol-from", "127.0.0.1/32,::1",
                                        "--max-connections-per-client", "2"])
        var forged: [TestSocket] = []
        for k in 0..<200 {
            let client = try TestSocket.connect(host: "127.0.0.1", port: port, from: "127.0.0.2")
            try? client.send(v1("198.51.\(k / 250).\(k % 250 + 1)") + Self.payload)
            forged.append(client)
        }
        for (k, client) in forged.enumerated() {
            let (end, bytes) = client.waitForEnd(timeout: 2)
            XCTAssertNotEqual(end, .timeout, "forged connection \(k) was not closed")
            XCTAssertEqual(bytes, 0, "forged connection \(k) was echoed")
        }
        XCTAssertTrue(logged(server, "connection from 127.0.0.2:"), server.stderr.text.suffix(1000).description)
        XCTAssertTrue(server.stderr.text.contains("not in --proxy-protocol-from"))
        XCTAssertFalse(server.stderr.text.contains("198.51."), "a forged source reached the log")
        XCTAssertTrue(statistics(server).contains("proxy=200"), statistics(server))

        let balancer = try TestSocket.connect(host: "127.0.0.1", port: port, from: "127.0.0.1")
        try balancer.send(v1("192.0.2.77") + Self.payload)
        XCTAssertEqual(try balancer.receive(exactly: Self.payload.count), Self.payload)
        XCTAssertTrue(logged(server, "open 192.0.2.77:4242 via 127.0.0.1:"))
    }

    /// Bad lists are refused with a message naming the option; the list needs --proxy-protocol.
    func testBadTrustListsAreRefused() throws {
        for (arguments, words) in [(["--proxy-protocol", "--proxy-protocol-from", "10.0.0.1/8"], "bits set past /8"),
                                   (["--proxy-protocol", "--proxy-protocol-from", "10.0.0.0/33"], "prefix length"),
                                   (["--proxy-protocol", "--proxy-protocol-from", "example.com"], "not an IPv4 or IPv6"),
                                   (["--proxy-protocol", "--proxy-protocol-from", "127.0.0.1,,::1"], "empty entry"),
                                   (["--proxy-protocol-from", "127.0.0.1"], "needs --proxy-protocol")] {
            let failing = try TestProcess.reflectd(["--port", "0"] + arguments)
            track(failing)
            let text = assertFailsAtOnce(failing)
            XCTAssertTrue(text.contains("--proxy-protocol-from") && text.contains(words), "\(arguments): \(text)")
        }
    }

    /// Without a trust list, --proxy-protocol on an address others can reach logs a warning;
    /// on loopback only, or with a list, it does not.
    func testWarningWhenAnyoneMayForgeTheSource() throws {
        let (exposed, _) = try start(["--proxy-protocol"], host: "0.0.0.0")
        XCTAssertTrue(logged(exposed, "without --proxy-protocol-from"), exposed.stderr.text)
        let (local, _) = try start(["--proxy-protocol"])
        let (listed, _) = try start(["--proxy-protocol", "--proxy-protocol-from", "10.1.0.0/16"], host: "0.0.0.0")
        Thread.sleep(forTimeInterval: 0.3)
        XCTAssertFalse(local.stderr.text.contains("without --proxy-protocol-from"), local.stderr.text)
        XCTAssertFalse(listed.stderr.text.contains("without --proxy-protocol-from"), listed.stderr.text)
    }

    // MARK: point 4: parsing details

    /// A NUL inside a v1 address is refused (0.2.0 logged `9.9.9.9`).
    func testNulInsideAV1AddressIsRefused() throws {
        let (server, port) = try start(["--proxy-protocol"])
        let client = try TestSocket.connect(host: "127.0.0.1", port: port)
        try client.send(Array("PROXY TCP4 9.9.9.9\u{0}junk 10.0.0.1 4242 8887\r\n".utf8) + Self.payload)
        XCTAssertNotEqual(client.waitForEnd(timeout: 2).0, .timeout)
        XCTAssertTrue(logged(server, "refused: PROXY v1 address is not a valid address of its family"), server.stderr.text)
        XCTAssertFalse(server.stderr.text.contains("open 9.9.9.9"), server.stderr.text)
    }

    /// Forged IPv6 sources that 0.2.0 keyed like 127.0.0.1 (or might, under another encoding)
    /// each get a place of their own beside an IPv4 client at its limit of 1.
    func testForgedIPv6SourcesNeverShareAnIPv4ClientsPlace() throws {
        let (server, port) = try start(["--proxy-protocol", "--max-connections-per-client", "1"])
        let ipv4 = try TestSocket.connect(host: "127.0.0.1", port: port)
        try ipv4.send(v1("127.0.0.1") + Self.payload)
        XCTAssertEqual(try ipv4.receive(exactly: Self.payload.count), Self.payload)
        var held: [TestSocket] = [ipv4]
        for source in ["ffff:ffff:100:7f::", "::ffff:0:7f00:1", "7f00:1::"] {
            let client = try TestSocket.connect(host: "127.0.0.1", port: port)
            try client.send(ProxyHeaders.v2IPv6(source: ProxyHeaders.ipv6(source), sourcePort: 5000,
                                                destination: ProxyHeaders.ipv6("2001:db8::1"), destinationPort: 8887) + Self.payload)
            XCTAssertEqual(try client.receive(exactly: Self.payload.count, timeout: 2), Self.payload,
                           "\(source) was refused as if it were 127.0.0.1; stderr:\n\(server.stderr.text.suffix(1500))")
            held.append(client)
        }
        // And the IPv4 client is still at its limit.
        let second = try TestSocket.connect(host: "127.0.0.1", port: port)
        try second.send(v1("127.0.0.1", port: 4243))
        XCTAssertNotEqual(second.waitForEnd(timeout: 2).0, .timeout)
        XCTAssertTrue(logged(server, "1 connections from 127.0.0.1 open already"), server.stderr.text)
        _ = held
    }

    /// A v2 header announcing 2,000 bytes of TLVs, of which about 1,300 arrive: the deadline's
    /// log line counts what was received (0.2.0 said 100 bytes).
    func testLateHeaderLogCountsTheBytesReceived() throws {
        let (server, port) = try start(["--proxy-protocol"])
        let client = try TestSocket.connect(host: "127.0.0.1", port: port)
        let tlv = [UInt8](repeating: 0x04, count: 2_000 - 12)
        let header = ProxyHeaders.v2IPv4(source: [192, 0, 2, 1], sourcePort: 1, destination: [10, 0, 0, 1],
                                         destinationPort: 8887, tlv: tlv)
        try client.send(Array(header.prefix(1_300)))
        XCTAssertTrue(logged(server, "(1300 bytes received)", timeout: 5), server.stderr.text)
        XCTAssertNotEqual(client.waitForEnd(timeout: 2).0, .timeout)
    }

    // MARK: point 7: health checks are not resets

    /// HAProxy's checks with `send-proxy-v2` send a v2 LOCAL header, then reset; with
    /// `send-proxy`, `PROXY UNKNOWN`. Counted as `check`, not `reset`; a real reset still is.
    func testHealthChecksAreCountedApartFromResets() throws {
        let (server, port) = try start(["--proxy-protocol"])
        for k in 0..<3 {
            let check = try TestSocket.connect(host: "127.0.0.1", port: port)
            try check.send(ProxyHeaders.v2Local())
            // As HAProxy does, the reset right behind the header (one segment after the other,
            // usually both in before the server reads: the header must still be read first).
            if k > 0 { Thread.sleep(forTimeInterval: 0.05) }
            check.closeWithReset()
        }
        let unknown = try TestSocket.connect(host: "127.0.0.1", port: port)
        try unknown.send(Array("PROXY UNKNOWN\r\n".utf8))
        Thread.sleep(forTimeInterval: 0.05)
        unknown.close()
        // HAProxy's v1 check: `PROXY TCP4` with its own addresses, nothing after, then a reset.
        let v1Check = try TestSocket.connect(host: "127.0.0.1", port: port)
        try v1Check.send(v1("127.0.0.1"))
        Thread.sleep(forTimeInterval: 0.05)
        v1Check.closeWithReset()
        // A client that sent bytes after its header, in a later segment, then reset: a reset.
        let talker = try TestSocket.connect(host: "127.0.0.1", port: port)
        try talker.send(v1("192.0.2.6"))
        Thread.sleep(forTimeInterval: 0.05)
        try talker.send("hi\n")
        XCTAssertEqual(try talker.receive(exactly: 3), Array("hi\n".utf8))
        talker.closeWithReset()
        let real = try TestSocket.connect(host: "127.0.0.1", port: port)
        try real.send(v1("192.0.2.5") + Array("hello\n".utf8))
        XCTAssertEqual(try real.receive(exactly: 6), Array("hello\n".utf8))
        real.closeWithReset()
        XCTAssertTrue(eventually(timeout: 3) { self.statistics(server).contains("check=5") }, statistics(server))
        let line = statistics(server)
        XCTAssertTrue(line.contains("reset=2"), line)
    }
}
