// The exit-line rules of issue 3, as unit tests of ExitLineDetector.
//
// `EchoModel` plays the role of EchoHandler: it feeds segments to the detector and rebuilds the
// bytes the server would write, from Verdict.release (bytes of ExitLineDetector.candidate),
// then Verdict.echo (bytes of the segment), and stops at Verdict.exit.

import Echo
import XCTest

/// What the echo server writes for a stream cut into given segments.
struct EchoModel {
    private(set) var detector = ExitLineDetector()
    /// The bytes written back, in order.
    private(set) var output: [UInt8] = []
    /// The exit line was seen: the connection closes, later bytes are discarded.
    private(set) var exited = false
    /// A description of any verdict that broke its own contract.
    private(set) var contractViolations: [String] = []

    static let candidate: [UInt8] = {
        let s = ExitLineDetector.candidate
        return Array(UnsafeBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
    }()

    /// Feeds one segment, as one read would. Segments after the exit line are discarded unseen.
    mutating func feed(_ segment: [UInt8]) {
        guard !exited else { return }
        // EchoProtocol first skims (the inlined common case) and scans only when that finds a
        // line that may start with `e`, from where it found it: the model does the same, and
        // checks both answers against a plain scan of the whole segment.
        let before = detector
        var scanned = detector
        let full = segment.withUnsafeBytes { scanned.scan($0) }
        let clear = segment.withUnsafeBytes { detector.skim($0) }
        guard let clear else {
            if full != ExitLineDetector.Verdict(release: 0, echo: segment.count, exit: false) || scanned != detector {
                contractViolations.append("skim said the whole segment is data, scan said \(full) for \(segment)")
            }
            output += segment
            return
        }
        if before != detector {
            contractViolations.append("skim changed the state although it found a line start, for \(segment)")
        }
        let verdict = segment.withUnsafeBytes { detector.scan($0, clearUpTo: clear) }
        if verdict != full || detector != scanned {
            contractViolations.append("scan from \(clear) said \(verdict), from 0 \(full), for \(segment)")
        }
        if verdict.release < 0 || verdict.release > Self.candidate.count {
            contractViolations.append("release \(verdict.release) out of 0...\(Self.candidate.count) for \(segment)")
        }
        if verdict.echo < 0 || verdict.echo > segment.count {
            contractViolations.append("echo \(verdict.echo) out of 0...\(segment.count) for \(segment)")
        }
        if verdict.releaseFrom < 0 || verdict.releaseFrom + verdict.release > Self.candidate.count {
            contractViolations.append("released \(verdict.releaseFrom)+\(verdict.release) out of the candidate for \(segment)")
        } else {
            output += Self.candidate[verdict.released]
        }
        output += segment.prefix(max(0, verdict.echo))
        if verdict.exit { exited = true }
    }

    /// The hold ran out (no input for the hold time): what EchoProtocol writes then.
    mutating func release() {
        guard !exited else { return }
        let range = detector.releaseHeld()
        if range.lowerBound < 0 || range.upperBound > Self.candidate.count {
            contractViolations.append("releaseHeld() returned \(range)")
            return
        }
        output += Self.candidate[range]
    }

    mutating func feed(_ text: String) { feed(Array(text.utf8)) }

    /// End of input (the peer shut down its write side): held-back bytes are data.
    mutating func finish() {
        guard !exited else { return }
        let held = detector.finish()
        if held.lowerBound < 0 || held.upperBound > Self.candidate.count {
            contractViolations.append("finish() returned \(held)")
            return
        }
        output += Self.candidate[held]
    }

    /// Feeds `segments` then ends the input.
    static func run(_ segments: [[UInt8]]) -> EchoModel {
        var model = EchoModel()
        for segment in segments { model.feed(segment) }
        model.finish()
        return model
    }

    static func run(_ segments: String...) -> EchoModel { run(segments.map { Array($0.utf8) }) }

    /// Feeds `segments`, where the segment `"<hold>"` stands for the hold running out, then
    /// (if `eof`) ends the input.
    static func runWithHolds(_ segments: [String], eof: Bool = true) -> EchoModel {
        var model = EchoModel()
        for segment in segments {
            if segment == "<hold>" { model.release() } else { model.feed(segment) }
        }
        if eof { model.finish() }
        return model
    }
}

/// The rule of issue 3, written as plainly as possible: the first line that is exactly `exit`
/// followed by `\n` or `\r\n`, at the start of the stream or right after a `\n`, ends the
/// stream; everything before it is echoed. Returns (expected output, exited).
func referenceEcho(_ input: [UInt8]) -> ([UInt8], Bool) {
    let exitLF = Array("exit\n".utf8), exitCRLF = Array("exit\r\n".utf8)
    var lineStart = 0
    while lineStart <= input.count {
        let rest = input[lineStart...]
        if rest.starts(with: exitLF) || rest.starts(with: exitCRLF) { return (Array(input[..<lineStart]), true) }
        guard let newline = rest.firstIndex(of: UInt8(ascii: "\n")) else { break }
        lineStart = newline + 1
    }
    return (input, false)
}

final class ExitLineDetectorTests: XCTestCase {
    private func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    private func assertEcho(_ segments: [String], output expected: String, exits: Bool,
                            file: StaticString = #filePath, line: UInt = #line) {
        let model = EchoModel.run(segments.map(bytes))
        XCTAssertEqual(String(decoding: model.output, as: UTF8.self).debugDescription, expected.debugDescription,
                       "segments \(segments.map(\.debugDescription))", file: file, line: line)
        XCTAssertEqual(model.output, bytes(expected), file: file, line: line)
        XCTAssertEqual(model.exited, exits, "exit for segments \(segments.map(\.debugDescription))", file: file, line: line)
        XCTAssertEqual(model.contractViolations, [], file: file, line: line)
    }

