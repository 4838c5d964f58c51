import Foundation
import Glibc
import TestSupport
import XCTest

/// resp-server behind a real HAProxy that sends PROXY v2 headers (`send-proxy-v2`): the client's
/// address is the header's, so `--max-connections-per-client` counts real clients, not the
/// balancer, and a log reader that stops reading costs log lines, never service.
///
/// Clients bind their own loopback source (127.0.0.2, 127.0.0.3: all of 127/8 is loopback), so
/// the header's source differs from the balancer's 127.0.0.1.
final class RespProxyTests: XCTestCase {
    /// Why 5 s: a refusal is one round trip through HAProxy; 5 s is generous on a loaded CI
    /// machine and still ends a hung test quickly.
    static let replyTimeout: Double = 5

    func testPerClientLimitCountsTheAddressInTheProxyHeader() throws {
        let server = try ServerUnderTest.resp(["--proxy-protocol", "--proxy-protocol-from", "127.0.0.1",
                                               "--max-connections-per-client", "2"])
        let haproxy = try HAProxy(backendPort: server.port)

        let first = try [ping(haproxy.port, from: "127.0.0.2"), ping(haproxy.port, from: "127.0.0.2")]
        // A third from 127.0.0.2 is refused: the server closes it, and HAProxy its client side.
        let third = try TestSocket.connect(port: haproxy.port, source: "127.0.0.2")
        try third.send(multibulk("PING"))
        let refused = third.receiveUntilEnd(timeout: Self.replyTimeout)
        XCTAssertEqual(refused.bytes, [], "the third connection from 127.0.0.2 was served: \(TestSocket.preview(refused.bytes))")
        XCTAssertNotEqual(refused.end, .timeout, "the third connection from 127.0.0.2 was neither served nor closed")
        // Another client behind the same balancer still gets its own two: the limit is not the
        // balancer's (five connections from 127.0.0.1 by then).
        let other = try [ping(haproxy.port, from: "127.0.0.3"), ping(haproxy.port, from: "127.0.0.3")]
        // The first client's connections still work.
        for socket in first { XCTAssertEqual(try roundTrip(socket), "+PONG\r\n") }
        // A place given back is taken again.
        first[0].close()
        XCTAssertTrue(eventually(timeout: Self.replyTimeout) { (try? ping(haproxy.port, from: "127.0.0.2")) != nil },
                      "a closed connection's place was not given back")
        _ = other
        XCTAssertTrue(eventually { server.log.contains("refused: 2 connections from 127.0.0.2 open already (reason limit)") },
                      "no refusal naming the client's real address in the log:\n\(server.log)")
    }

    func testConnectionWithoutHeaderOrFromAnUntrustedSourceIsRefused() throws {
        let server = try ServerUnderTest.resp(["--proxy-protocol", "--proxy-protocol-from", "127.0.0.1"])
        // Straight to the server from the trusted address, but no header: RESP is not PROXY.
        let bare = try TestSocket.connect(port: server.port)
        try bare.send(multibulk("PING"))
        XCTAssertEqual(bare.receiveUntilEnd(timeout: Self.replyTimeout).bytes, [])
        // A well-formed header from a source not in --proxy-protocol-from.
        let untrusted = try TestSocket.connect(port: server.port, source: "127.0.0.4")
        try untrusted.send(Array("PROXY TCP4 203.0.113.7 127.0.0.1 5000 6379\r\n".utf8) + multibulk("PING"))
        XCTAssertEqual(untrusted.receiveUntilEnd(timeout: Self.replyTimeout).bytes, [])
        // A v1 header from the trusted address, split from its request: served.
        let proxied = try TestSocket.connect(port: server.port)
        try proxied.send(Array("PROXY TCP4 203.0.113.7 127.0.0.1 5000 6379\r\n".utf8))
        XCTAssertEqual(try roundTrip(proxied), "+PONG\r\n")
        XCTAssertTrue(eventually { server.log.contains("not in --proxy-protocol-from") && server.log.contains("open 203.0.113.7:5000 via") },
                      "log:\n\(server.log)")
    }

    /// At `--log-level debug` every connection logs its open and close (about 200 bytes); 2,000
    /// connections through HAProxy fill a never-read stderr pipe's 64 KiB several times over.
    func testStalledStderrBehindHAProxyStillServes() throws {
        let server = try ServerUnderTest.resp(["--proxy-protocol", "--log-level", "debug"], stderr: .pipeNeverRead)
        let haproxy = try HAProxy(backendPort: server.port)
        let steady = try TestSocket.connect(port: haproxy.port, source: "127.0.0.2")
        for i in 0..<2_000 {
            let socket = try TestSocket.connect(port: haproxy.port, source: "127.0.0.3")
            try socket.send(multibulk("SET", "k\(i % 10)", "v\(i)"))
            // Throws after 5 s: a frozen server ends the test here, not hangs it.
            XCTAssertEqual(try socket.receiveString(exactly: 5, timeout: Self.replyTimeout), "+OK\r\n", "connection \(i)")
            socket.close()
        }
        XCTAssertGreaterThanOrEqual(server.stderrPipeBytes, 32 * 1024, "the stderr pipe is not full, so this proves nothing")
        let began = monotonicSeconds()
        XCTAssertEqual(try roundTrip(steady), "+PONG\r\n")
        XCTAssertLessThan(monotonicSeconds() - began, 1, "a PING took over 1 s with stderr stalled")
        server.signal(SIGTERM)
        XCTAssertEqual(server.waitForExit(timeout: 5), 0, "resp-server with a stalled stderr did not exit 0 within 5 s of SIGTERM")
    }

    // MARK: helpers

    /// A connection from `source` through HAProxy that answered a PING.
    private func ping(_ port: Int, from source: String) throws -> TestSocket {
        let socket = try TestSocket.connect(port: port, source: source)
        let reply = try roundTrip(socket)
        guard reply == "+PONG\r\n" else { throw Failure("PING from \(source) got \(reply)") }
        return socket
    }

    private func roundTrip(_ socket: TestSocket) throws -> String {
        try socket.send(multibulk("PING"))
        return try socket.receiveString(exactly: 7, timeout: Self.replyTimeout)
    }
}

/// HAProxy in TCP mode on a free loopback port, forwarding to `backendPort` with a PROXY v2
/// header, as deploy/haproxy.cfg does; stopped when released.
final class HAProxy {
    let port: Int
    private let process: ChildServer
    private let directory: URL

    init(backendPort: Int) throws {
        // Debian installs it in /usr/sbin, which a user's PATH may lack.
        let sbin = "/usr/sbin/haproxy"
        guard let path = Tools.path("haproxy") ?? (FileManager.default.isExecutableFile(atPath: sbin) ? sbin : nil) else {
            throw XCTSkip("haproxy is not installed (apt-get install -y haproxy; CI installs it)")
        }
        port = try TestListener().port  // closed again at once: free for HAProxy
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("resp-haproxy-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let config = directory.appendingPathComponent("haproxy.cfg")
        try """
            global
                maxconn 4096
            defaults
                mode tcp
                timeout connect 2s
                timeout client 30s
                timeout server 30s
            frontend resp
                bind 127.0.0.1:\(port)
                default_backend servers
            backend servers
                server resp 127.0.0.1:\(backendPort) send-proxy-v2

            """.write(to: config, atomically: true, encoding: .utf8)
        process = try ChildServer(binary: URL(fileURLWithPath: path), arguments: ["-db", "-f", config.path],
                                  announcesPort: false, port: port)
    }

    deinit { try? FileManager.default.removeItem(at: directory) }
}
