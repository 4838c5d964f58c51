// How many connections a listener accepts per wakeup (Reactor.acceptReady): one while they
// arrive one at a time, so no accept4 is made only to hear EAGAIN, and batches that double, up to
// Budget.acceptsPerWakeup, while a backlog keeps the listener ready turn after turn.
//
// A real Reactor (Faults/FaultServer.swift) on 127.0.0.1 with loopback clients; the
// FaultInterposer only counts the accept4 and epoll_wait calls, it injects nothing.

import TestSupport
import Foundation
import Glibc
import XCTest
@testable import Reactor

final class AcceptBatchTests: XCTestCase {

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
        let conversations = clients.enumerated().map { i, client in
            FaultConversation(client, payload: faultPayload(32, seed: UInt64(600 + i)))
        }
        XCTAssertTrue(FaultPump.run(conversations), "pump timed out")
        for (i, c) in conversations.enumerated() { XCTAssertEqual(c.received, c.payload, "connection \(i)") }
        let stats = try XCTUnwrap(server.stop())
        XCTAssertEqual(stats.accepted, count)
        XCTAssertEqual(stats.closed, ["eof": count])
        let accepts = faults.accepts
        let turns = Set(accepts.map(\.epollWaitsBefore)).count
        // 1, 1, 2, 4, 8, 16, 32, 64, 64, 8: about ten turns. One connection per turn would take 200;
        // draining to EAGAIN takes four.
        XCTAssertLessThanOrEqual(turns, 16, "batches did not grow: \(turns) turns for \(count) connections")
        XCTAssertLessThanOrEqual(accepts.count, count + turns, "at most one accept4 per turn hears EAGAIN")
        XCTAssertEqual(server.recorder.anomalies, [])
    }
}