    // MARK: the exit line

    func testExitLineAtStreamStartClosesWithoutEcho() {
        assertEcho(["exit\n"], output: "", exits: true)
    }

    func testExitLineWithCRLFAtStreamStart() {
        assertEcho(["exit\r\n"], output: "", exits: true)
    }

    func testExitLineAfterNewlineEchoesWhatCameBefore() {
        assertEcho(["hello\nexit\n"], output: "hello\n", exits: true)
        assertEcho(["hello\r\nexit\r\n"], output: "hello\r\n", exits: true)
        assertEcho(["one\ntwo\n\nexit\n"], output: "one\ntwo\n\n", exits: true)
    }

    func testBytesAfterTheExitLineAreDiscarded() {
        assertEcho(["a\nexit\nb\nmore\n"], output: "a\n", exits: true)
        assertEcho(["exit\r\nexit\n"], output: "", exits: true)
        assertEcho(["a\nexit\n", "after\n", "exit\n"], output: "a\n", exits: true)
    }

    func testVerdictOfTheExitSegmentSaysExit() {
        var detector = ExitLineDetector()
        let first = Array("ab\n".utf8).withUnsafeBytes { detector.scan($0) }
        XCTAssertEqual(first.echo, 3)
        XCTAssertFalse(first.exit)
        let second = Array("exit\nrest".utf8).withUnsafeBytes { detector.scan($0) }
        XCTAssertEqual(second.release, 0)
        XCTAssertEqual(second.echo, 0)
        XCTAssertTrue(second.exit)
    }

    // MARK: look-alikes are data

    func testLookAlikesAreEchoedAsData() {
        for line in ["exits\n", "xexit\n", "exit now\n", "exit\r\r\n", " exit\n", "exit \n", "EXIT\n", "Exit\n",
                     "exi\n", "ex\n", "e\n", "exit\rx\n", "exitexit\n", "eexit\n"] {
            assertEcho([line], output: line, exits: false)
            // …also after a newline, and followed by more data.
            assertEcho(["a\n" + line + "b\n"], output: "a\n" + line + "b\n", exits: false)
        }
    }

