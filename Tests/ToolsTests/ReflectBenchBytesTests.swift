// Given bytes, every value of them: `--message` (with its escapes) and `--payload-file` (sent
// cyclically, cut every --size bytes) against reflectd --exit-line off and against socat
// running /bin/cat, a third-party echo. reflect-bench checks every echoed byte, so a passing run
// with bytes echoed is a byte-exact echo; a recording server checks what went out.

import Foundation
import Glibc
import XCTest

final class ReflectBenchBytesTests: XCTestCase {
    private var scratch: URL!

    override func setUpWithError() throws {
        signal(SIGPIPE, SIG_IGN)
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("rb-bytes-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    }

    override func tearDown() {
        if let scratch { try? FileManager.default.removeItem(at: scratch) }
    }

    /// Every byte value 0 … 255 written as `\xNN`: the only way to pass NUL in an argument.
    private static let everyByteMessage = (0...255).map { "\\x" + String($0, radix: 16).leftPadded(2) }.joined()

    /// A file of every byte value, up then down (512 bytes), so that a boundary every 100 bytes
    /// falls somewhere else in it each time round.
    private func everyByteFile() throws -> URL {
        let bytes = (0...255).map { UInt8($0) } + (0...255).reversed().map { UInt8($0) }
        let url = scratch.appendingPathComponent("every-byte.bin")
        try Data(bytes).write(to: url)
        return url
    }

    private func assertByteExact(_ run: BenchRun, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(run.result.status, 0, "\(what): \(run.result.description)", file: file, line: line)
        XCTAssertTrue(run.ok, "\(what): \(run.json)", file: file, line: line)
        XCTAssertEqual(run.number("errors", "mismatches"), 0, what, file: file, line: line)
        XCTAssertGreaterThan(run.number("bytes"), 10_000, "\(what): bytes were echoed: \(run.json)", file: file, line: line)
    }

    func testMessageWithEveryByteValueIsEchoedByteExactByReflectd() throws {
        let server = try Reflectd(arguments: ["--exit-line", "off"])
        defer { server.stop() }
        let run = try runBench(["pingpong", "--connections", "4", "--depth", "2", "--message", Self.everyByteMessage], port: server.port)
        assertByteExact(run, "reflectd")
        XCTAssertEqual(run.number("size"), 256)
    }

    func testMessageWithEveryByteValueIsEchoedByteExactBySocat() throws {
        let socat = try SocatEcho()
        defer { socat.stop() }
        let run = try runBench(["pingpong", "--connections", "2", "--message", Self.everyByteMessage], port: socat.port)
        assertByteExact(run, "socat")
    }

    func testPayloadFileWithEveryByteValueIsEchoedByteExactByReflectd() throws {
        let server = try Reflectd(arguments: ["--exit-line", "off"])
        defer { server.stop() }
        let run = try runBench(["pingpong", "--connections", "4", "--depth", "3", "--size", "100",
                                "--payload-file", try everyByteFile().path], port: server.port)
        assertByteExact(run, "reflectd")
        XCTAssertEqual(run.number("size"), 100)
    }

    func testPayloadFileWithEveryByteValueIsEchoedByteExactBySocat() throws {
        let socat = try SocatEcho()
        defer { socat.stop() }
        let run = try runBench(["pingpong", "--connections", "2", "--size", "100",
                                "--payload-file", try everyByteFile().path], port: socat.port)
        assertByteExact(run, "socat")
    }

    /// The file is one stream, sent round and round; --size only says where messages end.
    func testPayloadFileIsSentCyclicallyWithABoundaryEverySizeBytes() throws {
        let file = try everyByteFile()
        let expected = [UInt8](try Data(contentsOf: file))
        let received = Recorder()
        let tiny = try TinyServer.plainEcho(record: received, recordLimit: 1 << 20)
        defer { tiny.stop() }
        let run = try runBench(["pingpong", "--connections", "1", "--size", "100", "--payload-file", file.path], port: tiny.port)
        XCTAssertEqual(run.result.status, 0, run.result.description)
        XCTAssertTrue(run.ok, "\(run.json)")
        let got = received.snapshot
        XCTAssertGreaterThan(got.count, 10 * expected.count)
        // Messages of 100 bytes: what went out is whole messages (the run may end inside one).
        XCTAssertEqual(Double(run.number("bytes")).truncatingRemainder(dividingBy: 100), 0)
        for (i, b) in got.enumerated() where b != expected[i % expected.count] {
            XCTFail("byte \(i) sent is \(b), expected \(expected[i % expected.count]) (the file, cyclically)")
            break
        }
    }

    /// A file holding an exit line is sent as is: reflectd closes, the run fails and says so.
    func testPayloadFileWithAnExitLineMakesReflectdCloseUnlessExitLineIsOff() throws {
        let url = scratch.appendingPathComponent("exit.txt")
        try "hello\nexit\n".write(to: url, atomically: true, encoding: .utf8)
        let server = try Reflectd()
        defer { server.stop() }
        let run = try runBench(["pingpong", "--connections", "1", "--payload-file", url.path], port: server.port)
        XCTAssertEqual(run.result.status, 1, run.result.description)
        XCTAssertGreaterThanOrEqual(run.number("errors", "unexpected_closes"), 1, "\(run.json)")
        let off = try Reflectd(arguments: ["--exit-line", "off"])
        defer { off.stop() }
        let fine = try runBench(["pingpong", "--connections", "1", "--payload-file", url.path], port: off.port)
        XCTAssertEqual(fine.result.status, 0, fine.result.description)
    }

    func testMessageEscapesBecomeTheirBytes() throws {
        let received = Recorder()
        let tiny = try TinyServer.plainEcho(record: received, recordLimit: 1 << 16)
        defer { tiny.stop() }
        let run = try runBench(["pingpong", "--connections", "1", "--message", #"a\tb\\c\x00\xFF\r\n"#], port: tiny.port)
        XCTAssertEqual(run.result.status, 0, run.result.description)
        XCTAssertEqual(run.number("size"), 9)
        XCTAssertEqual(Array(received.snapshot.prefix(9)), [0x61, 9, 0x62, 0x5c, 0x63, 0, 0xff, 13, 10])
    }

    func testBadEscapesAreAClearError() throws {
        let cases: [(String, String)] = [
            (#"ab\q"#, #"unknown escape \q at byte 2"#),
            (#"\x4"#, #"bad escape \x4 at byte 0: \x takes two hex digits"#),
            (#"\xZZ"#, #"bad escape \xZZ"#),
            (#"end\"#, "lone backslash"),
        ]
        for (message, error) in cases {
            let result = try runTool("reflect-bench", ["pingpong", "--message", message])
            XCTAssertNotEqual(result.status, 0, "\(message): \(result.description)")
            XCTAssertTrue(result.stderr.contains(error), "\(message): \(result.description)")
        }
    }
}

private extension String {
    func leftPadded(_ width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
