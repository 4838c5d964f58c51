// reflect-bench over UDP (`--udp`, flood): every echoed datagram checked byte-exact by its
// sequence number, loss counted (not an error), duplicates and corruption are errors; against
// reflectd, socat, and a test server that drops, repeats or corrupts on purpose.

import Foundation
import Glibc
import XCTest

final class ReflectBenchUDPTests: XCTestCase {
    override func setUp() {
        signal(SIGPIPE, SIG_IGN)
    }

    /// The datagram counts of a run: sent in the measured window = echoed + lost, since the run
    /// waits for what is in flight at its end.
    func assertCountsAddUp(_ run: BenchRun, file: StaticString = #filePath, line: UInt = #line) {
        let sent = run.number("datagrams", "sent"), echoed = run.number("datagrams", "echoed")
        let lost = run.number("datagrams", "lost")
        XCTAssertEqual(sent, echoed + lost, "sent = echoed + lost: \(run.json)", file: file, line: line)
        XCTAssertEqual(run.number("messages"), echoed, "\(run.json)", file: file, line: line)
        XCTAssertEqual(run.number("latency_us", "samples"), echoed, "a latency per echo: \(run.json)", file: file, line: line)
        XCTAssertEqual(run.number("bytes"), echoed * run.number("size"), "\(run.json)", file: file, line: line)
    }

    func testPingpongOverUDPAgainstReflectdIsByteExactWithNoLoss() throws {
        let server = try Reflectd(arguments: ["--udp", "--udp-rate", "0"])
        defer { server.stop() }
        let run = try runBench(["pingpong", "--udp", "--connections", "4", "--depth", "4", "--size", "1200"], port: server.port)
        XCTAssertEqual(run.result.status, 0, run.result.description)
        XCTAssertTrue(run.ok, "\(run.json)")
        XCTAssertEqual(run.json["udp"] as? Bool, true)
        XCTAssertGreaterThan(run.number("datagrams", "echoed"), 500, "\(run.json)")
        XCTAssertEqual(run.number("datagrams", "lost"), 0, "loopback at modest load loses nothing: \(run.json)")
        XCTAssertEqual(run.number("errors", "total"), 0, "\(run.json)")
        XCTAssertEqual(run.number("connects_total"), 4, "one socket per connection: \(run.json)")
        assertCountsAddUp(run)
    }

    func testPingpongOverUDPTextPayloadAndLargestDatagram() throws {
        let server = try Reflectd(arguments: ["--udp", "--udp-rate", "0"])
        defer { server.stop() }
        for arguments in [["--payload", "text", "--size", "100"], ["--size", "65507"], ["--message", "hello\\x00\\n"]] {
            let run = try runBench(["pingpong", "--udp", "--connections", "2"] + arguments, port: server.port)
            XCTAssertEqual(run.result.status, 0, "\(arguments): \(run.result.description)")
            XCTAssertGreaterThan(run.number("datagrams", "echoed"), 10, "\(arguments): \(run.json)")
            XCTAssertEqual(run.number("datagrams", "lost"), 0, "\(arguments): \(run.json)")
            assertCountsAddUp(run)
        }
    }

    func testFloodAtAFixedRateAgainstReflectd() throws {
        let server = try Reflectd(arguments: ["--udp", "--udp-rate", "0"])
        defer { server.stop() }
        let run = try runBench(["flood", "--rate", "2000", "--duration", "2"], port: server.port)
        XCTAssertEqual(run.result.status, 0, run.result.description)
        XCTAssertTrue(run.ok, "\(run.json)")
        XCTAssertEqual(run.number("datagrams", "sent_per_s"), 2000, accuracy: 200, "\(run.json)")
        XCTAssertEqual(run.number("datagrams", "sent"), 4000, accuracy: 400, "\(run.json)")
        XCTAssertEqual(run.number("datagrams", "loss_percent"), 0, "\(run.json)")
        XCTAssertNotNil((run.json["datagrams"] as? [String: Any])?["loss_percent"], "loss is reported: \(run.json)")
        XCTAssertEqual(run.number("service_us", "samples"), run.number("datagrams", "echoed"), "\(run.json)")
        assertCountsAddUp(run)
    }

    func testTwoThreadsShareTheSocketsAndTheRate() throws {
        let server = try Reflectd(arguments: ["--udp", "--udp-rate", "0"])
        defer { server.stop() }
        let run = try runBench(["flood", "--threads", "2", "--connections", "6", "--rate", "2000", "--duration", "2"], port: server.port)
        XCTAssertEqual(run.result.status, 0, run.result.description)
        XCTAssertEqual(run.number("connects_total"), 6, "\(run.json)")
        XCTAssertEqual((run.json["thread_cpu_s"] as? [Any])?.count, 2, "\(run.json)")
        XCTAssertEqual(run.number("datagrams", "sent"), 4000, accuracy: 400, "\(run.json)")
        XCTAssertEqual(run.number("datagrams", "lost"), 0, "\(run.json)")
        assertCountsAddUp(run)
    }