    func testExitNotAtLineStartIsData() {
        assertEcho(["say exit\n"], output: "say exit\n", exits: false)
        // A lone CR does not start a line.
        assertEcho(["a\rexit\n"], output: "a\rexit\n", exits: false)
        assertEcho(["a\rexit\r\n"], output: "a\rexit\r\n", exits: false)
    }

    func testLookAlikeThenRealExitLine() {
        assertEcho(["exits\nexit\n"], output: "exits\n", exits: true)
        assertEcho(["exit now\nexit\r\n"], output: "exit now\n", exits: true)
        assertEcho(["exit\r\r\nexit\n"], output: "exit\r\r\n", exits: true)
    }

    func testBinaryBytesAreData() {
        let nul: [UInt8] = [0x00], ff: [UInt8] = [0xFF], cr: [UInt8] = [0x0D]
        let inputs: [[UInt8]] = [
            nul, ff, cr, cr + cr,
            bytes("exit") + nul + bytes("\n"),
            nul + bytes("exit\n"),
            bytes("exit") + ff + bytes("\n"),
            bytes("ex") + nul + bytes("it\n"),
            bytes("exit\r") + nul,
            bytes("a") + cr + bytes("b") + cr + bytes("\n"),
            (0...255).map { UInt8($0) },
        ]
        for input in inputs {
            let model = EchoModel.run([input])
            XCTAssertEqual(model.output, input, "input \(input)")
            XCTAssertFalse(model.exited, "input \(input)")
        }
        // Binary data before a real exit line is echoed exactly.
        let model = EchoModel.run([nul + ff + cr + bytes("\n") + bytes("exit\n")])
        XCTAssertEqual(model.output, nul + ff + cr + bytes("\n"))
        XCTAssertTrue(model.exited)
    }

    // MARK: end of input

    func testExitWithoutNewlineThenEOFIsData() {
        assertEcho(["exit"], output: "exit", exits: false)
        assertEcho(["a\nexit"], output: "a\nexit", exits: false)
        assertEcho(["exit\r"], output: "exit\r", exits: false)
        assertEcho(["e", "x", "i", "t"], output: "exit", exits: false)
        assertEcho(["ex"], output: "ex", exits: false)
    }

    func testFinishReturnsExactlyTheHeldBytes() {
        var detector = ExitLineDetector()
        let verdict = Array("exi".utf8).withUnsafeBytes { detector.scan($0) }
        XCTAssertEqual([verdict.release, verdict.echo], [0, 0], "a candidate is held back until it is decided")
        XCTAssertFalse(verdict.exit)
        XCTAssertEqual(detector.unreleased, 3)
        XCTAssertEqual(detector.finish(), 0..<3)
        XCTAssertEqual(detector.finish(), 0..<0, "finish() resets the detector")
    }

    // MARK: the bounded hold (contract of 2026-12-01)

    private func assertHolds(_ segments: [String], output expected: String, exits: Bool, eof: Bool = true,
                             file: StaticString = #filePath, line: UInt = #line) {
        let model = EchoModel.runWithHolds(segments, eof: eof)
        XCTAssertEqual(String(decoding: model.output, as: UTF8.self).debugDescription, expected.debugDescription,
                       "segments \(segments.map(\.debugDescription))", file: file, line: line)
        XCTAssertEqual(model.exited, exits, "exit for segments \(segments.map(\.debugDescription))", file: file, line: line)
        XCTAssertEqual(model.contractViolations, [], file: file, line: line)
    }

    func testEveryPrefixReleasedThenCompletedCloses() {
        // A released prefix is still tracked: completing it is an exit line, and nothing more is echoed.
        for prefix in ["e", "ex", "exi", "exit", "exit\r"] {
            // By bytes: "\r\n" is one Character.
            let rest = String(decoding: Array("exit\r\n".utf8).dropFirst(prefix.utf8.count), as: UTF8.self)
            assertHolds([prefix, "<hold>", rest], output: prefix, exits: true, eof: false)
            assertHolds(["data\n" + prefix, "<hold>", rest, "after\n"], output: "data\n" + prefix, exits: true, eof: false)
        }
        assertHolds(["exit", "<hold>", "\n"], output: "exit", exits: true, eof: false)
    }

