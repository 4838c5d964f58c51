import Foundation
import Glibc
import TestSupport
import XCTest

/// resp-server driven by the unmodified redis-cli and redis-benchmark, and compared byte for
/// byte with redis-server itself.
final class RedisToolsTests: XCTestCase {
    func testPingThroughRedisCli() throws {
        let server = try ServerUnderTest.resp()
        XCTAssertEqual(try Tools.cli(server.port, ["PING"]), "PONG\n")
        XCTAssertEqual(try Tools.cli(server.port, ["PING", "hello"]), "hello\n")
    }

    func testSetGetRoundTripOfValueWithNULAndCRLF() throws {
        let server = try ServerUnderTest.resp()
        let value: [UInt8] = [0x61, 0x00, 0x62, 0x0D, 0x0A, 0x63, 0x0D, 0x0A, 0xFF, 0x00]
        // -x: the last argument is stdin, read as is (binary safe).
        XCTAssertEqual(try Tools.cli(server.port, ["-x", "SET", "bin"], input: value), "OK\n")
        let got = try Tools.run("redis-cli", ["-h", "127.0.0.1", "-p", "\(server.port)", "--raw", "GET", "bin"])
        XCTAssertEqual(got.stdout, value + [0x0A], "--raw prints the value's bytes, then a newline")
        XCTAssertEqual(try Tools.cli(server.port, ["STRLEN", "bin"]).hasPrefix("ERR unknown command 'STRLEN'"), true)
    }

    func testMissingKeyIsNil() throws {
        let server = try ServerUnderTest.resp()
        XCTAssertEqual(try Tools.cli(server.port, ["--no-raw", "GET", "no-such-key"]), "(nil)\n")
    }

    func testIncrGivesAnIntegerReply() throws {
        let server = try ServerUnderTest.resp()
        XCTAssertEqual(try Tools.cli(server.port, ["--no-raw", "INCR", "counter"]), "(integer) 1\n")
        XCTAssertEqual(try Tools.cli(server.port, ["--no-raw", "INCRBY", "counter", "41"]), "(integer) 42\n")
        XCTAssertEqual(try Tools.cli(server.port, ["--no-raw", "SET", "word", "abc"]), "OK\n")
        XCTAssertEqual(try Tools.cli(server.port, ["--no-raw", "INCR", "word"]), "(error) ERR value is not an integer or out of range\n")
    }

    func testUnknownCommandGetsRedisErrorText() throws {
        let server = try ServerUnderTest.resp()
        XCTAssertEqual(try Tools.cli(server.port, ["--no-raw", "FOO", "bar", "baz"]),
                       "(error) ERR unknown command 'FOO', with args beginning with: 'bar' 'baz' \n")
    }

    func testPipeMassInsertionOf100000KeysThenDbsize() throws {
        let server = try ServerUnderTest.resp()
        var input: [UInt8] = []
        input.reserveCapacity(100_000 * 48)
        for i in 0..<100_000 {
            let key = "key:\(i)", value = "value:\(i)"
            input += Array("*3\r\n$3\r\nSET\r\n$\(key.utf8.count)\r\n\(key)\r\n$\(value.utf8.count)\r\n\(value)\r\n".utf8)
        }
        let result = try Tools.run("redis-cli", ["-h", "127.0.0.1", "-p", "\(server.port)", "--pipe"], input: input, timeout: 120)
        let output = String(decoding: result.stdout, as: UTF8.self)
        XCTAssertEqual(result.status, 0, output + result.stderr)
        XCTAssertTrue(output.contains("errors: 0, replies: 100000"), output)
        XCTAssertEqual(try Tools.cli(server.port, ["DBSIZE"]), "100000\n")
        XCTAssertEqual(try Tools.cli(server.port, ["GET", "key:99999"]), "value:99999\n")
    }

