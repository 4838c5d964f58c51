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

    /// Starts reflectd on 127.0.0.1 and an ephemeral port; returns it and the port it announced.
    private func startServer(port: Int = 0) throws -> (TestProcess, Int) {
        let server = try launch(["--host", "127.0.0.1", "--port", String(port)])
        let (_, bound) = try server.waitForListeningLine()
        return (server, bound)
    }

    private func roundTrip(_ client: TestSocket, _ message: String, file: StaticString = #filePath, line: UInt = #line) throws {
        try client.send(message)
        XCTAssertEqual(try client.receiveString(exactly: message.utf8.count), message, file: file, line: line)
    }

    /// Lines of `log` that mention `127.0.0.1:port` (and not a longer port starting with it).
    private func lines(_ log: [String], mentioning port: Int) -> [String] {
        let needle = "127.0.0.1:\(port)"
        return log.filter { line in
            var search = line[...]
            while let range = search.range(of: needle) {
                if range.upperBound == search.endIndex || !search[range.upperBound].isNumber { return true }
                search = search[range.upperBound...]
            }
            return false
        }
    }

    /// One open line and one close line naming `reason`, and nothing else, for this peer port.
    private func assertOpenAndCloseLogged(_ log: [String], port: Int, reason: String,
                                          file: StaticString = #filePath, line: UInt = #line) {
        let mine = lines(log, mentioning: port)
        XCTAssertEqual(mine.count, 2, "expected one open and one close line for 127.0.0.1:\(port), got \(mine)", file: file, line: line)
        XCTAssertEqual(mine.filter { $0.contains("open") }.count, 1, "\(mine)", file: file, line: line)
        let closes = mine.filter { $0.contains("close") }
        XCTAssertEqual(closes.count, 1, "\(mine)", file: file, line: line)
        XCTAssertTrue(closes.first?.contains(reason) ?? false, "close line should name reason \(reason): \(closes)", file: file, line: line)
    }

    /// Starts reflectd with `arguments` and remembers it for tearDown.
    private func launch(_ arguments: [String]) throws -> TestProcess {
        let server = try TestProcess.reflectd(arguments)
        track(server)
        return server
    }

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