    func testEveryPrefixReleasedThenDivergingIsData() {
        for prefix in ["e", "ex", "exi", "exit", "exit\r"] {
            assertHolds([prefix, "<hold>", "Q\n"], output: prefix + "Q\n", exits: false)
            assertHolds(["a\n" + prefix, "<hold>", "\u{0}rest"], output: "a\n" + prefix + "\u{0}rest", exits: false)
        }
        // Diverging by a newline (`ex\n`): the line is data, and the next line may be the exit line.
        assertHolds(["ex", "<hold>", "\nexit\n"], output: "ex\n", exits: true)
    }

    func testReleasedPrefixFollowedByMorePrefixHoldsOnlyTheNewBytes() {
        var detector = ExitLineDetector()
        _ = Array("ex".utf8).withUnsafeBytes { detector.scan($0) }
        XCTAssertEqual(detector.releaseHeld(), 0..<2)
        XCTAssertEqual(detector.unreleased, 0)
        let verdict = Array("it".utf8).withUnsafeBytes { detector.scan($0) }
        XCTAssertEqual([verdict.release, verdict.echo], [0, 0])
        XCTAssertEqual(detector.unreleased, 2, "only `it` is newly held")
        XCTAssertEqual(detector.releaseHeld(), 2..<4, "the second release starts where the first ended")
        assertHolds(["ex", "<hold>", "it", "<hold>", "\r", "<hold>", "\n"], output: "exit\r", exits: true, eof: false)
        assertHolds(["ex", "<hold>", "it", "!"], output: "exit!", exits: false)
    }

    func testReleaseWithZeroHoldEchoesEverySegmentAtOnce() {
        // A zero hold is a release after every segment: everything is echoed as it arrives, and
        // the exit line still closes.
        var model = EchoModel()
        var echoedSoFar: [UInt8] = []
        for segment in ["ab\ne", "x", "i", "t", "\n", "never"] {
            model.feed(segment)
            model.release()
            if !model.exited { echoedSoFar += Array(segment.utf8) }
            XCTAssertEqual(model.output, echoedSoFar, "after \(segment.debugDescription)")
        }
        XCTAssertTrue(model.exited)
        XCTAssertEqual(model.contractViolations, [])
    }

    func testEOFAfterAReleaseEchoesNothingTwice() {
        for prefix in ["e", "ex", "exi", "exit", "exit\r"] {
            assertHolds([prefix, "<hold>"], output: prefix, exits: false)
            assertHolds(["x\n" + prefix, "<hold>"], output: "x\n" + prefix, exits: false)
        }
        assertHolds(["ex", "<hold>", "i"], output: "exi", exits: false)
        var detector = ExitLineDetector()
        _ = Array("exi".utf8).withUnsafeBytes { detector.scan($0) }
        _ = detector.releaseHeld()
        XCTAssertEqual(detector.finish(), 3..<3, "released bytes are not written again at EOF")
    }

    func testReleaseWithNothingHeldIsEmpty() {
        var detector = ExitLineDetector()
        XCTAssertEqual(detector.releaseHeld(), 0..<0)
        _ = Array("hello\n".utf8).withUnsafeBytes { detector.scan($0) }
        XCTAssertEqual(detector.releaseHeld(), 0..<0)
        assertHolds(["<hold>", "exit\n"], output: "", exits: true, eof: false)
    }

    func testEmptySegmentsChangeNothing() {
        assertEcho(["", "ex", "", "it", "", "\n", ""], output: "", exits: true)
        assertEcho(["", ""], output: "", exits: false)
    }

    // MARK: segmentation