    func testRedisBenchmarkSmokeReportsEveryRateWithoutErrors() throws {
        let server = try ServerUnderTest.resp()
        let result = try Tools.run("redis-benchmark", ["-h", "127.0.0.1", "-p", "\(server.port)",
                                                       "-t", "ping_inline,ping_mbulk,set,get,incr",
                                                       "-n", "20000", "-c", "50", "-P", "16", "-q"], timeout: 120)
        let output = String(decoding: result.stdout, as: UTF8.self)
        XCTAssertEqual(result.status, 0, output + result.stderr)
        // -q prints each test's final line after carriage-return progress lines.
        let finals = output.split(whereSeparator: { $0 == "\n" || $0 == "\r" }).filter { $0.contains("requests per second") && !$0.contains("rps=") }
        for test in ["PING_INLINE", "PING_MBULK", "SET", "GET", "INCR"] {
            let line = finals.first { $0.trimmingCharacters(in: .whitespaces).hasPrefix(test + ":") }
            XCTAssertNotNil(line, "no rate for \(test) in: \(output)")
            if let line, let rate = Double(line.split(separator: " ").dropFirst().first ?? "") {
                XCTAssertGreaterThan(rate, 0, String(line))
            }
        }
        for bad in ["ERR", "error", "Error", "WARNING"] {
            XCTAssertFalse(output.contains(bad) || result.stderr.contains(bad), "\(bad) in: \(output) \(result.stderr)")
        }
    }

    /// The same requests to resp-server and to redis-server get the same bytes back. The
    /// deliberate differences (COMMAND and CONFIG GET answer little, the 1M argument cap, the
    /// stricter framing) are left out.
    func testRepliesMatchRedisServerByteForByte() throws {
        let redis = try ServerUnderTest.redis()
        let ours = try ServerUnderTest.resp()
        let cases: [[UInt8]] = [
            multibulk("PING"), multibulk("ping", "hello"), multibulk("PING", "a", "b"), multibulk("ECHO"), multibulk("echo", "x"),
            multibulk("SET", "k", "v") + multibulk("GET", "k") + multibulk("GET", "nokey"), multibulk("SET", "k"),
            multibulk("SET", "k", "v", "NX"), multibulk("SET", "k", "v", "XX", "NX"), multibulk("SET", "k", "v", "FOO"),
            multibulk("SET", "k2", "v", "XX"), multibulk("SET", "k", "new", "GET"),
            multibulk("SET", "n", "10") + multibulk("INCR", "n") + multibulk("DECR", "n") + multibulk("INCRBY", "n", "5")
                + multibulk("INCRBY", "n", "x") + multibulk("DECRBY", "n", "3"),
            multibulk("SET", "s", "abc") + multibulk("INCR", "s"), multibulk("SET", "big", "9223372036854775807") + multibulk("INCR", "big"),
            multibulk("INCR"), multibulk("INCRBY", "n"), multibulk("SET", "z", "01") + multibulk("INCR", "z"),
            multibulk("DECRBY", "n", "-9223372036854775808"),
            multibulk("DEL", "k", "n", "zz") + multibulk("EXISTS", "k", "s", "s"), multibulk("DEL"), multibulk("EXISTS"),
            multibulk("MSET", "a", "1", "b", "2") + multibulk("MGET", "a", "b", "c"), multibulk("MSET", "a"), multibulk("MSET", "a", "1", "b"),
            multibulk("MGET"), multibulk("DBSIZE"), multibulk("DBSIZE", "x"), multibulk("FLUSHALL", "x"), multibulk("FLUSHALL", "ASYNC", "x"),
            multibulk("FOO"), multibulk("foo", "a", "b"), multibulk("FOO", String(repeating: "a", count: 200)),
            multibulk([bytes("FOO"), bytes("a\r\nb"), [0x63, 0x00, 0x64]]), multibulk([[0x46, 0x00, 0x4F]]),
            multibulk("CONFIG"), multibulk("CONFIG", "GET"), multibulk("CONFIG", "FOO"), multibulk("CONFIG", "GET", "save"),
            multibulk("CLIENT"), multibulk("CLIENT", "SETNAME"), multibulk("CLIENT", "SETNAME", "a b"), multibulk("CLIENT", "SETNAME", "ok"),
            multibulk("CLIENT", "FOO"), multibulk("COMMAND", "FOO"), multibulk("COMMAND", "COUNT", "x"),
            bytes("PING\r\n"), bytes("ping hello\n"), bytes("set \"a b\" 'c d'\r\nget \"a b\"\r\n"), bytes("echo \"\\x41\\n\\q\"\r\n"),
            bytes("echo \"abc\r\n"), bytes("echo \"a\"b\r\n"), bytes("\r\n\r\nPING\r\n"), bytes("*0\r\n*-1\r\nPING\r\n"), bytes("*abc\r\n"),
            bytes("*3\r\n$3\r\nSET\r\n$x\r\n"), bytes("*1\r\n+PING\r\n"), bytes("*1\r\n$-1\r\n"), bytes("QUIT\r\nPING\r\n"),
            bytes("PING\r\n") + multibulk("QUIT"),
            multibulk("FLUSHALL"),
        ]
        for request in cases {
            let expected = try exchange(redis.port, request)
            let got = try exchange(ours.port, request)
            XCTAssertEqual(TestSocket.preview(got), TestSocket.preview(expected), "for \(TestSocket.preview(request))")
        }
    }

