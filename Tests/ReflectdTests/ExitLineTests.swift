// Echo and the exit line through the built binary: split across writes, one byte at a time, and
// `exit` without a newline before EOF. (The hold timer: ExitHoldTests; the rules as unit tests:
// ExitLineDetectorTests.)
//
// Through the built `reflectd` on loopback: every socket operation and wait has a deadline, and
// tearDown (ServerTestCase) kills whatever a test left running.

import TestSupport
import Foundation
import Glibc
import Synchronization
import XCTest

final class ExitLineTests: ServerTestCase {

    func testEchoAndExitLineSplitAcrossWrites() throws {
        let (server, port) = try startServer()
        let client = try TestSocket.connect(port: port)
        try roundTrip(client, "hello\n")
        try roundTrip(client, "exit now\n")
        try roundTrip(client, "exits\n")
        try roundTrip(client, "xexit\n")
        let binary: [UInt8] = [0, 0xFF, 13, 65, 0, 10]
        try client.send(binary)
        XCTAssertEqual(try client.receive(exactly: binary.count), binary)

        try client.send("ex")
        usleep(50_000)
        try client.send("it\nthis is discarded\n")
        let (rest, end) = client.receiveUntilEnd(timeout: 5)
        XCTAssertEqual(String(decoding: rest, as: UTF8.self), "", "the exit line and what follows must not be echoed")
        XCTAssertEqual(end, .eof, "the server should close the connection cleanly after the exit line")
        client.close()
        server.send(signal: SIGTERM)
        assertExitsCleanly(server, within: 5)
    }

    func testExitLineOneByteAtATime() throws {
        let (_, port) = try startServer()
        let client = try TestSocket.connect(port: port)
        for byte in Array("a\nexit\r\nb".utf8) {
            try client.send([byte])
            usleep(10_000)
        }
        let (received, end) = client.receiveUntilEnd(timeout: 5)
        XCTAssertEqual(String(decoding: received, as: UTF8.self), "a\n")
        XCTAssertEqual(end, .eof)
    }

    func testExitWithoutNewlineThenEOFIsEchoed() throws {
        let (_, port) = try startServer()
        let client = try TestSocket.connect(port: port)
        try client.send("line\nexit")
        client.shutdownWrite()
        let (received, end) = client.receiveUntilEnd(timeout: 5)
        XCTAssertEqual(String(decoding: received, as: UTF8.self), "line\nexit")
        XCTAssertEqual(end, .eof)
    }
}
