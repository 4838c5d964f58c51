import RESP
import XCTest

/// What the framer handed on for a stream: each request's arguments, or the error that ended it.
enum Parsed: Equatable, CustomStringConvertible {
    case request([[UInt8]])
    case failure(ProtocolError)

    var description: String {
        switch self {
        case .request(let args): return "[" + args.map { "\"" + String(decoding: $0, as: UTF8.self) + "\"" }.joined(separator: " ") + "]"
        case .failure(let error): return "failure(\(error.message))"
        }
    }
}

/// Feeds `chunks` to one framer, as the reads of one connection.
func parse(_ chunks: [[UInt8]], limits: RequestLimits = RequestLimits()) -> (frames: [Parsed], stashed: Int) {
    let scratch = ParserScratch(limits: limits)
    var framer = RequestFramer()
    var out: [Parsed] = []
    var closed = false
    for chunk in chunks where !closed {
        let result = chunk.withUnsafeBytes { bytes in
            framer.feed(bytes, scratch: scratch) { frame in
                switch frame {
                case .request(let r): out.append(.request((0..<r.count).map { Array(r[$0]) }))
                case .failure(let e): out.append(.failure(e))
                }
                return .continue
            }
        }
        if result == .closed { closed = true }
    }
    return (out, framer.stashedBytes)
}

/// `stream` cut at `cuts` (sorted offsets).
func split(_ stream: [UInt8], at cuts: [Int]) -> [[UInt8]] {
    var chunks: [[UInt8]] = []
    var start = 0
    for cut in cuts + [stream.count] {
        chunks.append(Array(stream[start..<cut]))
        start = cut
    }
    return chunks
}

func multibulk(_ args: [[UInt8]]) -> [UInt8] {
    var out = Array("*\(args.count)\r\n".utf8)
    for arg in args { out += Array("$\(arg.count)\r\n".utf8) + arg + Array("\r\n".utf8) }
    return out
}

func multibulk(_ args: String...) -> [UInt8] { multibulk(args.map { Array($0.utf8) }) }

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

final class RequestParserTests: XCTestCase {
    /// Streams and what they must parse to, however they are split.
    static let binary: [UInt8] = [0x00, 0x0D, 0x0A, 0xFF, 0x24, 0x33, 0x0D, 0x0A, 0x2A, 0x0D]
    static let cases: [(name: String, stream: [UInt8], expected: [Parsed])] = [
        ("multibulk", multibulk("SET", "key", "value"), [.request([bytes("SET"), bytes("key"), bytes("value")])]),
        ("inline", bytes("PING\r\n"), [.request([bytes("PING")])]),
        ("inline LF only", bytes("set a b\n"), [.request([bytes("set"), bytes("a"), bytes("b")])]),
        ("binary value with CR LF and NUL inside", multibulk([bytes("SET"), bytes("k"), binary]),
         [.request([bytes("SET"), bytes("k"), binary])]),
        ("empty bulk", multibulk([bytes("SET"), bytes("k"), []]), [.request([bytes("SET"), bytes("k"), []])]),
        ("pipelined mix", multibulk("PING") + bytes("GET a\r\n") + multibulk("INCR", "n") + bytes("\r\n") + bytes("*0\r\n")
            + bytes("*-1\r\n") + multibulk("ECHO", "x"),
         [.request([bytes("PING")]), .request([bytes("GET"), bytes("a")]), .request([bytes("INCR"), bytes("n")]),
          .request([bytes("ECHO"), bytes("x")])]),
        ("inline quotes", bytes("set \"a b\" 'c \\' d' \"\\x41\\n\\q\" \"\"\r\n"),
         [.request([bytes("set"), bytes("a b"), bytes("c ' d"), [0x41, 0x0A, 0x71], []])]),
        ("inline blanks", bytes("  \t GET\t\tk   \r\n"), [.request([bytes("GET"), bytes("k")])]),
        ("requests after an error are not parsed", multibulk("PING") + bytes("*x\r\n") + multibulk("PING"),
         [.request([bytes("PING")]), .failure(.invalidMultibulkLength)]),
        ("expected dollar", bytes("*1\r\n+PING\r\n"), [.failure(.expectedDollar(UInt8(ascii: "+")))]),
        ("negative bulk length", bytes("*1\r\n$-1\r\n"), [.failure(.invalidBulkLength)]),
        ("bulk length with a sign", bytes("*1\r\n$+4\r\nPING\r\n"), [.failure(.invalidBulkLength)]),
        ("bulk length with a leading zero", bytes("*1\r\n$04\r\nPING\r\n"), [.failure(.invalidBulkLength)]),
        ("bulk length not a number", bytes("*1\r\n$four\r\n"), [.failure(.invalidBulkLength)]),
        ("empty bulk length", bytes("*1\r\n$\r\n"), [.failure(.invalidBulkLength)]),
        ("multibulk count not a number", bytes("*1x\r\n"), [.failure(.invalidMultibulkLength)]),
        ("multibulk count overflowing Int64", bytes("*99999999999999999999\r\n"), [.failure(.invalidMultibulkLength)]),
        ("CR without LF after a header", bytes("*1\rx$4\r\nPING\r\n"), [.failure(.missingLineFeed)]),
        ("bulk data without CR LF after it", bytes("*1\r\n$4\r\nPINGxx"), [.failure(.missingBulkTerminator)]),
        ("unbalanced double quote", bytes("echo \"abc\r\n"), [.failure(.unbalancedQuotes)]),
        ("closing quote not followed by a blank", bytes("echo \"a\"b\r\n"), [.failure(.unbalancedQuotes)]),
        ("unbalanced single quote", bytes("echo 'abc\r\n"), [.failure(.unbalancedQuotes)]),
        ("NUL in an inline request", bytes("echo a") + [0] + bytes("b\r\n"), [.failure(.nulInInline)]),
    ]

