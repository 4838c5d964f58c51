// Starting reflectd: the startup line names the real port, a port in use or out of range and an
// unknown option fail at once with a message, and a restart on the same port works while
// TIME_WAIT sockets remain.
//
// Through the built `reflectd` on loopback: every socket operation and wait has a deadline, and
// tearDown (ServerTestCase) kills whatever a test left running.

import TestSupport
import Foundation
import Glibc
import Synchronization
import XCTest

final class StartupTests: ServerTestCase {

    func testStartupLineNamesTheRealPort() throws {
        let server = try start(["--port", "0"])
        let (line, port) = try server.waitForListeningLine()
        XCTAssertTrue(line.contains("listening on 0.0.0.0:\(port)"), "startup line: \(line.debugDescription)")
        XCTAssertTrue((1...65535).contains(port), "port \(port) is not a real port")
        // It really listens there.
        let client = try TestSocket.connect(port: port)
        try roundTrip(client, "ping\n")
        client.close()
        server.send(signal: SIGTERM)
        assertExitsCleanly(server, within: 5)
    }

    func testPortInUseExitsAtOnceWithAMessage() throws {
        let occupier = try TestListener()
        let server = try start(["--host", "127.0.0.1", "--port", String(occupier.port)])
        let stderr = assertFailsAtOnce(server)
        XCTAssertTrue(stderr.lowercased().contains("address already in use"), "stderr: \(stderr)")
    }

    func testPortInUseOnTheDefaultHostExitsAtOnce() throws {
        // Another process listening on 127.0.0.1:P also makes 0.0.0.0:P unusable.
        let occupier = try TestListener()
        let server = try start(["--port", String(occupier.port)])
        let stderr = assertFailsAtOnce(server)
        XCTAssertTrue(stderr.lowercased().contains("address already in use"), "stderr: \(stderr)")
    }

    func testPortOutOfRangeIsRejected() throws {
        let stderr = assertFailsAtOnce(try start(["--port", "70000"]))
        XCTAssertTrue(stderr.contains("70000"), "the message should name the bad value; stderr: \(stderr)")
        XCTAssertTrue(stderr.contains("port"), "the message should name the option; stderr: \(stderr)")
    }

    func testNonNumericPortIsRejected() throws {
        let stderr = assertFailsAtOnce(try start(["--port", "abc"]))
        XCTAssertTrue(stderr.contains("abc"), "the message should name the bad value; stderr: \(stderr)")
        XCTAssertTrue(stderr.contains("port"), "the message should name the option; stderr: \(stderr)")
    }

    func testUnknownOptionIsRejected() throws {
        let stderr = assertFailsAtOnce(try start(["--bogus"]))
        XCTAssertTrue(stderr.contains("bogus"), "the message should name the unknown option; stderr: \(stderr)")
    }

    func testRestartOnTheSamePortWhileTimeWaitSocketsExist() throws {
        let (first, port) = try startServer()
        // Connections the server closes first leave server-side sockets in TIME_WAIT: two via the
        // exit line, one via the stop.
        for i in 0..<2 {
            let client = try TestSocket.connect(port: port)
            try roundTrip(client, "hello \(i)\n")
            try client.send("exit\n")
            XCTAssertEqual(client.receiveUntilEnd(timeout: 5).end, .eof)
            client.close()
        }
        let lingering = try TestSocket.connect(port: port)
        try roundTrip(lingering, "still here\n")
        first.send(signal: SIGTERM)
        XCTAssertEqual(lingering.receiveUntilEnd(timeout: 5).end, .eof)
        lingering.close()
        assertExitsCleanly(first, within: 5)
        XCTAssertTrue(eventually(timeout: 3) { timeWaitSockets(localPort: port) > 0 },
                      "no TIME_WAIT socket on port \(port); the test would prove nothing")

        let second = try start(["--host", "127.0.0.1", "--port", String(port)])
        let (_, rebound) = try second.waitForListeningLine(timeout: 10)
        XCTAssertEqual(rebound, port)
        XCTAssertGreaterThan(timeWaitSockets(localPort: port), 0)
        let client = try TestSocket.connect(port: port)
        try roundTrip(client, "after restart\n")
        client.close()
        second.send(signal: SIGTERM)
        assertExitsCleanly(second, within: 5)
    }
}