    // MARK: limits, over a raw socket

    func testProtocolErrorsAreAnsweredThenTheConnectionCloses() throws {
        let server = try ServerUnderTest.resp(["--max-bulk", "1kb"])
        let cases: [([UInt8], String)] = [
            (multibulk("PING") + bytes("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1025\r\n"), "+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"),
            (bytes("*\(1024 * 1024 + 1)\r\n"), "-ERR Protocol error: invalid multibulk length\r\n"),
            (bytes("*1\r\n$x\r\n"), "-ERR Protocol error: invalid bulk length\r\n"),
            (bytes("ECHO ") + [UInt8](repeating: 0x61, count: 65 * 1024) + bytes("\r\n"), "-ERR Protocol error: too big inline request\r\n"),
            (bytes("*1\r\n$") + [UInt8](repeating: 0x31, count: 65 * 1024), "-ERR Protocol error: too big bulk count string\r\n"),
        ]
        for (request, reply) in cases {
            let socket = try TestSocket.connect(port: server.port)
            try socket.send(request)
            let (got, end) = socket.receiveUntilEnd(timeout: 10)
            XCTAssertEqual(String(decoding: got, as: UTF8.self), reply)
            XCTAssertEqual(end, .eof, "the server closes after a protocol error")
        }
    }

    func testMaxmemoryRefusesWritesWithRedisOOMError() throws {
        let server = try ServerUnderTest.resp(["--maxmemory", "1mb"])
        let socket = try TestSocket.connect(port: server.port)
        let value = [UInt8](repeating: 0x76, count: 700 * 1024)
        try socket.send(multibulk([bytes("SET"), bytes("a"), value]))
        XCTAssertEqual(try socket.receiveString(exactly: 5), "+OK\r\n")
        // Checked before the write: a second 700 KiB value would take the keys past 1 MiB.
        let oom = "-OOM command not allowed when used memory > 'maxmemory'.\r\n"
        for refused in [multibulk([bytes("SET"), bytes("b"), value]), multibulk([bytes("MSET"), bytes("d"), bytes("1"), bytes("e"), value])] {
            try socket.send(refused)
            XCTAssertEqual(try socket.receiveString(exactly: oom.utf8.count), oom)
        }
        // Small writes still fit, and overwriting a value in place adds nothing.
        try socket.send(multibulk("SET", "c", "x") + multibulk("INCR", "n") + multibulk([bytes("SET"), bytes("a"), value]))
        XCTAssertEqual(try socket.receiveString(exactly: 14), "+OK\r\n:1\r\n+OK\r\n")
        try socket.send(multibulk("DEL", "a") + multibulk([bytes("SET"), bytes("b"), value]) + multibulk("DBSIZE") + multibulk("EXISTS", "d", "e"))
        XCTAssertEqual(try socket.receiveString(exactly: 17), ":1\r\n+OK\r\n:3\r\n:0\r\n",
                       "reads and deletes still work; a delete makes room; the refused MSET stored nothing")
    }

