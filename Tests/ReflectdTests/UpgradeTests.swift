// The zero-drop upgrade through the built binary: SIGUSR2 starts the new binary, which takes
// over the listeners and the connections.
//
// Through the built `reflectd` on loopback: every socket operation and wait has a deadline, and
// tearDown (ServerTestCase) kills whatever a test left running.

import TestSupport
import Foundation
import Glibc
import XCTest

final class UpgradeTests: ServerTestCase {

    /// SIGUSR2 is no longer ignored: it upgrades (issue 16; scripts/upgrade-check.py has the
    /// scenarios). Here only what hardening promised of it: the process does not die of it, and
    /// an open connection keeps echoing, now served by the new process.
    func testSIGUSR2UpgradesAndTheConnectionKeepsEchoing() throws {
        let server = try start(["--host", "127.0.0.1", "--port", "0", "--log-level", "notice"])
        let client = try TestSocket.connect(host: "127.0.0.1", port: try server.waitForTCPPort())
        try client.expectEcho("before\n")
        server.send(signal: SIGUSR2)
        // The new process logs to the same stderr: "upgrade: took 1 connections from pid OLD (this is pid NEW)".
        waitForLog(server, "upgrade: took 1 connections from pid \(server.pid)", timeout: 15)
        var successor: pid_t = 0
        if let line = server.stderr.lines.first(where: { $0.contains("upgrade: took") }),
           let range = line.range(of: "(this is pid ") {
            successor = pid_t(line[range.upperBound...].prefix { $0.isNumber }) ?? 0
        }
        defer { if successor > 0 { Glibc.kill(successor, SIGKILL) } }
        XCTAssertGreaterThan(successor, 0, "no pid of the new process; stderr:\n\(server.stderr.text.suffix(2000))")
        XCTAssertEqual(server.waitForExit(timeout: 10), .exited(0), "the old process did not exit 0 after the hand-over")
        try client.expectEcho("after SIGUSR2\n")
        if successor > 0 { Glibc.kill(successor, SIGTERM) }
    }
}
