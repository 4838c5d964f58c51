// How many connections a listener accepts per wakeup (Reactor.acceptReady): one while they
// arrive one at a time, so no accept4 is made only to hear EAGAIN, and batches that double, up to
// Budget.acceptsPerWakeup, while a backlog keeps the listener ready turn after turn, even when
// full waits crowd the listener out of every other turn.
//
// A real Reactor (Faults/FaultServer.swift) on 127.0.0.1 with loopback clients; the
// FaultInterposer counts the accept4 and epoll_wait calls, and in one test rewrites batches.

import TestSupport
import Foundation
import Glibc
import XCTest
@testable import Reactor

final class AcceptBatchTests: XCTestCase {

    /// Echoes a binary message on every client (seeded by `seed`), stops the server and checks
    /// that each connection was accepted once and closed by the client's EOF.
    private func echoEach(_ clients: [TestSocket], seed: UInt64, on server: FaultServer,
                          file: StaticString = #filePath, line: UInt = #line) throws {
        let conversations = clients.enumerated().map { i, client in
            FaultConversation(client, payload: faultPayload(32, seed: seed + UInt64(i)))
        }
        XCTAssertTrue(FaultPump.run(conversations), "pump timed out", file: file, line: line)
        for (i, c) in conversations.enumerated() {
            XCTAssertEqual(c.received, c.payload, "connection \(i)", file: file, line: line)
        }
        let stats = try XCTUnwrap(server.stop(), file: file, line: line)
        XCTAssertEqual(stats.accepted, clients.count, file: file, line: line)
        XCTAssertEqual(stats.closed, ["eof": clients.count], file: file, line: line)
        XCTAssertEqual(server.recorder.anomalies, [], file: file, line: line)
    }

    func testConnectionsArrivingOneAtATimeCostOneAcceptEach() throws {
        let faults = FaultInterposer()
        let server = try FaultServer(interposer: faults)
        let count = 20
        for i in 0..<count {
            let conversation = FaultConversation(try TestSocket.connect(port: server.port),
                                                 payload: faultPayload(64, seed: UInt64(300 + i)))
            XCTAssertTrue(FaultPump.run([conversation]), "pump timed out at connection \(i)")
            XCTAssertEqual(conversation.received, conversation.payload, "connection \(i)")
        }
        let stats = try XCTUnwrap(server.stop())
        XCTAssertEqual(stats.accepted, count)
        XCTAssertEqual(stats.closed, ["eof": count])
        // Draining the backlog until EAGAIN would make it 2 per connection.
        XCTAssertEqual(faults.calls(.accept4), count, "one accept4 per connection, none only to hear EAGAIN")
        XCTAssertEqual(server.recorder.anomalies, [])
    }

    func testABacklogIsAcceptedInDoublingBatches() throws {
        let faults = FaultInterposer()
        let server = try FaultServer(interposer: faults)
        let count = 200
        var acceptsWhileHeld = -1
        let clients = try XCTUnwrap(server.connectWhileHeld(count) { acceptsWhileHeld = faults.calls(.accept4) })
        XCTAssertEqual(acceptsWhileHeld, 0, "the loop was held")
        try echoEach(clients, seed: 600, on: server)
        let accepts = faults.accepts
        let turns = Set(accepts.map(\.epollWaitsBefore)).count
        // 1, 1, 1, 2, 4, 8, 16, 32, 64, 64, 7: about eleven turns. One connection per turn would
        // take 200; draining to EAGAIN takes four.
        XCTAssertLessThanOrEqual(turns, 16, "batches did not grow: \(turns) turns for \(count) connections")
        XCTAssertLessThanOrEqual(accepts.count, count + turns, "at most one accept4 per turn hears EAGAIN")
    }

    /// With more ready fds than one epoll_wait returns (Budget.maxEvents), level-triggered epoll
    /// hands them out in rotation, so a listener with a backlog is reported every other turn or
    /// so, never several turns in a row. If the batch only grew after adjacent turns, it would stay
    /// at one connection per report: a connect storm into a server with some 8,000 busy
    /// connections accepted one per two full turns. Here the interposer's rewriter stands in for
    /// those connections: every other wait comes back full of events for an id no slot has (the
    /// loop skips and counts them), which is what a wait the rotation filled looks like to the
    /// listener.
    func testABacklogStillGrowsItsBatchWhenFullWaitsCrowdTheListenerOutEveryOtherTurn() throws {
        let faults = FaultInterposer()
        let server = try FaultServer(interposer: faults)
        let count = 200
        let waits = Locked(0)
        let other = FaultEvent(mask: 1 /* EPOLLIN */, data: UInt64(UInt32.max) << 32)
        let clients = try XCTUnwrap(server.connectWhileHeld(count) {
            faults.rewriteBatches { events, capacity in
                let n = waits.withLock { n in defer { n += 1 }; return n }
                if n % 2 == 1 { events = Array(repeating: other, count: capacity) }
            }
        })
        try echoEach(clients, seed: 900, on: server)
        let acceptTurns = Set(faults.accepts.map(\.epollWaitsBefore)).count
        // Reported every other turn, doubling after three full batches: about eleven reports.
        XCTAssertLessThanOrEqual(acceptTurns, 16,
                                 "the batch never grew: \(acceptTurns) turns accepted \(count) queued connections")
    }
}
