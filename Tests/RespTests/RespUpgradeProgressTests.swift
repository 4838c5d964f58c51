import Foundation
import Glibc
import TestSupport
import XCTest

/// An upgrade whose keyspace takes the new process longer to restore than the old one's silence
/// timeout, and the old one longer to write than the new one's: each reports progress meanwhile,
/// so the hand-over succeeds with every key;
/// and a new binary that goes silent is still given up on after the silence, everything taken
/// back. The silence timeout is resp-server's hidden `--upgrade-silence-timeout` (0.5 s here,
/// progress every 0.1 s), so that 2M keys stand for the tens of millions that would take longer than 5 s.
final class RespUpgradeProgressTests: XCTestCase {
    static let silence = 0.5
    static let keys = 2_000_000

    static func key(_ i: Int) -> [UInt8] { Array("key:\(i)".utf8) }
    /// Binary, with \r, \n and NUL, different for every key.
    static func value(_ i: Int) -> [UInt8] {
        [0, 13, 10, UInt8(truncatingIfNeeded: i), UInt8(truncatingIfNeeded: i >> 8), UInt8(truncatingIfNeeded: i >> 16), 0xff, 10]
    }

    /// `keys` keys, MSET 1,000 at a time, 20 commands per round trip.
    static func fill(_ server: UpgradableResp, keys: Int) throws {
        let s = try TestSocket.connect(port: server.port)
        defer { s.close() }
        var i = 0
        while i < keys {
            var batch: [UInt8] = []
            var commands = 0
            while commands < 20, i < keys {
                var arguments = [Array("MSET".utf8)]
                for k in i..<min(i + 1000, keys) { arguments += [key(k), value(k)] }
                batch += respCommand(arguments)
                i = min(i + 1000, keys)
                commands += 1
            }
            try s.send(batch, timeout: 60)
            XCTAssertEqual(try s.receive(exactly: 5 * commands, timeout: 60), Array(repeating: Array("+OK\r\n".utf8), count: commands).flatMap { $0 })
        }
    }

    /// Every 997th key, with its value, byte-exact.
    static func checkSample(_ server: UpgradableResp, keys: Int, file: StaticString = #filePath, line: UInt = #line) throws {
        let sample = Array(stride(from: 0, to: keys, by: 997)) + [keys - 1]
        var expected = Array("*\(sample.count)\r\n".utf8)
        for i in sample { expected += Array("$\(value(i).count)\r\n".utf8) + value(i) + Array("\r\n".utf8) }
        XCTAssertEqual(try server.mget(sample.map(key)), expected, "sampled values intact", file: file, line: line)
    }

    /// The number after the last `marker` in `log`.
    static func number(after marker: String, in log: String) -> Int? {
        guard let range = log.range(of: marker, options: .backwards) else { return nil }
        return Int(log[range.upperBound...].prefix { $0.isNumber })
    }

    func testAKeyspaceSlowerToRestoreThanTheSilenceTimeoutIsHandedOverWithEveryKey() throws {
        let server = try UpgradableResp(["--upgrade-silence-timeout", "\(Self.silence)"])
        defer { server.stop() }
        try Self.fill(server, keys: Self.keys)
        XCTAssertEqual(try server.dbsize(), Self.keys)
        let client = try TestSocket.connect(port: server.port)
        usleep(200_000)  // the filling and DBSIZE connections' close is seen first

        XCTAssertEqual(try server.upgrade(), 1, "the open client is handed over")
        XCTAssertFalse(server.server.log.contains("upgrade failed"), String(server.server.log.suffix(2000)))
        // The premise: reads stayed paused for clearly longer than the silence timeout (the
        // restore alone, in a debug build, takes seconds), so a limit on the total would have
        // failed this upgrade; and the old process took longer than the silence timeout to write
        // the keyspace (about a second), which the new one waited out on the old one's reports.
        let log = server.server.log
        let paused = try XCTUnwrap(Self.number(after: "(reading paused ", in: log), String(log.suffix(2000)))
        XCTAssertGreaterThan(paused, Int(Self.silence * 4000), "reads paused \(paused) ms: the keyspace restores too quickly to test anything")
        let written = try XCTUnwrap(Self.number(after: "(written in ", in: log), String(log.suffix(2000)))
        XCTAssertGreaterThan(written, Int(Self.silence * 1000), "the keyspace was written in \(written) ms: too quickly to test the new process's wait")
        XCTAssertEqual(try server.dbsize(), Self.keys, "every key")
        try Self.checkSample(server, keys: Self.keys)
        try client.send(respCommand([Array("GET".utf8), Self.key(42)]))
        let reply = Array("$8\r\n".utf8) + Self.value(42) + Array("\r\n".utf8)
        XCTAssertEqual(try client.receive(exactly: reply.count, timeout: 10), reply, "the handed-over client is served")
    }

