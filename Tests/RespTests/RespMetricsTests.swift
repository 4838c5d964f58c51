import Foundation
import Glibc
import TestSupport
import XCTest

/// resp-server's `--metrics-port`: the kit's endpoint, with every series named `resp_…`, the
/// metrics connections not counted as clients, and resp-server's own series (keys).
final class RespMetricsTests: XCTestCase {
    func testMetricsCountClientsKeysAndPerClientRefusalsUnderTheRespPrefix() throws {
        let metricsPort = try TestListener().port  // closed again at once: free for the server
        let server = try ServerUnderTest.resp(["--metrics-port", "\(metricsPort)", "--max-connections-per-client", "2"])
        let first = try TestSocket.connect(port: server.port)
        try first.send(multibulk("SET", "a", "1") + multibulk("SET", "b", "2") + multibulk("SET", "c", "3"))
        XCTAssertEqual(try first.receiveString(exactly: 15), "+OK\r\n+OK\r\n+OK\r\n")
        let second = try TestSocket.connect(port: server.port)
        try second.send(multibulk("PING"))
        XCTAssertEqual(try second.receiveString(exactly: 7), "+PONG\r\n")
        // A third connection from 127.0.0.1 is over the per-client limit: closed at once.
        let third = try TestSocket.connect(port: server.port)
        try third.send(multibulk("PING"))
        XCTAssertEqual(third.receiveUntilEnd(timeout: 5).bytes, [])

        var text = ""
        XCTAssertTrue(eventually {
            text = (try? Self.get("/metrics", port: metricsPort)) ?? ""
            return text.contains("\nresp_connections_open 2\n")
        }, "the two clients are not the open connections (the scrape's own not subtracted?):\n\(text)")
        XCTAssertTrue(text.hasPrefix("HTTP/1.1 200 OK\r\n"), text)
        XCTAssertTrue(text.contains("# TYPE resp_connections_open gauge"), text)
        XCTAssertTrue(text.contains("\nresp_keys 3\n"), text)
        XCTAssertTrue(text.contains("\nresp_connections_rejected_per_client_total 1\n"), text)
        XCTAssertTrue(text.contains("\nresp_connections_closed_total{reason=\"limit\"} 1\n"), text)
        XCTAssertFalse(text.contains("reflectd_"), "a series named after reflectd:\n\(text)")
        XCTAssertTrue(try Self.get("/livez", port: metricsPort).hasPrefix("HTTP/1.1 200"))
    }

    /// `GET path` on the metrics port: the whole response (the endpoint closes after it).
    static func get(_ path: String, port: Int) throws -> String {
        let socket = try TestSocket.connect(port: port)
        try socket.send("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        let (bytes, end) = socket.receiveUntilEnd(timeout: 5)
        guard end == .eof else { throw Failure("GET \(path): \(end) after \(bytes.count) bytes") }
        return String(decoding: bytes, as: UTF8.self)
    }
}
