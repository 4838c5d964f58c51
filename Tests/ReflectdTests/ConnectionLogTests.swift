// The connection log: one open and one close line per connection, with the close reason.
//
// Through the built `reflectd` on loopback: every socket operation and wait has a deadline, and
// tearDown (ServerTestCase) kills whatever a test left running.

import TestSupport
import Foundation
import Glibc
import Synchronization
import XCTest

final class ConnectionLogTests: ServerTestCase {

    func testLogsOneOpenAndOneCloseLinePerConnectionWithReason() throws {
        let (server, port) = try startServer()
        let secret = "secret-payload-\(UInt32.random(in: 1000...9999))"

        let exitClient = try TestSocket.connect(port: port)
        let exitPort = exitClient.localPort
        try roundTrip(exitClient, secret + "\n")
        try exitClient.send("exit\n")
        XCTAssertEqual(exitClient.receiveUntilEnd().end, .eof)
        exitClient.close()

        let eofClient = try TestSocket.connect(port: port)
        let eofPort = eofClient.localPort
        try roundTrip(eofClient, "hi\n")
        eofClient.shutdownWrite()
        XCTAssertEqual(eofClient.receiveUntilEnd().end, .eof)
        eofClient.close()

        let resetClient = try TestSocket.connect(port: port)
        let resetPort = resetClient.localPort
        try roundTrip(resetClient, "hi\n")
        resetClient.closeWithReset()

        XCTAssertTrue(eventually { [exitPort, eofPort, resetPort].allSatisfy { self.lines(server.stderr.lines, mentioning: $0).count >= 2 } },
                      "missing close lines; stderr:\n\(server.stderr.text)")
        let log = server.stderr.lines
        assertOpenAndCloseLogged(log, port: exitPort, reason: "exit")
        assertOpenAndCloseLogged(log, port: eofPort, reason: "eof")
        assertOpenAndCloseLogged(log, port: resetPort, reason: "reset")
        XCTAssertFalse(server.stderr.text.contains(secret), "message contents must not be logged at info")
        server.send(signal: SIGTERM)
        assertExitsCleanly(server, within: 5)
    }
}
