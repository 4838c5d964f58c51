// `reflect-bench`: short runs of every scenario against a real reflectd, where the exit status is
// the check, and proof that its byte checking does fail when the echo is wrong. No timing
// assertions: speed lives in the benchmark results.

import Foundation
import Glibc
import XCTest

final class ReflectBenchTests: XCTestCase {
    private var server: Reflectd!

    override func setUpWithError() throws {
        signal(SIGPIPE, SIG_IGN)
        server = try Reflectd()
    }

    override func tearDown() {
        server?.stop()
        server = nil
    }

    /// Runs reflect-bench with `arguments` for a one-second measurement and parses its JSON summary.
    private func bench(_ arguments: [String], port: Int? = nil,
                       file: StaticString = #filePath, line: UInt = #line) throws -> (Finished, [String: Any]) {
        let all = arguments + ["--host", "127.0.0.1", "--port", String(port ?? server.port),
                               "--warmup", "0", "--duration", "1", "--json"]
        let result = try runTool("reflect-bench", all, timeout: 30)
        let lines = result.stdout.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, "--json prints one line: \(result.stdout.debugDescription)", file: file, line: line)
        let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        return (result, try XCTUnwrap(object, "not a JSON object: \(result.stdout)", file: file, line: line))
    }

    private func number(_ json: [String: Any], _ path: String...) -> Double {
        var value: Any? = json
        for key in path { value = (value as? [String: Any])?[key] }
        return (value as? NSNumber)?.doubleValue ?? -1
    }

    /// The fields every good run has.
    private func assertPlausible(_ json: [String: Any], scenario: String, messages atLeast: Double = 1,
                                 file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(json["scenario"] as? String, scenario, file: file, line: line)
        XCTAssertEqual(json["ok"] as? Bool, true, "\(json)", file: file, line: line)
        XCTAssertEqual(number(json, "errors", "total"), 0, file: file, line: line)
        XCTAssertGreaterThanOrEqual(number(json, "messages"), atLeast, file: file, line: line)
        XCTAssertGreaterThan(number(json, "duration_s"), 0.5, file: file, line: line)
        XCTAssertLessThan(number(json, "duration_s"), 5, file: file, line: line)
        XCTAssertGreaterThan(number(json, "msgs_per_s"), 0, file: file, line: line)
        XCTAssertGreaterThan(number(json, "mb_per_s"), 0, file: file, line: line)
        let p50 = number(json, "latency_us", "p50"), p90 = number(json, "latency_us", "p90")
        let p99 = number(json, "latency_us", "p99"), p999 = number(json, "latency_us", "p99_9")
        let max = number(json, "latency_us", "max")
        XCTAssertGreaterThan(p50, 0, file: file, line: line)
        XCTAssertTrue(p50 <= p90 && p90 <= p99 && p99 <= p999 && p999 <= max,
                      "percentiles out of order: \(p50) \(p90) \(p99) \(p999) \(max)", file: file, line: line)
        XCTAssertEqual(number(json, "latency_us", "samples"), number(json, "messages"), file: file, line: line)
    }

    func testPingpongShortRunPassesAndReportsJSON() throws {
        let (result, json) = try bench(["pingpong", "--connections", "8", "--depth", "4", "--size", "100"])
        XCTAssertEqual(result.status, 0, result.description)
        assertPlausible(json, scenario: "pingpong", messages: 100)
        XCTAssertEqual(number(json, "connections"), 8)
        XCTAssertEqual(number(json, "depth"), 4)
        XCTAssertEqual(number(json, "size"), 100)
        // Every message is 100 bytes and every one is counted once.
        XCTAssertEqual(number(json, "bytes"), number(json, "messages") * 100, accuracy: 100 * 8 * 4)
    }

    func testPingpongProgressLinesGoToStderr() throws {
        let result = try runTool("reflect-bench", ["pingpong", "--port", String(server.port), "--connections", "2",
                                                   "--warmup", "1", "--duration", "1"], timeout: 30)
        XCTAssertEqual(result.status, 0, result.description)
        XCTAssertTrue(result.stderr.contains("msg/s"), result.description)
        XCTAssertTrue(result.stdout.contains("result      OK"), result.stdout)
        XCTAssertTrue(result.stdout.contains("p99.9"), result.stdout)
    }

    func testBulkShortRunPassesAndReportsJSON() throws {
        let (result, json) = try bench(["bulk", "--connections", "2", "--size", "65536"])
        XCTAssertEqual(result.status, 0, result.description)
        assertPlausible(json, scenario: "bulk", messages: 10)
        XCTAssertGreaterThan(number(json, "bytes"), 1_000_000)
    }

    func testIdleShortRunHoldsConnectionsAndProbes() throws {
        let (result, json) = try bench(["idle", "--connections", "200", "--probes", "5"])
        XCTAssertEqual(result.status, 0, result.description)
        assertPlausible(json, scenario: "idle", messages: 5)
        XCTAssertEqual(number(json, "max_open"), 200)
        XCTAssertEqual(number(json, "connects_total"), 200)
    }

    func testChurnShortRunPassesAndReportsJSON() throws {
        let (result, json) = try bench(["churn", "--connections", "4"])
        XCTAssertEqual(result.status, 0, result.description)
        assertPlausible(json, scenario: "churn", messages: 10)
        // One echo per connection.
        XCTAssertGreaterThanOrEqual(number(json, "connects"), number(json, "messages"))
        XCTAssertLessThanOrEqual(number(json, "max_open"), 4)
    }

    func testChurnWithSourceAddressesPasses() throws {
        let (result, json) = try bench(["churn", "--connections", "4", "--source-ips", "3"])
        XCTAssertEqual(result.status, 0, result.description)
        assertPlausible(json, scenario: "churn", messages: 10)
        XCTAssertEqual(number(json, "source_ips"), 3)
    }

    func testCorruptedEchoIsDetectedAndFailsTheRun() throws {
        // An echo server that flips one bit of the 1000th byte of every connection.
        let tiny = try TinyServer { fd in
            var buffer = [UInt8](repeating: 0, count: 65536)
            var offset = 0
            while true {
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                guard n > 0 else { break }
                if offset <= 1000 && 1000 < offset + n { buffer[1000 - offset] ^= 0x20 }
                offset += n
                guard buffer.withUnsafeBytes({ TinyServer.sendAll(fd, UnsafeRawBufferPointer(rebasing: $0[..<n])) }) else { break }
            }
            close(fd)
        }
        defer { tiny.stop() }
        let (result, json) = try bench(["pingpong", "--connections", "2", "--depth", "2"], port: tiny.port)
        XCTAssertEqual(result.status, 1, result.description)
        XCTAssertEqual(json["ok"] as? Bool, false)
        XCTAssertEqual(number(json, "errors", "mismatches"), 2)
        XCTAssertTrue(result.stderr.contains("mismatch on connection"), result.description)
    }

    func testServerThatIsNotThereFailsTheRun() throws {
        let (port, fd) = try refusingPort()
        defer { close(fd) }
        let (result, json) = try bench(["pingpong", "--connections", "3"], port: port)
        XCTAssertEqual(result.status, 1, result.description)
        XCTAssertEqual(number(json, "errors", "connect_failures"), 3)
        XCTAssertTrue(result.stderr.contains("connection refused"), result.description)
    }
}
