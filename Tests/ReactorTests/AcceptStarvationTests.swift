// A busy loop must not starve its listener's backlog. With more ready fds than one epoll_wait
// returns (Budget.maxEvents), level-triggered epoll hands them out in rotation: the kernel puts
// each fd it reported back at the end of its ready list and the ones it left out at the front, so
// a listener with a backlog is reported every other turn or so, never several turns in a row.
// Its accept batch must still grow there: if it only grows after turns that are adjacent, it stays
// at one connection per report, and a connect storm into a server with some 8,000 busy
// connections is accepted one per two full turns (64 times slower than draining 64 per wakeup).
//
// A real Reactor (Faults/FaultServer.swift) on 127.0.0.1 with loopback clients. The interposer's
// event rewriter stands in for the other 4,096 busy connections: every other epoll_wait comes back
// full of events for fds it did not report (stale ids, which the loop skips and counts), exactly
// what a wait that the rotation filled with other fds looks like to the listener.

import TestSupport
import Foundation
import Glibc
import XCTest
@testable import Reactor

final class AcceptStarvationTests: XCTestCase {

    func testABacklogStillGrowsItsBatchWhenFullWaitsCrowdTheListenerOutEveryOtherTurn() throws {
        let faults = FaultInterposer()
        let server = try FaultServer(interposer: faults)
        let count = 200
        // Every other wait is full of other fds' events: an id whose generation no slot has.
        let turns = TurnCounter()
        let other = FaultEvent(mask: 1 /* EPOLLIN */, data: UInt64(UInt32.max) << 32)
        let clients = try XCTUnwrap(server.connectWhileHeld(count) {
            faults.rewriteBatches { events, capacity in
                if turns.next() % 2 == 1 { events = Array(repeating: other, count: capacity) }
            }
        })
        let conversations = clients.enumerated().map { i, client in
            FaultConversation(client, payload: faultPayload(32, seed: UInt64(900 + i)))
        }
        XCTAssertTrue(FaultPump.run(conversations), "pump timed out")
        for (i, c) in conversations.enumerated() { XCTAssertEqual(c.received, c.payload, "connection \(i)") }
        faults.rewriteBatches(nil)
        let stats = try XCTUnwrap(server.stop())
        XCTAssertEqual(stats.accepted, count)
        XCTAssertEqual(stats.closed, ["eof": count])
        let acceptTurns = Set(faults.accepts.map(\.epollWaitsBefore)).count
        // Reported every other turn, doubling after three full batches: 1, 1, 1, 2, 4, 8, 16, 32,
        // 64, 64, ... about ten reports. One connection per report would take 200.
        XCTAssertLessThanOrEqual(acceptTurns, 16,
                                 "the batch never grew: \(acceptTurns) turns accepted \(count) queued connections")
    }
}

/// epoll_wait batches seen by the rewriter (the reactor thread), counted from 0.
private final class TurnCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func next() -> Int {
        lock.lock()
        defer { lock.unlock() }
        defer { n += 1 }
        return n
    }
}
