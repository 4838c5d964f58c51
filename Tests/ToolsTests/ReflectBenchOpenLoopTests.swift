// reflect-bench's open loop (`--rate`, `--connect-rate`): messages go out on a schedule and are
// timed from when they were due, so a server stall shows in every message it delayed. The
// rates are checked loosely (a busy machine delays timers), the stall against a closed loop.

import Foundation
import Glibc
import XCTest

final class ReflectBenchOpenLoopTests: XCTestCase {
    override func setUp() {
        signal(SIGPIPE, SIG_IGN)
    }

    /// The coordinated-omission scenario: one connection, a server that stops for a second once.
    /// A closed loop waits through the stall with one message and records one slow sample among
    /// thousands of fast ones; an open loop at 1,000 msg/s had about 1,000 messages due in that
    /// second, and each is timed from when it was due.
    func testServerStallShowsInEveryDelayedMessageOpenLoopButOnceClosedLoop() throws {
        let stall = (after: 1.0, seconds: 1.0)
        let closedServer = try TinyServer.plainEcho(stall: stall)
        defer { closedServer.stop() }
        let closed = try runBench(["pingpong", "--connections", "1", "--duration", "3", "--hold-ms", "100"],
                                  port: closedServer.port)
        let openServer = try TinyServer.plainEcho(stall: stall)
        defer { openServer.stop() }
        let open = try runBench(["pingpong", "--connections", "1", "--duration", "3", "--hold-ms", "100",
                                 "--rate", "1000"], port: openServer.port)
        for (name, run) in [("closed", closed), ("open", open)] {
            XCTAssertEqual(run.result.status, 0, "\(name): \(run.result.description)")
            XCTAssertTrue(run.ok, "\(name): \(run.json)")
            // Both saw the stall: at least one message waited about a second.
            XCTAssertGreaterThanOrEqual(run.number("latency_us", "max"), 900_000, "\(name): \(run.json)")
        }
        let line = { (run: BenchRun) in
            ["p50", "p90", "p99", "p99_9", "max"].map { "\($0) \(Int(run.number("latency_us", $0))) us" }.joined(separator: ", ")
                + ", over 100 ms: \(Int(run.number("over_hold"))) of \(Int(run.number("messages")))"
        }
        print("coordinated omission, 1 s stall in 3 s: closed loop: \(line(closed))")
        print("coordinated omission, 1 s stall in 3 s: open loop at 1000/s: \(line(open))")

        // Closed loop: the stall is one slow message; its p99 is a healthy server's.
        // (A busy machine may add a slow sample or two; the stall itself is one.)
        XCTAssertLessThanOrEqual(closed.number("over_hold"), 10, "\(closed.json)")
        XCTAssertLessThan(closed.number("latency_us", "p99"), 100_000, "\(closed.json)")
        // Open loop: hundreds of messages were due during the stall and waited for it (those due
        // at its end least), so p90 and p99 show it.
        XCTAssertGreaterThanOrEqual(open.number("over_hold"), 500, "\(open.json)")
        XCTAssertGreaterThanOrEqual(open.number("latency_us", "p90"), 300_000, "\(open.json)")
        XCTAssertGreaterThanOrEqual(open.number("latency_us", "p99"), 800_000, "\(open.json)")
        // The messages due while the one connection waited could not go out on time.
        XCTAssertGreaterThanOrEqual(open.number("late"), 500, "\(open.json)")
        // Hundreds late because the server did not answer, whatever the generator's own lag on a
        // busy machine.
        XCTAssertGreaterThanOrEqual(open.number("late") - open.number("late_generator"), 500, "\(open.json)")
        // And the schedule held over the run: about 3,000 messages, stall or not.
        XCTAssertEqual(open.number("messages"), 3000, accuracy: 300, "\(open.json)")
    }

    func testOpenLoopSendsAtTheRateAgainstAHealthyServer() throws {
        let server = try Reflectd()
        defer { server.stop() }
        let run = try runBench(["pingpong", "--connections", "4", "--rate", "500", "--duration", "2"], port: server.port)
        XCTAssertEqual(run.result.status, 0, run.result.description)
        XCTAssertTrue(run.ok, "\(run.json)")
        XCTAssertEqual(run.json["open_loop"] as? Bool, true)
        XCTAssertEqual(run.number("rate"), 500)
        // 500/s for 2 s: the messages due, give or take what the end of the window cuts.
        XCTAssertEqual(run.number("messages"), 1000, accuracy: 100, "\(run.json)")
        XCTAssertEqual(run.number("msgs_per_s"), 500, accuracy: 50, "\(run.json)")
        XCTAssertEqual(run.number("latency_us", "samples"), run.number("messages"))
        // A healthy server keeps up: nothing is left unsent.
        XCTAssertLessThanOrEqual(run.number("unsent"), 4, "\(run.json)")
    }