    func testEveryRequestSplitAtEveryByte() {
        for c in Self.cases {
            XCTAssertEqual(parse([c.stream]).frames, c.expected, "\(c.name), in one read")
            for cut in 0...c.stream.count {
                XCTAssertEqual(parse(split(c.stream, at: [cut])).frames, c.expected, "\(c.name), split at byte \(cut)")
            }
            XCTAssertEqual(parse(c.stream.map { [$0] }).frames, c.expected, "\(c.name), one byte per read")
        }
    }

    func testEveryPairOfSplitsOfAPipelinedStream() {
        let stream = multibulk([bytes("SET"), bytes("k"), Self.binary]) + bytes("GET k\r\n") + multibulk("DEL", "k")
        let expected: [Parsed] = [.request([bytes("SET"), bytes("k"), Self.binary]), .request([bytes("GET"), bytes("k")]),
                                  .request([bytes("DEL"), bytes("k")])]
        for a in 0...stream.count {
            for b in a...stream.count {
                XCTAssertEqual(parse(split(stream, at: [a, b])).frames, expected, "split at \(a) and \(b)")
            }
        }
    }

    func testCompletedRequestLeavesNothingStashed() {
        let stream = multibulk("SET", "key", "value")
        let (frames, stashed) = parse(split(stream, at: [7, 15]))
        XCTAssertEqual(frames.count, 1)
        XCTAssertEqual(stashed, 0, "a connection between requests keeps no bytes")
        XCTAssertEqual(parse(split(stream, at: [7])).stashed, 0)
        XCTAssertEqual(parse([Array(stream.prefix(20))]).stashed, 20, "the unfinished request is kept")
    }

    // MARK: limits

    func testBulkLongerThanMaxBulkIsRefusedBeforeItsData() {
        let limits = RequestLimits(maxBulk: 1024)
        XCTAssertEqual(parse([multibulk([bytes("SET"), bytes("k"), [UInt8](repeating: 7, count: 1024)])], limits: limits).frames.count, 1)
        let header = bytes("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1025\r\n")
        XCTAssertEqual(parse([header], limits: limits).frames, [.failure(.invalidBulkLength)],
                       "refused at the header: the 1025 bytes never have to arrive")
        let defaults = bytes("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$\(1024 * 1024 + 1)\r\n")
        XCTAssertEqual(parse([defaults]).frames, [.failure(.invalidBulkLength)], "default --max-bulk is 1 MiB")
    }

    func testMultibulkCountOverOneMillionIsRefused() {
        XCTAssertEqual(parse([bytes("*\(1024 * 1024 + 1)\r\n")]).frames, [.failure(.invalidMultibulkLength)])
        let (frames, stashed) = parse([bytes("*\(1024 * 1024)\r\n")])
        XCTAssertEqual(frames, [], "1024 * 1024 arguments are allowed")
        XCTAssertGreaterThan(stashed, 0)
    }

    func testRequestLargerThanMaxRequestIsRefused() {
        let limits = RequestLimits(maxBulk: 1000, maxRequest: 4096)
        let arg = [UInt8](repeating: 0x61, count: 1000)
        XCTAssertEqual(parse([multibulk([arg, arg, arg, arg])], limits: limits).frames.count, 1)
        XCTAssertEqual(parse([multibulk([arg, arg, arg, arg, arg])], limits: limits).frames, [.failure(.requestTooLarge(limit: 4096))])
    }

