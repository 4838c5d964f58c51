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

    /// 20 clients that never read each ask for `MGET` of a 1 MiB value 60 times: 60 MiB of
    /// replies each, under --max-output (64 MiB), 1.2 GiB together. With `--maxmemory-clients
    /// 32mb` each is closed as its replies pass the bound (alone it is the largest), so the
    /// server's peak RSS stays within the bound plus slack, and a fresh client is served.
    /// Without the bound the peak grew by over 1 GiB.
    func testMaxmemoryClientsClosesClientsWithTheLargestOutputAndBoundsTheServer() throws {
        let server = try ServerUnderTest.resp(["--maxmemory-clients", "32mb"])
        let setup = try TestSocket.connect(port: server.port)
        try setup.send(multibulk([bytes("SET"), bytes("big"), [UInt8](repeating: 0x62, count: 1 << 20)]))
        XCTAssertEqual(try setup.receiveString(exactly: 5), "+OK\r\n")
        let baseline = server.peakResidentKiB
        let mget = multibulk([bytes("MGET")] + Array(repeating: bytes("big"), count: 60))
        var clients: [TestSocket] = []
        for _ in 0..<20 {
            let client = try TestSocket.connect(port: server.port, receiveBuffer: 4096)
            try client.send(mget)
            clients.append(client)
        }
        // Each is closed: it reads what the kernel held for it, then the end (EOF or reset).
        for (i, client) in clients.enumerated() {
            let (got, end) = client.receiveUntilEnd(timeout: 10, limit: 64 << 20)
            XCTAssertNotEqual(end, .timeout, "client \(i) was not closed; it got \(got.count) bytes")
            XCTAssertLessThan(got.count, 60 << 20, "client \(i) got every reply")
        }
        let growth = server.peakResidentKiB - baseline
        print("--maxmemory-clients 32mb, 20 clients x MGET 60 x 1 MiB: peak RSS grew by \(growth / 1024) MiB")
        XCTAssertLessThan(growth, (32 + 16) * 1024, "peak RSS grew by \(growth) KiB: more than the bound (32 MiB) and 16 MiB of slack")
        let fresh = try TestSocket.connect(port: server.port)
        let began = monotonicSeconds()
        try fresh.send(multibulk("PING"))
        XCTAssertEqual(try fresh.receiveString(exactly: 7, timeout: 1), "+PONG\r\n")
        XCTAssertLessThan(monotonicSeconds() - began, 1)
        server.signal(SIGTERM)
        XCTAssertEqual(server.waitForExit(timeout: 5), 0)
        let log = server.log
        XCTAssertTrue(log.contains("evicting client"), log.suffix(2000).description)
        XCTAssertTrue(log.contains("evicted-clients=20"), "every client was evicted and counted: \(log.suffix(2000))")
    }

    /// Query buffers count too: 20 clients each send the first 8 MiB of a 60 MiB `MSET` and
    /// stop (160 MiB of unfinished requests, each under --max-request). With
    /// `--maxmemory-clients 32mb` at most four of them fit; the others are closed, the largest
    /// first, and the server's peak RSS stays within the bound plus slack.
    func testMaxmemoryClientsCountsUnfinishedRequests() throws {
        let server = try ServerUnderTest.resp(["--maxmemory-clients", "32mb"])
        let baseline = server.peakResidentKiB
        let partial = Array(bigMset().prefix(8 << 20))
        var clients: [TestSocket] = []
        for _ in 0..<20 {
            let client = try TestSocket.connect(port: server.port)
            // An evicted client's send may fail part way (reset): that is the point.
            _ = try? client.send(partial, timeout: 10)
            clients.append(client)
        }
        var closed = 0
        for client in clients where client.receiveUntilEnd(timeout: 1).end != .timeout { closed += 1 }
        XCTAssertGreaterThanOrEqual(closed, 16, "only \(closed) of 20 clients holding 8 MiB each were closed under a 32 MiB bound")
        let growth = server.peakResidentKiB - baseline
        print("--maxmemory-clients 32mb, 20 clients x 8 MiB of an unfinished MSET: peak RSS grew by \(growth / 1024) MiB, \(closed) closed")
        XCTAssertLessThan(growth, (32 + 16) * 1024, "peak RSS grew by \(growth) KiB: more than the bound (32 MiB) and 16 MiB of slack")
        let fresh = try TestSocket.connect(port: server.port)
        try fresh.send(multibulk("PING"))
        XCTAssertEqual(try fresh.receiveString(exactly: 7, timeout: 1), "+PONG\r\n")
    }
}
