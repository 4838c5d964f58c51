// ReactorHandle.execute: work from other threads runs on the reactor thread in submission
// order, can write to a connection, and is refused when the queue is full or run() returned.
//
// An in-process reactor (TestSupport's ReactorRunner) running Support/RecordingHandler.swift on
// 127.0.0.1, with real loopback clients.

import TestSupport
import CEpoll
import Foundation
import Glibc
import SystemPackage
import XCTest
@testable import Reactor

final class ExecuteTests: XCTestCase {

    func testExecuteRunsClosuresOnTheReactorThreadInSubmissionOrder() throws {
        let (reactor, _, _) = try recording()
        let seen = Locked<[(Int, pthread_t)]>([])
        for i in 0..<1_000 {
            XCTAssertTrue(reactor.handle.execute { (_: ReactorContext<RecordingHandler>) in
                seen.withLock { $0.append((i, pthread_self())) }
            })
        }
        XCTAssertTrue(eventually(timeout: 10) { seen.withLock { $0.count } == 1_000 })
        let runs = seen.withLock { $0 }
        XCTAssertEqual(runs.map(\.0), Array(0..<1_000), "FIFO for one submitting thread")
        XCTAssertTrue(runs.allSatisfy { pthread_equal($0.1, runs[0].1) != 0 }, "all on one thread")
        XCTAssertEqual(pthread_equal(runs[0].1, pthread_self()), 0, "not on the submitting thread")
        XCTAssertNotNil(reactor.stop())
    }

    func testExecuteWritesToAConnectionFromAnotherThread() throws {
        let (reactor, opened, _) = try recording()
        let client = try TestSocket.connect(port: reactor.port)
        XCTAssertTrue(eventually { opened.withLock { $0.count } == 1 })
        let id = opened.withLock { $0[0] }
        let payload: [UInt8] = [0, 1, 2, 0xFF, 0xFE, 10, 13]
        XCTAssertTrue(reactor.handle.execute { (loop: ReactorContext<RecordingHandler>) in
            payload.withUnsafeBytes { _ = loop.write(to: id, $0) }
            loop.close(id, reason: CloseReason("done"))
        })
        XCTAssertEqual(try client.receive(exactly: payload.count), payload)
        XCTAssertEqual(client.receiveUntilEnd(timeout: 5).end, .eof, "the close from execute was settled")
        XCTAssertNotNil(reactor.stop())
    }

    func testExecuteRefusesWhenTheQueueIsFullAndAfterRunReturns() throws {
        let (reactor, _, _) = try recording()
        let blocking = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        let ran = Locked(0)
        // Hold the loop inside one closure, so nothing drains the queue meanwhile.
        XCTAssertTrue(reactor.handle.execute { (_: ReactorContext<RecordingHandler>) in
            blocking.signal()
            release.wait()
        })
        XCTAssertEqual(blocking.wait(timeout: .now() + 10), .success)
        let capacity = reactor.handle.executeCapacity
        var accepted = 0
        for _ in 0..<(capacity + 10) {
            if reactor.handle.execute({ (_: ReactorContext<RecordingHandler>) in ran.withLock { $0 += 1 } }) { accepted += 1 }
        }
        XCTAssertEqual(accepted, capacity, "a full queue refuses instead of growing")
        release.signal()
        XCTAssertTrue(eventually(timeout: 10) { ran.withLock { $0 } == capacity }, "every accepted closure ran once")
        XCTAssertNotNil(reactor.stop())
        XCTAssertFalse(reactor.handle.execute { (_: ReactorContext<RecordingHandler>) in }, "refused after run() returned")
    }
}
