import Foundation
import Glibc
import TestSupport
import XCTest

/// resp-server's memory bounds, through the binary: `--maxmemory` on the keys, checked before a
/// write runs, and `--maxmemory-clients` on all clients' buffers together.
final class RespMemoryTests: XCTestCase {
    /// 60 values of 1 MiB in one `MSET`: 60 MiB of input.
    private func bigMset() -> [UInt8] {
        let value = [UInt8](repeating: 0x6D, count: 1 << 20)
        var arguments: [[UInt8]] = [bytes("MSET")]
        for i in 0..<60 { arguments += [bytes("big\(i)"), value] }
        return multibulk(arguments)
    }

    /// Redis's rule (performCommand's OOM check in server.c): a write that would take the keys
    /// past `--maxmemory` is refused before it runs. Checked after, the 60 MB `MSET` was stored
    /// whole against a 10 MB limit.
    func testMaxmemoryRefusesA60MBMsetWholeAndTheKeysStayAsTheyWere() throws {
        let server = try ServerUnderTest.resp(["--maxmemory", "10mb"])
        let socket = try TestSocket.connect(port: server.port)
        try socket.send(multibulk("SET", "kept", "1"))
        XCTAssertEqual(try socket.receiveString(exactly: 5), "+OK\r\n")
        try socket.send(bigMset(), timeout: 30)
        let oom = "-OOM command not allowed when used memory > 'maxmemory'.\r\n"
        XCTAssertEqual(try socket.receiveString(exactly: oom.utf8.count, timeout: 30), oom)
        try socket.send(multibulk("DBSIZE") + multibulk("EXISTS", "big0", "big59") + multibulk("GET", "kept"))
        XCTAssertEqual(try socket.receiveString(exactly: 15), ":1\r\n:0\r\n$1\r\n1\r\n", "the refused MSET changed nothing")
    }

    /// The same through the unmodified `redis-cli --pipe`, which counts the error reply.
    func testMaxmemoryRefusesA60MBMsetFromRedisCliPipe() throws {
        let server = try ServerUnderTest.resp(["--maxmemory", "10mb"])
        XCTAssertEqual(try Tools.cli(server.port, ["SET", "kept", "1"]), "OK\n")
        let result = try Tools.run("redis-cli", ["-h", "127.0.0.1", "-p", "\(server.port)", "--pipe"], input: bigMset(), timeout: 60)
        let output = String(decoding: result.stdout, as: UTF8.self)
        XCTAssertTrue(output.contains("errors: 1, replies: 1"), output + result.stderr)
        XCTAssertEqual(try Tools.cli(server.port, ["DBSIZE"]), "1\n")
        XCTAssertEqual(try Tools.cli(server.port, ["EXISTS", "big0"]), "0\n")
    }
}