    func testInlineRequestOver64KiBIsRefusedHoweverItArrives() {
        let limit = RequestLimits.maxLine
        let longest = bytes("ECHO ") + [UInt8](repeating: 0x61, count: limit - 5)
        let tooLong = longest + [0x61]
        for terminator in [bytes("\r\n"), bytes("\n")] {
            XCTAssertEqual(parse([longest + terminator]).frames.count, 1, "a line of exactly 64 KiB is allowed")
            let stream = tooLong + terminator
            for cut in [0, 1, limit - 1, limit, limit + 1, stream.count - 1] {
                XCTAssertEqual(parse(split(stream, at: [cut])).frames, [.failure(.inlineTooLong)], "split at \(cut)")
            }
        }
        // No newline at all: refused as soon as more than 64 KiB (+ CR LF) is buffered.
        XCTAssertEqual(parse([tooLong + [0x61]]).frames, [.failure(.inlineTooLong)])
        XCTAssertEqual(parse([Array(tooLong.prefix(limit))]).frames, [], "64 KiB without a newline yet: wait")
    }

    func testHeaderLinesOver64KiBAreRefused() {
        let long = [UInt8](repeating: 0x31, count: RequestLimits.maxLine + 1)
        XCTAssertEqual(parse([bytes("*") + long]).frames, [.failure(.multibulkCountTooLong)])
        XCTAssertEqual(parse([bytes("*1\r\n$") + long]).frames, [.failure(.bulkCountTooLong)])
        XCTAssertEqual(parse(split(bytes("*1\r\n$") + long, at: [3, 5, 40_000])).frames, [.failure(.bulkCountTooLong)])
    }

    func testErrorTextsAreRedisOwn() {
        XCTAssertEqual(ProtocolError.invalidMultibulkLength.message, "Protocol error: invalid multibulk length")
        XCTAssertEqual(ProtocolError.invalidBulkLength.message, "Protocol error: invalid bulk length")
        XCTAssertEqual(ProtocolError.inlineTooLong.message, "Protocol error: too big inline request")
        XCTAssertEqual(ProtocolError.multibulkCountTooLong.message, "Protocol error: too big mbulk count string")
        XCTAssertEqual(ProtocolError.bulkCountTooLong.message, "Protocol error: too big bulk count string")
        XCTAssertEqual(ProtocolError.expectedDollar(UInt8(ascii: "+")).message, "Protocol error: expected '$', got '+'")
        XCTAssertEqual(ProtocolError.unbalancedQuotes.message, "Protocol error: unbalanced quotes in request")
    }

    // MARK: stopping and resuming (a peer behind on its replies)

    func testStopKeepsTheRestAndResumeGoesOnInOrder() {
        let stream = multibulk("INCR", "1") + bytes("INCR 2\r\n") + multibulk("INCR", "3") + Array(multibulk("INCR", "4").prefix(9))
        let scratch = ParserScratch(limits: RequestLimits())
        var framer = RequestFramer()
        var seen: [String] = []
        let first = stream.withUnsafeBytes { framer.feed($0, scratch: scratch) { frame in
            if case .request(let r) = frame { seen.append(String(decoding: r[1], as: UTF8.self)) }
            return .stop
        } }
        XCTAssertEqual(first, .stopped)
        XCTAssertEqual(seen, ["1"])
        let second = framer.resume(scratch: scratch) { frame in
            if case .request(let r) = frame { seen.append(String(decoding: r[1], as: UTF8.self)) }
            return .continue
        }
        XCTAssertEqual(second, .needMore)
        XCTAssertEqual(seen, ["1", "2", "3"])
        let rest = Array(multibulk("INCR", "4").dropFirst(9))
        _ = rest.withUnsafeBytes { framer.feed($0, scratch: scratch) { frame in
            if case .request(let r) = frame { seen.append(String(decoding: r[1], as: UTF8.self)) }
            return .continue
        } }
        XCTAssertEqual(seen, ["1", "2", "3", "4"])
        XCTAssertEqual(framer.stashedBytes, 0)
    }

    func testManyArgumentsArrivingInManyReads() {
        // 100,000 arguments in reads of 1,000 bytes: every argument parsed once, in order.
        let args = (0..<100_000).map { bytes("k\($0)") }
        let stream = multibulk([bytes("DEL")] + args)
        let cuts = Array(stride(from: 1000, to: stream.count, by: 1000))
        let (frames, stashed) = parse(split(stream, at: cuts))
        XCTAssertEqual(frames, [.request([bytes("DEL")] + args)])
        XCTAssertEqual(stashed, 0)
    }

    func testIntegersFollowRedisRules() {
        func p(_ s: String) -> Int64? { Array(s.utf8).withUnsafeBytes { Integers.parse($0) } }
        XCTAssertEqual(p("0"), 0)
        XCTAssertEqual(p("-1"), -1)
        XCTAssertEqual(p("9223372036854775807"), Int64.max)
        XCTAssertEqual(p("-9223372036854775808"), Int64.min)
        for bad in ["", "-", "-0", "01", "+1", " 1", "1 ", "9223372036854775808", "1e3", "abc", "123456789012345678901"] {
            XCTAssertNil(p(bad), bad)
        }
    }
}
