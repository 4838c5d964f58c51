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
        let all = arguments + ["--host", "127.0.0.1", "--port", String(port ?? server.port), "--warmup", "0", "--json"]
            + (arguments.contains("--duration") ? [] : ["--duration", "1"])
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

    // MARK: big bulk messages (it used to stop reading while it wrote, and deadlock)

    func testBulkFourMegabyteMessagesAtDepthFourDoNotDeadlock() throws {
        let plain = try TinyServer.plainEcho()
        defer { plain.stop() }
        for (name, port) in [("reflectd", server.port), ("a plain echo server", plain.port)] {
            let (result, json) = try bench(["bulk", "--connections", "1", "--size", "4000000", "--depth", "4",
                                            "--duration", "3"], port: port)
            XCTAssertEqual(result.status, 0, "\(name): \(result.description)")
            XCTAssertEqual(json["ok"] as? Bool, true, "\(name): \(json)")
            XCTAssertGreaterThanOrEqual(number(json, "messages"), 1, name)
        }
    }

    func testBulkMessageLargerThanBothSocketBuffersIsEchoed() throws {
        // 16 MB, more than the bench's send buffer (tcp_wmem's largest) and the plain server's
        // receive buffer (fixed at 128 KiB, doubled by the kernel) together: the bench cannot
        // finish writing the message before it reads the echo.
        let wmem = try String(contentsOfFile: "/proc/sys/net/ipv4/tcp_wmem", encoding: .utf8)
        let sendBuffer = Int(wmem.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).last ?? "") ?? 0
        let size = 16 << 20
        XCTAssertGreaterThan(size, sendBuffer + 2 * 128 * 1024, "this test needs a message bigger than both buffers")
        let plain = try TinyServer.plainEcho(receiveBuffer: 128 * 1024)
        defer { plain.stop() }
        for (name, port) in [("a plain echo server", plain.port), ("reflectd", server.port)] {
            let (result, json) = try bench(["bulk", "--connections", "1", "--size", String(size), "--depth", "1",
                                            "--duration", "4"], port: port)
            XCTAssertEqual(result.status, 0, "\(name): \(result.description)")
            XCTAssertGreaterThanOrEqual(number(json, "messages"), 1, name)
            XCTAssertGreaterThanOrEqual(number(json, "bytes"), Double(size), name)
        }
    }

    // MARK: payloads

    func testBinaryPayloadHasEveryByteValueButNoExitLine() throws {
        // Record more than one period of the pattern (about 1 MiB) from one connection, so the
        // recording crosses the point where the pattern wraps around.
        let received = Recorder()
        let limit = 3 << 20
        let tiny = try TinyServer.plainEcho(record: received, recordLimit: limit)
        defer { tiny.stop() }
        let (result, json) = try bench(["bulk", "--connections", "1", "--size", "65536", "--duration", "2"], port: tiny.port)
        XCTAssertEqual(result.status, 0, result.description)
        XCTAssertEqual(json["payload"] as? String, "binary")
        let bytes = received.snapshot
        XCTAssertGreaterThan(bytes.count, 2_200_000, "recorded too little to cross the pattern's end")
        var seen = [Bool](repeating: false, count: 256)
        for b in bytes { seen[Int(b)] = true }
        XCTAssertEqual(seen.filter { $0 }.count, 256, "every byte value, \\n, \\r, e and NUL included")
        let exit = Array("exit".utf8)
        var lineStarts = 0
        var exits: [Int] = []
        for i in 0..<(bytes.count - 3) {
            if bytes[i] == exit[0] && bytes[i + 1] == exit[1] && bytes[i + 2] == exit[2] && bytes[i + 3] == exit[3] {
                exits.append(i)
            }
            if i > 0 && bytes[i - 1] == UInt8(ascii: "\n") && bytes[i] == exit[0] { lineStarts += 1 }
        }
        XCTAssertEqual(exits, [], "`exit` must never occur in the binary stream")
        // Prefixes do occur at line starts: the payload does test a server's exit-line hold.
        XCTAssertGreaterThan(lineStarts, 0)
    }

    func testTextPayloadSendsLinesWithoutE() throws {
        let received = Recorder()
        let tiny = try TinyServer.plainEcho(record: received, recordLimit: 1 << 20)
        defer { tiny.stop() }
        let (result, json) = try bench(["pingpong", "--connections", "2", "--size", "50", "--payload", "text"], port: tiny.port)
        XCTAssertEqual(result.status, 0, result.description)
        XCTAssertEqual(json["payload"] as? String, "text")
        let bytes = received.snapshot
        XCTAssertGreaterThan(bytes.count, 1000)
        XCTAssertFalse(bytes.contains(UInt8(ascii: "e")))
        XCTAssertTrue(bytes.allSatisfy { $0 == UInt8(ascii: "\n") || (0x21...0x7e).contains($0) })
        // Lines, not one unbroken run (the recorder interleaves the two connections and may cut
        // the last message at the end of the run, so line lengths are not checked here).
        XCTAssertGreaterThan(bytes.filter { $0 == UInt8(ascii: "\n") }.count, 10, "text payloads are lines")
    }

    func testBinaryPingpongAgainstPlainEchoServerPasses() throws {
        let tiny = try TinyServer.plainEcho()
        defer { tiny.stop() }
        let (result, json) = try bench(["pingpong", "--connections", "4", "--depth", "2"], port: tiny.port)
        XCTAssertEqual(result.status, 0, result.description)
        assertPlausible(json, scenario: "pingpong", messages: 100)
        XCTAssertEqual(number(json, "errors", "timeouts"), 0)
    }

    func testMessagesSlowerThanTheHoldTimeAreCounted() throws {
        // Each read is echoed 300 ms late: every message waits longer than a 100 ms hold, and none
        // longer than a 60 s one.
        let tiny = try TinyServer.plainEcho(delay: 0.3)
        defer { tiny.stop() }
        let (slow, slowJSON) = try bench(["pingpong", "--connections", "2", "--hold-ms", "100", "--duration", "2"], port: tiny.port)
        XCTAssertEqual(slow.status, 0, slow.description)
        XCTAssertEqual(number(slowJSON, "hold_ms"), 100)
        XCTAssertGreaterThanOrEqual(number(slowJSON, "messages"), 2)
        // The completed messages, plus each connection's message still waiting at the end.
        XCTAssertGreaterThanOrEqual(number(slowJSON, "over_hold"), number(slowJSON, "messages"))
        XCTAssertGreaterThanOrEqual(number(slowJSON, "latency_us", "p99_99"), 300_000)
        let (patient, patientJSON) = try bench(["pingpong", "--connections", "2", "--hold-ms", "60000"], port: tiny.port)
        XCTAssertEqual(patient.status, 0, patient.description)
        XCTAssertEqual(number(patientJSON, "over_hold"), 0)
    }

    func testEchoThatNeverComesIsATimeout() throws {
        // Reads and never answers: the run must not pass just because no latency was recorded.
        let tiny = try TinyServer { fd in
            var buffer = [UInt8](repeating: 0, count: 4096)
            while buffer.withUnsafeMutableBytes({ read(fd, $0.baseAddress, $0.count) }) > 0 {}
            close(fd)
        }
        defer { tiny.stop() }
        let (result, json) = try bench(["pingpong", "--connections", "2", "--duration", "2"], port: tiny.port)
        XCTAssertEqual(result.status, 1, result.description)
        XCTAssertEqual(number(json, "errors", "timeouts"), 2)
        XCTAssertEqual(number(json, "over_hold"), 2)
        XCTAssertTrue(result.stderr.contains("timed out"), result.description)
    }

    func testBadNumbersNameTheOptionAndTheValue() throws {
        let cases: [([String], String)] = [
            (["bulk", "--duration", "-1"], "--duration must be more than 0 and at most 86400 seconds, got -1.0"),
            (["pingpong", "--hold-ms", "-5"], "--hold-ms must be between 0 and 60000, got -5"),
            (["pingpong", "--port", "-1"], "--port must be between 1 and 65535, got -1"),
            (["pingpong", "--depth", "0"], "--depth must be between 1 and 4096, got 0"),
            (["pingpong", "--payload", "random"], "--payload"),
            (["pingpong", "--size", "1", "--size", "2"], "--size was given more than once"),
        ]
        for (arguments, message) in cases {
            let result = try runTool("reflect-bench", arguments)
            XCTAssertNotEqual(result.status, 0, "\(arguments): \(result.description)")
            XCTAssertTrue(result.stderr.contains(message), "\(arguments): \(result.description)")
        }
    }
}