    func testExitLineSplitAcrossWrites() {
        assertEcho(["ex", "it\n"], output: "", exits: true)
        assertEcho(["exit", "\r", "\n"], output: "", exits: true)
        assertEcho(["a\ne", "xit\r\n"], output: "a\n", exits: true)
        assertEcho(["a\n", "exit", "\n"], output: "a\n", exits: true)
        assertEcho(["ex", "its\n"], output: "exits\n", exits: false)
        assertEcho(["exit\r", "\r\n"], output: "exit\r\r\n", exits: false)
        assertEcho(["exit", " now\n"], output: "exit now\n", exits: false)
        assertEcho(["ex", "\nexit\n"], output: "ex\n", exits: true)
    }

    /// The case the classic server misses: `a\nexit\r\nb` split at every byte position.
    func testSplitAtEveryBytePosition() {
        let input = bytes("a\nexit\r\nb")
        for cut in 0...input.count {
            let model = EchoModel.run([Array(input[..<cut]), Array(input[cut...])])
            XCTAssertEqual(model.output, bytes("a\n"), "cut at \(cut)")
            XCTAssertTrue(model.exited, "cut at \(cut)")
            XCTAssertEqual(model.contractViolations, [], "cut at \(cut)")
        }
        // Every pair of cuts too (three segments).
        for first in 0...input.count {
            for second in first...input.count {
                let model = EchoModel.run([Array(input[..<first]), Array(input[first..<second]), Array(input[second...])])
                XCTAssertEqual(model.output, bytes("a\n"), "cuts at \(first), \(second)")
                XCTAssertTrue(model.exited, "cuts at \(first), \(second)")
            }
        }
    }

    func testOneByteAtATime() {
        let cases: [(String, String, Bool)] = [
            ("a\nexit\r\nb", "a\n", true),
            ("exit\n", "", true),
            ("exits\nexit now\nxexit\nexit\r\r\nexit", "exits\nexit now\nxexit\nexit\r\r\nexit", false),
            ("exit\rexit\n", "exit\rexit\n", false),
            ("hello\nexi\nexit\r\nbye\n", "hello\nexi\n", true),
        ]
        for (input, expected, exits) in cases {
            let model = EchoModel.run(bytes(input).map { [$0] })
            XCTAssertEqual(model.output, bytes(expected), "input \(input.debugDescription) one byte at a time")
            XCTAssertEqual(model.exited, exits, "input \(input.debugDescription) one byte at a time")
            XCTAssertEqual(model.contractViolations, [])
        }
    }

    /// Random streams over the bytes that matter, cut at random places, against `referenceEcho`.
    func testRandomStreamsAndCutsMatchTheReferenceRule() {
        var rng = SplitMix(seed: 0x5EED)
        let alphabet: [UInt8] = Array("exit\r\n".utf8) + [UInt8(ascii: "a"), 0, 0xFF, UInt8(ascii: "s")]
        for iteration in 0..<20_000 {
            let length = Int(rng.next() % 24)
            var input: [UInt8] = []
            // Bias towards exit-like runs so the interesting cases come up often.
            while input.count < length {
                if rng.next() % 3 == 0 {
                    input += bytes(["exit", "exit\r", "\nexit", "exi", "\r\n", "exit\r\n", "exit\n"][Int(rng.next() % 7)])
                } else {
                    input.append(alphabet[Int(rng.next() % UInt64(alphabet.count))])
                }
            }
            var segments: [[UInt8]] = []
            var start = 0
            while start < input.count {
                let size = 1 + Int(rng.next() % UInt64(min(6, input.count - start)))
                segments.append(Array(input[start..<(start + size)]))
                start += size
            }
            let model = EchoModel.run(segments)
            let (expected, exits) = referenceEcho(input)
            if model.output != expected || model.exited != exits || !model.contractViolations.isEmpty {
                XCTFail("iteration \(iteration): segments \(segments) gave \(model.output) exit=\(model.exited), expected \(expected) exit=\(exits) \(model.contractViolations)")
                return
            }
        }
    }
}

/// A tiny deterministic generator, so a failure reproduces.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
