// Scale: 10,000 open connections with a thousand echoing at once.
//
// Through the built `reflectd` on loopback: every socket operation and wait has a deadline, and
// tearDown (ServerTestCase) kills whatever a test left running.

import TestSupport
import Foundation
import Glibc
import XCTest

final class ScaleTests: ServerTestCase {

    func testTenThousandOpenConnectionsWithAThousandEchoingAtOnce() throws {
        let target = 10_000
        let soft = FileLimit.raise()
        try XCTSkipUnless(soft >= target + 500, "needs an fd limit above \(target + 500), have \(soft)")
        // The server gets the hard limit as its soft limit too.
        let server = track(try TestProcess.reflectd(
            shellPrologue: "ulimit -n \(FileLimit.hard) || exit 97",
            ["--host", "127.0.0.1", "--port", "0", "--log-level", "warning"]))
        let port = try server.waitForTCPPort()

        // Warm up the paths one connection takes (the first output buffer, log machinery).
        try TestSocket.connect(host: "127.0.0.1", port: port).expectEcho("warm-up\n")
        usleep(200_000)
        let baseFDs = server.openFDCount()
        let rssBefore = try XCTUnwrap(server.residentKiB())

        let began = monotonicSeconds()
        let clients = try ClientCrowd.connect(count: target, host: "127.0.0.1", port: port, batch: 1000, timeout: 30)
        let allAccepted = eventually(timeout: 20, interval: 0.05) { server.openFDCount() >= baseFDs + target }
        XCTAssertTrue(allAccepted, "reflectd holds \(server.openFDCount() - baseFDs) of \(target) connections")
        let connectSeconds = monotonicSeconds() - began
        usleep(200_000)
        let rssOpen = try XCTUnwrap(server.residentKiB())

        // Every connection echoes, a thousand at a time, each with its own bytes.
        let echoBegan = monotonicSeconds()
        for group in stride(from: 0, to: target, by: 1000) {
            let batch = Array(clients[group..<min(group + 1000, target)])
            let bad = try ClientCrowd.echoAtOnce(batch, timeout: 15) { i in
                let n = group + i
                return Array("connection \(n) of \(target): \(String(repeating: Character(UnicodeScalar(UInt8(97 + n % 26))), count: 20 + n % 80))\n".utf8)
            }
            XCTAssertEqual(bad.count, 0, "group at \(group): \(bad.count) connections with wrong or missing echo, first \(bad.prefix(5).map { $0 + group })")
        }
        let echoSeconds = monotonicSeconds() - echoBegan
        let rssAfterEcho = try XCTUnwrap(server.residentKiB())

        let perConnection = Double(rssOpen - rssBefore) * 1024 / Double(target)
        let perConnectionAfterEcho = Double(rssAfterEcho - rssBefore) * 1024 / Double(target)
        print(String(format: "reflectd RSS: %d KiB before, %d KiB with %d idle connections (%.0f bytes per open connection), %d KiB after each echoed once (%.0f bytes per connection); connect+accept %.2f s, echo %.2f s",
                     rssBefore, rssOpen, target, perConnection, rssAfterEcho, perConnectionAfterEcho, connectSeconds, echoSeconds))
        XCTAssertLessThan(perConnection, 4096, "RSS per open connection")

        for client in clients { client.close() }
        XCTAssertTrue(eventually(timeout: 20, interval: 0.05) { server.openFDCount() <= baseFDs },
                      "reflectd still holds \(server.openFDCount() - baseFDs) connections after the clients closed")
        server.send(signal: SIGTERM)
        assertExitsCleanly(server, within: 6)
    }
}