    /// A client pipelines GETs of a 256 KiB value and does not read: the server stops reading
    /// and answering it (memory stays bounded), then serves every request in order once it reads.
    func testNeverReadingPipelinerIsBoundedByBackpressure() throws {
        let server = try ServerUnderTest.resp()
        let socket = try TestSocket.connect(port: server.port)
        let value = testPattern(count: 256 * 1024)
        try socket.send(multibulk([bytes("SET"), bytes("big"), value]))
        XCTAssertEqual(try socket.receiveString(exactly: 5), "+OK\r\n")
        let before = server.residentKiB
        // 1,000 GETs: 256 MiB of replies (a hundred times the socket buffers), 16 KB of requests.
        let count = 1000
        var requests: [UInt8] = []
        for _ in 0..<count { requests += multibulk("GET", "big") }
        try socket.send(requests, timeout: 20)
        Thread.sleep(forTimeInterval: 1.5)
        let during = server.residentKiB
        XCTAssertLessThan(during - before, 32 * 1024, "resident memory grew by \(during - before) KiB while the client did not read")
        // Now read everything: every reply, in order, complete.
        let header = Array("$\(value.count)\r\n".utf8)
        for i in 0..<count {
            let reply = try socket.receive(exactly: header.count + value.count + 2, timeout: 20)
            let same = reply.withUnsafeBytes { r in
                value.withUnsafeBytes { v in
                    header.withUnsafeBytes { h in memcmp(r.baseAddress!, h.baseAddress!, h.count) == 0 }
                        && memcmp(r.baseAddress! + header.count, v.baseAddress!, v.count) == 0
                }
            }
            guard same else { return XCTFail("reply \(i) is wrong") }
        }
        try socket.send(multibulk("PING"))
        XCTAssertEqual(try socket.receiveString(exactly: 7), "+PONG\r\n")
    }

    func testQuitRepliesOKThenCloses() throws {
        let server = try ServerUnderTest.resp()
        let socket = try TestSocket.connect(port: server.port)
        try socket.send(multibulk("PING") + multibulk("QUIT") + multibulk("PING"))
        let (got, end) = socket.receiveUntilEnd(timeout: 5)
        XCTAssertEqual(String(decoding: got, as: UTF8.self), "+PONG\r\n+OK\r\n")
        XCTAssertEqual(end, .eof)
    }

    func testReactorsShareOneKeyspace() throws {
        let server = try ServerUnderTest.resp(["--reactors", "2"])
        for i in 0..<20 { XCTAssertEqual(try Tools.cli(server.port, ["SET", "k\(i)", "v\(i)"]), "OK\n") }
        for i in 0..<20 { XCTAssertEqual(try Tools.cli(server.port, ["GET", "k\(i)"]), "v\(i)\n", "every connection sees every key") }
        XCTAssertEqual(try Tools.cli(server.port, ["DBSIZE"]), "20\n")
    }

    func testSigtermStopsGracefully() throws {
        let server = try ServerUnderTest.resp()
        XCTAssertEqual(try Tools.cli(server.port, ["PING"]), "PONG\n")
        server.signal(SIGTERM)
        XCTAssertEqual(server.waitForExit(), 0, server.log)
    }

    /// Sends `request` and then `ECHO <marker>` on a new connection, and reads replies until the
    /// marker's (left out of the result) or EOF (shown as `<EOF>`).
    private func exchange(_ port: Int, _ request: [UInt8]) throws -> [UInt8] {
        let marker = "end-of-exchange-7f3a"
        let markerReply = bytes("$\(marker.utf8.count)\r\n\(marker)\r\n")
        let socket = try TestSocket.connect(port: port)
        try socket.send(request + multibulk("ECHO", marker))
        var out: [UInt8] = []
        let deadline = monotonicSeconds() + 10
        while monotonicSeconds() < deadline {
            if out.count >= markerReply.count && out.suffix(markerReply.count).elementsEqual(markerReply) {
                return Array(out.dropLast(markerReply.count))
            }
            if socket.staysQuiet(for: 0.05) { continue }
            guard let chunk = try socket.receiveNow() else { continue }
            if chunk.isEmpty { return out + bytes("<EOF>") }
            out += chunk
        }
        throw Failure("no end of the replies to \(TestSocket.preview(request)) within 10 s: \(TestSocket.preview(out))")
    }
}