    /// reflectd's own per-source limit (--udp-rate, 1,000/s by default) drops the excess of a
    /// flood from one socket: reflect-bench sees it as loss, and the run still passes.
    func testFloodOverReflectdsRateLimitIsCountedAsLoss() throws {
        let server = try Reflectd(arguments: ["--udp", "--udp-rate", "500"])
        defer { server.stop() }
        let run = try runBench(["flood", "--connections", "1", "--rate", "2000", "--duration", "2"], port: server.port)
        XCTAssertEqual(run.result.status, 0, run.result.description)
        XCTAssertGreaterThan(run.number("datagrams", "loss_percent"), 50, "\(run.json)")
        assertCountsAddUp(run)
    }

    func testPingpongOverUDPAgainstSocatIsByteExact() throws {
        let socat = try SocatUDPEcho()
        defer { socat.stop() }
        let run = try runBench(["pingpong", "--udp", "--connections", "1", "--size", "1000", "--duration", "2"], port: socat.port)
        XCTAssertEqual(run.result.status, 0, run.result.description)
        XCTAssertTrue(run.ok, "\(run.json)")
        XCTAssertGreaterThan(run.number("datagrams", "echoed"), 20, "\(run.json)")
        XCTAssertEqual(run.number("errors", "total"), 0, "\(run.json)")
        assertCountsAddUp(run)
    }

    /// Pingpong: a lost datagram holds its place among the --depth in flight until the loss
    /// timeout (1 s), so a deep pipeline keeps going; flood sends on whatever is lost.
    func testAServerThatDropsEveryTenthDatagramShowsTenPercentLossAndTheRunPasses() throws {
        let server = try TinyUDPEcho(.dropEvery(10))
        defer { server.stop() }
        let pingpong = try runBench(["pingpong", "--udp", "--connections", "2", "--depth", "64"], port: server.port)
        let flood = try runBench(["flood", "--connections", "2", "--rate", "1000"], port: server.port)
        for (name, run) in [("pingpong", pingpong), ("flood", flood)] {
            XCTAssertEqual(run.result.status, 0, "\(name): loss is not an error: \(run.result.description)")
            XCTAssertTrue(run.ok, "\(name): \(run.json)")
            XCTAssertGreaterThanOrEqual(run.number("datagrams", "sent"), 500, "\(name): \(run.json)")
            XCTAssertEqual(run.number("datagrams", "loss_percent"), 10, accuracy: 1, "\(name): \(run.json)")
            XCTAssertEqual(run.number("errors", "total"), 0, "\(name): \(run.json)")
            assertCountsAddUp(run)
        }
    }

    func testMaxLossFailsARunThatLosesMore() throws {
        let server = try TinyUDPEcho(.dropEvery(10))
        defer { server.stop() }
        let failing = try runBench(["pingpong", "--udp", "--connections", "1", "--max-loss", "5"], port: server.port)
        XCTAssertEqual(failing.result.status, 1, failing.result.description)
        XCTAssertFalse(failing.ok, "\(failing.json)")
        let passing = try runBench(["pingpong", "--udp", "--connections", "1", "--max-loss", "20"], port: server.port)
        XCTAssertEqual(passing.result.status, 0, passing.result.description)
    }

    func testADuplicatedEchoIsAnError() throws {
        let server = try TinyUDPEcho(.duplicateEvery(50))
        defer { server.stop() }
        let run = try runBench(["pingpong", "--udp", "--connections", "1"], port: server.port)
        XCTAssertEqual(run.result.status, 1, run.result.description)
        XCTAssertGreaterThan(run.number("errors", "duplicates"), 0, "\(run.json)")
        XCTAssertTrue(run.result.stderr.contains("came back twice"), run.result.stderr)
    }

    func testACorruptedEchoIsAMismatch() throws {
        let server = try TinyUDPEcho(.corruptEvery(50))
        defer { server.stop() }
        let run = try runBench(["pingpong", "--udp", "--connections", "1", "--size", "64"], port: server.port)
        XCTAssertEqual(run.result.status, 1, run.result.description)
        XCTAssertGreaterThan(run.number("errors", "mismatches"), 0, "\(run.json)")
        XCTAssertTrue(run.result.stderr.contains("byte 63 of the echo"), run.result.stderr)
    }

    func testOptionsThatDoNotApplyToUDPAreRefused() throws {
        let cases: [([String], String)] = [
            (["pingpong", "--udp", "--size", "8"], "--size must be 9 to 65507 bytes with --udp"),
            (["pingpong", "--udp", "--size", "65508"], "--size must be 9 to 65507 bytes with --udp"),
            (["flood"], "flood needs --rate"),
            (["pingpong", "--udp", "--rate", "100"], "use the flood scenario"),
            (["bulk", "--udp"], "--udp applies to pingpong and flood only"),
            (["pingpong", "--max-loss", "5"], "--max-loss applies to --udp only"),
        ]
        for (arguments, message) in cases {
            let result = try runTool("reflect-bench", arguments + ["--port", "9"], timeout: 10)
            XCTAssertEqual(result.status, 64, "\(arguments): \(result.description)")
            XCTAssertTrue(result.stderr.contains(message), "\(arguments): \(result.stderr)")
        }
    }
}