    func testClosedLoopIsFasterThanALowRateSoTheRateIsWhatLimits() throws {
        // The same server and connections, closed loop: far more than the open loop's 500/s. So the
        // open loop's count above is its schedule, not the server's speed.
        let server = try Reflectd()
        defer { server.stop() }
        let run = try runBench(["pingpong", "--connections", "4"], port: server.port)
        XCTAssertEqual(run.result.status, 0, run.result.description)
        XCTAssertEqual(run.json["open_loop"] as? Bool, false)
        XCTAssertGreaterThan(run.number("msgs_per_s"), 2000, "\(run.json)")
        XCTAssertEqual(run.number("late"), 0)
    }

    func testDepthBoundsMessagesInFlightAndTheRestAreLate() throws {
        // Every read is echoed 50 ms late: one connection at depth 2 can carry at most 40 msg/s,
        // so at 200/s most messages wait for room in the pipeline and are late, and the schedule
        // runs far ahead of what went out.
        let slow = try TinyServer.plainEcho(delay: 0.05)
        defer { slow.stop() }
        let run = try runBench(["pingpong", "--connections", "1", "--depth", "2", "--rate", "200", "--duration", "2"],
                               port: slow.port)
        XCTAssertEqual(run.result.status, 0, run.result.description)
        XCTAssertLessThanOrEqual(run.number("messages"), 2 * 2 / 0.05 + 4, "\(run.json)")
        XCTAssertGreaterThan(run.number("late") - run.number("late_generator"), run.number("messages") / 2, "\(run.json)")
        XCTAssertGreaterThan(run.number("unsent"), 200, "\(run.json)")
        // Timed from when they were due, the late ones wait longer and longer.
        XCTAssertGreaterThan(run.number("latency_us", "max"), 500_000, "\(run.json)")
    }

    func testConnectRateBeginsChurnCyclesOnSchedule() throws {
        let server = try Reflectd()
        defer { server.stop() }
        let run = try runBench(["churn", "--connections", "4", "--connect-rate", "200", "--duration", "2"], port: server.port)
        XCTAssertEqual(run.result.status, 0, run.result.description)
        XCTAssertTrue(run.ok, "\(run.json)")
        XCTAssertEqual(run.json["open_loop"] as? Bool, true)
        XCTAssertEqual(run.number("connect_rate"), 200)
        XCTAssertEqual(run.number("connects"), 400, accuracy: 60, "\(run.json)")
        XCTAssertEqual(run.number("messages"), 400, accuracy: 60, "\(run.json)")
        XCTAssertLessThanOrEqual(run.number("max_open"), 4)
    }

    func testConnectRateAgainstAStalledAcceptCountsLateCycles() throws {
        // A server that stalls the first echo of every connection for 0.6 s: the 2 slots are stuck,
        // so the cycles due meanwhile cannot begin on time.
        let stalling = try TinyServer.plainEcho(stall: (after: 0, seconds: 0.6))
        defer { stalling.stop() }
        let run = try runBench(["churn", "--connections", "2", "--connect-rate", "100", "--duration", "2"], port: stalling.port)
        XCTAssertEqual(run.result.status, 0, run.result.description)
        // About 200 cycles were due; the few that began, began late, and the rest never did.
        XCTAssertGreaterThan(run.number("late"), 0, "\(run.json)")
        XCTAssertGreaterThan(run.number("late") + run.number("unsent"), 150, "\(run.json)")
        XCTAssertLessThan(run.number("connects"), 20, "\(run.json)")
        // Timed from when they were due, not from when a slot came free.
        XCTAssertGreaterThanOrEqual(run.number("latency_us", "p50"), 600_000, "\(run.json)")
    }

    func testRateOptionsAreCheckedAgainstTheScenario() throws {
        let cases: [([String], String)] = [
            (["bulk", "--rate", "100"], "--rate applies to pingpong only"),
            (["pingpong", "--rate", "0"], "--rate must be more than 0"),
            (["pingpong", "--connect-rate", "10"], "--connect-rate applies to churn only"),
            (["churn", "--connect-rate", "-1"], "--connect-rate must be more than 0"),
        ]
        for (arguments, message) in cases {
            let result = try runTool("reflect-bench", arguments)
            XCTAssertNotEqual(result.status, 0, "\(arguments): \(result.description)")
            XCTAssertTrue(result.stderr.contains(message), "\(arguments): \(result.description)")
        }
    }
}
