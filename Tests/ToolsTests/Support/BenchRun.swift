// Running reflect-bench for a short measurement and reading its JSON summary, shared by the
// reflect-bench test classes.

import Foundation
import XCTest

/// One finished reflect-bench run: its process result and its parsed `--json` summary.
struct BenchRun {
    let result: Finished
    let json: [String: Any]

    /// A number in the summary, by path (`"latency_us", "p99"`); -1 if it is missing.
    func number(_ path: String...) -> Double {
        var value: Any? = json
        for key in path { value = (value as? [String: Any])?[key] }
        return (value as? NSNumber)?.doubleValue ?? -1
    }

    var ok: Bool { json["ok"] as? Bool == true }
}

/// Runs reflect-bench with `arguments` against 127.0.0.1:`port` (unless the arguments name
/// `--unix`), no warm-up and a one-second measurement unless they say otherwise, with `--json`.
func runBench(_ arguments: [String], port: Int, timeout: Double = 30,
              file: StaticString = #filePath, line: UInt = #line) throws -> BenchRun {
    var all = arguments
    if !arguments.contains("--unix") { all += ["--host", "127.0.0.1", "--port", String(port)] }
    if !arguments.contains("--warmup") { all += ["--warmup", "0"] }
    if !arguments.contains("--duration") { all += ["--duration", "1"] }
    all.append("--json")
    let result = try runTool("reflect-bench", all, timeout: timeout)
    let lines = result.stdout.split(separator: "\n")
    XCTAssertEqual(lines.count, 1, "--json prints one line: \(result.stdout.debugDescription)", file: file, line: line)
    let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
    return BenchRun(result: result, json: try XCTUnwrap(object, "not a JSON object: \(result.stdout) \(result.description)", file: file, line: line))
}
