// The shape of reflect-bench's load and output: generator threads (`--threads`), given messages
// (`--message`, `--payload-file`), Unix-domain sockets (`--unix`) and the latency histogram file
// (`--histogram`). Each through a real server on loopback.

import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Glibc
import XCTest

final class ReflectBenchShapeTests: XCTestCase {
    private var scratch: URL!

    override func setUpWithError() throws {
        signal(SIGPIPE, SIG_IGN)
        // Short: a Unix socket path must fit in 107 bytes.
        scratch = URL(fileURLWithPath: "/tmp").appendingPathComponent("rb-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    }

    override func tearDown() {
        if let scratch { try? FileManager.default.removeItem(at: scratch) }
    }

    // MARK: threads

    func testThreadsSplitTheConnectionsAndMergeTheirHistograms() throws {
        let server = try Reflectd()
        defer { server.stop() }
        let run = try runBench(["idle", "--connections", "300", "--threads", "3", "--probes", "9", "--duration", "2"],
                               port: server.port)
        XCTAssertEqual(run.result.status, 0, run.result.description)
        XCTAssertTrue(run.ok, "\(run.json)")
        XCTAssertEqual(run.number("threads"), 3)
        // Every thread opened its 100: the counts are summed, not one thread's.
        XCTAssertEqual(run.number("connects_total"), 300)
        XCTAssertEqual(run.number("max_open"), 300)
        // Each thread probes its share (3/s, 9/s in all, not 9/s each): rounds at 0, 1 and 2 s.
        XCTAssertGreaterThanOrEqual(run.number("messages"), 18, "\(run.json)")
        XCTAssertLessThanOrEqual(run.number("messages"), 27, "\(run.json)")
        // The merged histogram holds every thread's samples.
        XCTAssertEqual(run.number("latency_us", "samples"), run.number("messages"))
    }

    func testThreadsRunOnThreadsOfTheirOwn() throws {
        // Counted while it runs: the main thread plus one per generator (other threads may exist,
        // so only the difference between 1 and 4 generators is checked).
        let server = try Reflectd()
        defer { server.stop() }
        func threadsWhileRunning(_ generators: Int) throws -> Int {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: try Tools.path("reflect-bench"))
            process.arguments = ["pingpong", "--port", String(server.port), "--connections", "4", "--threads",
                                 String(generators), "--warmup", "0", "--duration", "2", "--quiet"]
            process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
            try process.run()
            defer { process.waitUntilExit() }
            usleep(1_000_000)
            let tasks = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(process.processIdentifier)/task")
            return tasks.count
        }
        let one = try threadsWhileRunning(1), four = try threadsWhileRunning(4)
        XCTAssertEqual(four - one, 3, "1 generator: \(one) threads, 4 generators: \(four)")
    }

    func testRateIsSharedByTheThreadsNotMultiplied() throws {
        let server = try Reflectd()
        defer { server.stop() }
        let run = try runBench(["pingpong", "--connections", "6", "--threads", "3", "--rate", "600", "--duration", "2"],
                               port: server.port)
        XCTAssertEqual(run.result.status, 0, run.result.description)
        XCTAssertTrue(run.ok, "\(run.json)")
        // 600/s in all for 2 s (each thread 200/s), not 600/s each.
        XCTAssertEqual(run.number("messages"), 1200, accuracy: 120, "\(run.json)")
        XCTAssertEqual(run.number("latency_us", "samples"), run.number("messages"))
    }

    func testOneProgressLineCoversEveryThread() throws {
        let server = try Reflectd()
        defer { server.stop() }
        let result = try runTool("reflect-bench", ["pingpong", "--port", String(server.port), "--connections", "6",
                                                   "--threads", "3", "--warmup", "1", "--duration", "2"], timeout: 30)
        XCTAssertEqual(result.status, 0, result.description)
        let lines = result.stderr.split(separator: "\n").filter { $0.contains("msg/s") }
        // One line a second for the run, not one per thread: about 3 in 3 s.
        XCTAssertGreaterThanOrEqual(lines.count, 2, result.stderr)
        XCTAssertLessThanOrEqual(lines.count, 4, result.stderr)
        // Each counts the connections of all three threads.
        XCTAssertTrue(lines.contains { $0.contains("open 6 ") }, result.stderr)
    }

    /// Per-thread CPU time, as the kernel accounts it in /proc/self/task/*/stat and as the tool
    /// reports it in --json: both generator threads worked, and their counts add up.
    func testTwoThreadsBothDoWorkByTheirCPUTime() throws {
        let server = try Reflectd()
        defer { server.stop() }
        let run = try runBench(["pingpong", "--connections", "8", "--threads", "2", "--duration", "2"], port: server.port)
        XCTAssertEqual(run.result.status, 0, run.result.description)
        XCTAssertTrue(run.ok, "\(run.json)")
        let cpu = (run.json["thread_cpu_s"] as? [NSNumber])?.map(\.doubleValue) ?? []
        XCTAssertEqual(cpu.count, 2, "\(run.json)")
        // Each thread drove 4 connections flat out for 2 s: tens of ms of CPU at least, even on a
        // busy machine (the kernel counts in 10 ms ticks), and neither did all the work.
        let low = cpu.min() ?? 0, high = cpu.max() ?? 0
        XCTAssertGreaterThanOrEqual(low, 0.05, "\(cpu)")
        XCTAssertGreaterThanOrEqual(low, high * 0.2, "both threads work: \(cpu)")
        XCTAssertEqual(run.number("latency_us", "samples"), run.number("messages"))
    }

    func testThreadsAutoIsTheOnlineCPUsAtMostTheConnections() throws {
        let server = try Reflectd()
        defer { server.stop() }
        let cpus = max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        let run = try runBench(["pingpong", "--connections", "64", "--threads", "auto"], port: server.port)
        XCTAssertTrue(run.ok, "\(run.json)")
        XCTAssertEqual(run.number("threads"), Double(min(cpus, 64)))
        XCTAssertEqual((run.json["thread_cpu_s"] as? [Any])?.count, min(cpus, 64))
        let one = try runBench(["pingpong", "--connections", "1", "--threads", "auto"], port: server.port)
        XCTAssertTrue(one.ok, "\(one.json)")
        XCTAssertEqual(one.number("threads"), 1)
        let bad = try runTool("reflect-bench", ["pingpong", "--threads", "many"])
        XCTAssertNotEqual(bad.status, 0)
    }

    func testMoreThreadsThanConnectionsIsRefused() throws {
        let result = try runTool("reflect-bench", ["pingpong", "--connections", "2", "--threads", "3"])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.stderr.contains("--threads 3 is more than the 2 connections"), result.description)
    }