    /// Says hello, reads everything to the end, reports progress three times, then goes silent
    /// (it never confirms, never exits).
    static let silentBinary = """
        #!/usr/bin/env python3
        import os, socket, struct, time
        s = socket.socket(fileno=int(os.environ["RESP_SERVER_UPGRADE_FD"]))
        s.recvmsg(1 << 18, socket.CMSG_SPACE(253 * 4))
        s.send(b"RFLU" + struct.pack("<HBBI", 2, 1, 0, 0) + struct.pack("<I", os.getpid()))
        while True:
            data, _, _, _ = s.recvmsg(1 << 18, socket.CMSG_SPACE(253 * 4))
            if len(data) < 12 or data[6] == 6:
                break
        for k in range(3):
            time.sleep(0.2)
            s.send(b"RFLU" + struct.pack("<HBBI", 2, 10, 0, k))
        time.sleep(3600)

        """

    func testANewBinaryThatGoesSilentIsGivenUpOnAfterTheSilenceWithEverythingTakenBack() throws {
        _ = try Tools.require("python3")
        let server = try UpgradableResp(["--upgrade-silence-timeout", "\(Self.silence)"])
        defer { server.stop() }
        try Self.fill(server, keys: 20_000)
        let idle = try TestSocket.connect(port: server.port)
        usleep(200_000)
        let failures = server.server.log.components(separatedBy: "upgrade failed").count

        try server.replaceBinary(with: Self.silentBinary)
        let start = ContinuousClock.now
        kill(server.pid, SIGUSR2)
        XCTAssertTrue(eventually(timeout: RespUpgradeTests.upgradeTimeout) {
            server.server.log.components(separatedBy: "upgrade failed").count > failures
        }, "the failure is logged: \(server.server.log.suffix(2000))")
        let waited = (ContinuousClock.now - start) / .seconds(1)
        XCTAssertTrue(server.server.log.contains("did not answer within 0.5 seconds (no progress, no confirmation)"), String(server.server.log.suffix(2000)))
        XCTAssertTrue(server.server.log.contains("(1 connections taken back)"), String(server.server.log.suffix(2000)))
        // Three reports 0.2 s apart after the end, then the silence: about 1.1 s, far under the 5 s default.
        XCTAssertLessThan(waited, 4, "given up on promptly")
        XCTAssertTrue(UpgradableResp.alive(server.pid), "the old process still runs")

        try idle.send(respCommand([Array("PING".utf8)]))
        XCTAssertEqual(try idle.receive(exactly: 7, timeout: 10), Array("+PONG\r\n".utf8), "the client taken back is served")
        XCTAssertEqual(try server.dbsize(), 20_000)
        try Self.checkSample(server, keys: 20_000)

        // The real binary again: it takes the client and every key.
        server.restoreBinary()
        XCTAssertEqual(try server.upgrade(), 1)
        XCTAssertEqual(try server.dbsize(), 20_000)
    }
}
