// ReactorStatistics.closed is kept in fixed counters for the reactor's own reasons and a
// dictionary for the rest (Sources/Reactor/CloseCounts.swift); what users read must be the
// dictionary by name it always was.

import XCTest
@testable import Reactor

final class CloseCountsTests: XCTestCase {
    private func counted(_ reasons: [CloseReason]) -> ReactorStatistics {
        var statistics = ReactorStatistics()
        for reason in reasons { statistics.closes.count(reason) }
        return statistics
    }

    func testTheReactorsOwnReasonsCountByName() {
        let statistics = counted([.eof, .eof, .reset, .shutdown, .timeout, .sendTimeout, .closeTimeout, .limit,
                                  .error(.badFileDescriptor)])
        XCTAssertEqual(statistics.closed, ["eof": 2, "reset": 1, "shutdown": 1, "timeout": 3, "limit": 1, "error": 1])
    }

    func testReasonsWithAnErrnoCountUnderTheirName() {
        let statistics = counted([.failure(.connectionReset), .failure(.brokenPipe), .failure(.timedOut)])
        XCTAssertEqual(statistics.closed, ["reset": 2, "error": 1])
    }

    func testAHandlersReasonsCountByName() {
        let statistics = counted([CloseReason("exit"), CloseReason("exit"), CloseReason("proxy")])
        XCTAssertEqual(statistics.closed, ["exit": 2, "proxy": 1])
    }

    /// A handler's reason named like one of the reactor's counts with it, and the statistics
    /// compare equal whichever way the count came.
    func testAHandlersReasonWithAReactorNameCountsWithIt() {
        let byHandler = counted([CloseReason("eof"), CloseReason("timeout")])
        let byReactor = counted([.eof, .sendTimeout])
        XCTAssertEqual(byHandler.closed, ["eof": 1, "timeout": 1])
        XCTAssertEqual(byHandler, byReactor)
        XCTAssertNotEqual(byHandler, counted([.eof]))
    }

    func testNothingClosedIsEmpty() {
        XCTAssertEqual(ReactorStatistics().closed, [:])
    }

    func testSettingAndReadingBack() {
        var statistics = ReactorStatistics()
        statistics.closed = ["eof": 3, "exit": 2, "limit": 1]
        XCTAssertEqual(statistics.closed, ["eof": 3, "exit": 2, "limit": 1])
        statistics.closed["eof", default: 0] -= 1
        statistics.closed["exit", default: 0] += 1
        XCTAssertEqual(statistics.closed, ["eof": 2, "exit": 3, "limit": 1])
        XCTAssertEqual(statistics, counted([.eof, .eof, CloseReason("exit"), CloseReason("exit"), CloseReason("exit"), .limit]))
    }

    func testTheSumAddsNameByName() {
        let a = counted([.eof, .reset, CloseReason("exit")])
        let b = counted([.eof, .timeout, CloseReason("exit"), CloseReason("check")])
        XCTAssertEqual((a + b).closed, ["eof": 2, "reset": 1, "timeout": 1, "exit": 2, "check": 1])
    }

    /// A slot keeps a preset's code, not the reason: the code must give back the same reason.
    func testEachPresetComesBackFromItsCode() {
        for reason in [CloseReason.eof, .reset, .shutdown, .timeout, .sendTimeout, .closeTimeout, .limit] {
            XCTAssertNotEqual(reason.code, .other, "\(reason)")
            let back = CloseReason.preset(reason.code)
            XCTAssertEqual(back.name, reason.name)
            XCTAssertEqual(back.detail, reason.detail)
            XCTAssertNil(back.errno)
            XCTAssertEqual(back.code, reason.code)
        }
        for reason in [CloseReason("exit"), CloseReason("eof"), .error(.badFileDescriptor), .failure(.connectionReset),
                       .handedOver(name: "eof", errno: nil, detail: nil)] {
            XCTAssertFalse(reason.isPreset, "\(reason) is kept whole, not as a code")
        }
    }

    /// The reactor's own reasons have their words from their code: the same words as before.
    func testTheReactorsReasonsReadAsTheyDid() {
        let words: [(CloseReason, String, String?, String)] = [
            (.eof, "eof", nil, "eof"), (.reset, "reset", nil, "reset"), (.shutdown, "shutdown", nil, "shutdown"),
            (.timeout, "timeout", nil, "timeout"), (.sendTimeout, "timeout", "send-timeout", "send-timeout"),
            (.closeTimeout, "timeout", "close-timeout", "close-timeout"), (.limit, "limit", nil, "limit"),
            (.error(.badFileDescriptor), "error", nil, "error (EBADF)"), (.failure(.connectionReset), "reset", nil, "reset"),
            (.failure(.brokenPipe), "reset", nil, "reset"), (.failure(.timedOut), "error", nil, "error (ETIMEDOUT)"),
            (CloseReason("exit"), "exit", nil, "exit"), (.handedOver(name: "timeout", errno: nil, detail: "close-timeout"), "timeout", "close-timeout", "close-timeout"),
        ]
        for (reason, name, detail, description) in words {
            XCTAssertEqual(reason.name, name)
            XCTAssertEqual(reason.detail, detail, "\(name)")
            XCTAssertEqual(reason.description, description)
        }
        XCTAssertEqual(CloseReason.failure(.connectionReset).errno, .connectionReset)
        XCTAssertEqual(CloseReason.failure(.connectionReset), .reset, "equal by name")
        XCTAssertEqual(CloseReason("eof"), .eof, "equal by name")
        XCTAssertEqual(CloseReason("eof").hashValue, CloseReason.eof.hashValue)
        XCTAssertNotEqual(CloseReason.sendTimeout, .limit)
    }

    /// The code sits in what was padding: a slot is no larger.
    func testTheReasonCodeDoesNotGrowASlot() {
        XCTAssertEqual(MemoryLayout<CloseReasonCode>.size, 1)
        XCTAssertEqual(MemoryLayout<Slot<Void>>.offset(of: \Slot<Void>.closing), 14)
        XCTAssertEqual(MemoryLayout<Slot<Void>>.offset(of: \Slot<Void>.registered), 16)
    }
}