    // MARK: given messages

    func testMessageIsSentAsGivenAndItsLengthIsTheSize() throws {
        let received = Recorder()
        let tiny = try TinyServer.plainEcho(record: received, recordLimit: 1 << 20)
        defer { tiny.stop() }
        let message = "GET /ping HTTP/1.0\r\n\r\n"
        let run = try runBench(["pingpong", "--connections", "2", "--depth", "3", "--message", message], port: tiny.port)
        XCTAssertEqual(run.result.status, 0, run.result.description)
        XCTAssertTrue(run.ok, "\(run.json)")
        XCTAssertEqual(run.number("size"), Double(message.utf8.count))
        XCTAssertEqual(run.json["payload"] as? String, "message")
        // Only the message, over and over (in bytes: "\r\n" is one Character). The two
        // connections' reads may interleave, but each read holds whole messages here; the run
        // may end inside the last one.
        let text = received.text
        XCTAssertGreaterThan(text.utf8.count, 100 * message.utf8.count)
        let rest = text.replacingOccurrences(of: message, with: "")
        XCTAssertLessThan(rest.utf8.count, 2 * message.utf8.count, "only the message, over and over: \(rest.prefix(200).debugDescription)")
    }

    func testPayloadFileBytesAreSentAndCheckedAgainstTheEcho() throws {
        // Binary, with NUL and newline: sent byte for byte.
        let bytes: [UInt8] = [0, 1, 2, 10, 13, 0xff, 0x80, 0x65, 0x78, 0, 10]
        let file = scratch.appendingPathComponent("payload.bin")
        try Data(bytes).write(to: file)
        let received = Recorder()
        let tiny = try TinyServer.plainEcho(record: received, recordLimit: 1 << 20)
        defer { tiny.stop() }
        let run = try runBench(["pingpong", "--connections", "1", "--payload-file", file.path], port: tiny.port)
        XCTAssertEqual(run.result.status, 0, run.result.description)
        XCTAssertEqual(run.number("size"), Double(bytes.count))
        let got = received.snapshot
        XCTAssertGreaterThan(got.count, 100 * bytes.count)
        for start in stride(from: 0, to: got.count - bytes.count, by: bytes.count) {
            guard Array(got[start..<(start + bytes.count)]) == bytes else {
                XCTFail("message at byte \(start) differs: \(got[start..<(start + bytes.count)])")
                break
            }
        }
    }

