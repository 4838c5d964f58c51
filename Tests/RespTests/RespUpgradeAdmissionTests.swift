import Foundation
import Glibc
import TestSupport
import XCTest

/// What the kit adds to resp-server across its SIGUSR2 upgrade: the places under
/// `--max-connections-per-client` travel with their connections, and `--metrics-port` is served
/// by the new process on the old process's listener.
final class RespUpgradeAdmissionTests: XCTestCase {
    func testPerClientPlacesAndTheMetricsListenerCrossTheUpgrade() throws {
        let metricsPort = try TestListener().port  // closed again at once: free for the server
        let server = try UpgradableResp(["--max-connections-per-client", "2", "--metrics-port", "\(metricsPort)"])
        defer { server.stop() }
        let clients = try (0..<2).map { _ in try TestSocket.connect(port: server.port) }
        for client in clients { XCTAssertEqual(try ping(client), "+PONG\r\n") }
        XCTAssertTrue(try RespMetricsTests.get("/metrics", port: metricsPort).contains("\nresp_connections_open 2\n"))

        XCTAssertEqual(try server.upgrade(), 2, "the two clients are carried (the metrics request is not)")

        // The new process serves metrics on the same port, and counts the carried clients.
        var text = ""
        XCTAssertTrue(eventually {
            text = (try? RespMetricsTests.get("/metrics", port: metricsPort)) ?? ""
            return text.contains("\nresp_connections_open 2\n")
        }, "metrics after the upgrade:\n\(text)")
        // The places came along: a third connection from 127.0.0.1 is still over the limit.
        let third = try TestSocket.connect(port: server.port)
        try third.send(multibulk("PING"))
        XCTAssertEqual(third.receiveUntilEnd(timeout: 5).bytes, [], "a third connection was served: the places were lost")
        for client in clients { XCTAssertEqual(try ping(client), "+PONG\r\n") }
        // A carried place is given back once, at close, by the new process.
        clients[0].close()
        XCTAssertTrue(eventually { (try? TestSocket.connect(port: server.port)).map { (try? self.ping($0)) == "+PONG\r\n" } ?? false },
                      "a closed carried connection's place was not given back")
    }

    private func ping(_ socket: TestSocket) throws -> String {
        try socket.send(multibulk("PING"))
        return try socket.receiveString(exactly: 7, timeout: 5)
    }
}