    func testGivenMessageEchoedWrongIsAMismatch() throws {
        // An echo that upper-cases: every message comes back different from what was sent.
        let tiny = try TinyServer { fd in
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                guard n > 0 else { break }
                for i in 0..<n where (0x61...0x7a).contains(buffer[i]) { buffer[i] -= 0x20 }
                guard buffer.withUnsafeBytes({ TinyServer.sendAll(fd, UnsafeRawBufferPointer(rebasing: $0[..<n])) }) else { break }
            }
            close(fd)
        }
        defer { tiny.stop() }
        let run = try runBench(["pingpong", "--connections", "1", "--message", "hello\n"], port: tiny.port)
        XCTAssertEqual(run.result.status, 1, run.result.description)
        XCTAssertEqual(run.number("errors", "mismatches"), 1)
        XCTAssertTrue(run.result.stderr.contains("is 0x48, expected 0x68"), run.result.description)
    }

    func testMessageOptionsAreChecked() throws {
        let cases: [([String], String)] = [
            (["pingpong", "--message", "a", "--size", "10"], "--size is the length of --message"),
            (["pingpong", "--message", "a", "--payload-file", "/dev/null"], "give one of them"),
            (["bulk", "--message", "abc"], "--message and --payload-file apply to pingpong, idle and churn"),
            (["pingpong", "--payload-file", scratch.appendingPathComponent("missing").path], "cannot open --payload-file"),
        ]
        for (arguments, message) in cases {
            let result = try runTool("reflect-bench", arguments)
            XCTAssertNotEqual(result.status, 0, "\(arguments): \(result.description)")
            XCTAssertTrue(result.stderr.contains(message), "\(arguments): \(result.description)")
        }
    }

    // MARK: Unix-domain sockets

    func testUnixSocketPingpongAndChurnPass() throws {
        let path = scratch.appendingPathComponent("echo.sock").path
        let server = try Reflectd(arguments: ["--unix", path])
        defer { server.stop() }
        for scenario in ["pingpong", "churn"] {
            let run = try runBench([scenario, "--unix", path, "--connections", "4"], port: 0)
            XCTAssertEqual(run.result.status, 0, "\(scenario): \(run.result.description)")
            XCTAssertTrue(run.ok, "\(scenario): \(run.json)")
            XCTAssertEqual(run.json["unix"] as? Bool, true)
            XCTAssertGreaterThan(run.number("messages"), 10, scenario)
        }
    }

    func testUnixSocketThatIsNotThereFailsTheRun() throws {
        let run = try runBench(["pingpong", "--unix", scratch.appendingPathComponent("none.sock").path,
                                "--connections", "2"], port: 0)
        XCTAssertEqual(run.result.status, 1, run.result.description)
        XCTAssertEqual(run.number("errors", "connect_failures"), 2, "\(run.json)")
    }

    // MARK: histogram file

    func testHistogramFileHoldsThePercentileDistributionOfTheSummary() throws {
        let server = try Reflectd()
        defer { server.stop() }
        let file = scratch.appendingPathComponent("latency.hgrm")
        let run = try runBench(["pingpong", "--connections", "2", "--histogram", file.path], port: server.port)
        XCTAssertEqual(run.result.status, 0, run.result.description)
        let text = try String(contentsOf: file, encoding: .utf8)
        var rows: [[Substring]] = []
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            if fields.count >= 3, Double(fields[0]) != nil, Double(fields[1]) != nil { rows.append(fields) }
        }
        XCTAssertGreaterThan(rows.count, 10, text)
        // HdrHistogram's percentile format: value (µs), percentile, count so far; the last row
        // is 100 % and counts every sample; values and percentiles never go down.
        let values = rows.map { Double($0[0])! }, percentiles = rows.map { Double($0[1])! }
        XCTAssertEqual(values, values.sorted())
        XCTAssertEqual(percentiles, percentiles.sorted())
        XCTAssertEqual(percentiles.last, 1.0)
        XCTAssertEqual(Double(rows.last![2]), run.number("latency_us", "samples"))
        XCTAssertEqual(values.last!, run.number("latency_us", "max"), accuracy: run.number("latency_us", "max") * 0.01)
        XCTAssertTrue(text.contains("#[Max"), text)
    }

    // MARK: plot

    /// A histogram file as `--histogram` writes it, for the percentiles and values (µs) given.
    private func histogramFile(_ name: String, _ rows: [(Double, Double)]) throws -> String {
        var text = "       Value     Percentile TotalCount 1/(1-Percentile)\n\n"
        for (i, (value, p)) in rows.enumerated() { text += "\(value) \(p) \(i + 1) \(p < 1 ? String(1 / (1 - p)) : "")\n" }
        text += "#[Max     =     \(rows.last!.0), Total count    =        \(rows.count)]\n"
        let url = scratch.appendingPathComponent(name)
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url.path
    }

    func testPlotDrawsOneCurvePerFileSlowerHigher() throws {
        let fast = try histogramFile("fast.hgrm", [(20, 0), (30, 0.5), (40, 0.9), (80, 0.99), (100, 1)])
        let slow = try histogramFile("slow.hgrm", [(20, 0), (30, 0.5), (400_000, 0.9), (900_000, 0.99), (1_000_000, 1)])
        let svgPath = scratch.appendingPathComponent("chart.svg").path
        let result = try runTool("reflect-bench", ["plot", fast, slow, "--label", "closed", "--output", svgPath])
        XCTAssertEqual(result.status, 0, result.description)
        let svg = try String(contentsOfFile: svgPath, encoding: .utf8)
        XCTAssertTrue(svg.hasPrefix("<svg xmlns=\"http://www.w3.org/2000/svg\""), svg)
        XCTAssertTrue(svg.hasSuffix("</svg>\n"))
        // Named by the label, then by the file name.
        XCTAssertTrue(svg.contains("data-name=\"closed\""), svg)
        XCTAssertTrue(svg.contains("data-name=\"slow.hgrm\""), svg)
        // One curve per file, a point per row; the slow one's tail is drawn higher (smaller y).
        let curves = svg.split(separator: "\n").filter { $0.hasPrefix("<polyline class=\"curve\"") }
        XCTAssertEqual(curves.count, 2)
        func points(_ line: Substring) -> [(x: Double, y: Double)] {
            let list = line.split(separator: "points=\"")[1].split(separator: "\"")[0]
            return list.split(separator: " ").map { pair in
                let xy = pair.split(separator: ",")
                return (Double(xy[0])!, Double(xy[1])!)
            }
        }
        let a = points(curves[0]), b = points(curves[1])
        XCTAssertEqual(a.count, 5)
        XCTAssertEqual(b.count, 5)
        XCTAssertEqual(a[1].y, b[1].y, accuracy: 0.01, "the same median, drawn at the same height")
        XCTAssertLessThan(b[3].y, a[3].y, "p99: 900 ms is above 80 µs")
        XCTAssertEqual(a.map(\.x), a.map(\.x).sorted(), "percentiles run left to right")
    }

    /// `plot` reads --json summaries (their "percentiles") as well as histogram files: a
    /// well-formed SVG with one line per input, each with its label.
    func testPlotOfJSONSummariesIsWellFormedSVGWithOneLinePerRun() throws {
        let server = try Reflectd()
        defer { server.stop() }
        var inputs: [String] = []
        for (name, extra) in [("closed", [String]()), ("open", ["--rate", "2000"])] {
            let run = try runBench(["pingpong", "--connections", "4", "--label", "reflectd \(name)"] + extra, port: server.port)
            XCTAssertTrue(run.ok, "\(run.json)")
            let pairs = run.json["percentiles"] as? [[NSNumber]] ?? []
            XCTAssertGreaterThan(pairs.count, 10, "\(run.json)")
            XCTAssertEqual(pairs.last?.first?.doubleValue, 100)
            XCTAssertEqual(pairs.last?.last?.doubleValue ?? 0, run.number("latency_us", "max"), accuracy: run.number("latency_us", "max") * 0.01)
            let url = scratch.appendingPathComponent("\(name).json")
            try run.result.stdout.write(to: url, atomically: true, encoding: .utf8)
            inputs.append(url.path)
        }
        inputs.append(try histogramFile("third.hgrm", [(20, 0), (30, 0.5), (40, 0.9), (80, 0.99), (100, 1)]))
        let svgPath = scratch.appendingPathComponent("runs.svg")
        let result = try runTool("reflect-bench", ["plot"] + inputs + ["-o", svgPath.path])
        XCTAssertEqual(result.status, 0, result.description)

        let lines = SVGLines()
        let parser = try XCTUnwrap(XMLParser(contentsOf: svgPath))
        parser.delegate = lines
        XCTAssertTrue(parser.parse(), "not well-formed: \(String(describing: parser.parserError))")
        XCTAssertEqual(lines.root, "svg")
        XCTAssertEqual(lines.names, ["reflectd closed", "reflectd open", "third.hgrm"])
    }

    func testPlotOfAFileWithoutPercentilesFailsAndNamesIt() throws {
        let url = scratch.appendingPathComponent("empty.hgrm")
        try "not a histogram\n".write(to: url, atomically: true, encoding: .utf8)
        let result = try runTool("reflect-bench", ["plot", url.path])
        XCTAssertEqual(result.status, 1, result.description)
        XCTAssertTrue(result.stderr.contains("empty.hgrm has no percentile rows"), result.description)
    }
}

/// Collects the root element and the names of the curves of an SVG, through Foundation's XMLParser
/// (which also fails on anything that is not well-formed XML).
private final class SVGLines: NSObject, XMLParserDelegate {
    var names: [String] = []
    var root: String?

    func parser(_ parser: XMLParser, didStartElement element: String, namespaceURI: String?,
                qualifiedName: String?, attributes: [String: String] = [:]) {
        if root == nil { root = element }
        if element == "polyline", attributes["class"] == "curve" { names.append(attributes["data-name"] ?? "") }
    }
}
