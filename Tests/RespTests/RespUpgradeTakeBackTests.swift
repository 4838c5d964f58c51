import Foundation
import Glibc
import TestSupport
import XCTest

/// A new binary that dies in the middle of the hand-over, after the old process detached every
/// connection and sent the listeners and connections (their fds, a half-read request longer than
/// a record holds inline, unwritten replies): the old process takes everything back and serves
/// every client with every key, byte-exact; then a real upgrade still takes them all.
/// (RespUpgradeTests' failed upgrade is a binary that exits before its hello: nothing was
/// detached there.)
final class RespUpgradeTakeBackTests: XCTestCase {
    /// Says hello with the format version, reads three messages (listeners, connections, the
    /// first chunk of state or output), then exits 3 with the fds it received still open.
    static let dyingBinary = """
        #!/usr/bin/env python3
        import os, socket, struct
        s = socket.socket(fileno=int(os.environ["RESP_SERVER_UPGRADE_FD"]))
        s.recvmsg(1 << 18, socket.CMSG_SPACE(253 * 4))
        s.send(b"RFLU" + struct.pack("<HBBI", 2, 1, 0, 0) + struct.pack("<I", os.getpid()))
        for _ in range(3):
            s.recvmsg(1 << 18, socket.CMSG_SPACE(253 * 4))
        os._exit(3)

        """

    func testANewBinaryThatDiesMidTransferLeavesEveryClientAndKeyWithTheOldProcess() throws {
        _ = try Tools.require("python3")
        let server = try UpgradableResp()
        defer { server.stop() }
        // A value with every byte (\r, \n and NUL among them), longer than a record's inline state.
        let value = (0..<600_000).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 11) }
        let setter = try TestSocket.connect(port: server.port)
        try setter.send(respCommand([Array("SET".utf8), Array("v".utf8), value]))
        XCTAssertEqual(try setter.receive(exactly: 5), Array("+OK\r\n".utf8))
        try setter.send(respCommand([Array("SET".utf8), Array("k".utf8), Array("x\r\n\0".utf8)]))
        XCTAssertEqual(try setter.receive(exactly: 5), Array("+OK\r\n".utf8))
        // Idle; half a 600 KB request (its state travels in chunks); 20,000 GETs not read yet.
        let idle = try TestSocket.connect(port: server.port)
        let half = try TestSocket.connect(port: server.port)
        let request = respCommand([Array("SET".utf8), Array("w".utf8), value])
        try half.send(Array(request.prefix(300_000)))
        let reader = try TestSocket.connect(port: server.port, receiveBuffer: 4096)
        let gets = 20_000
        try reader.send((0..<gets).flatMap { _ in respCommand([Array("GET".utf8), Array("k".utf8)]) })
        usleep(300_000)

        let failures = server.server.log.components(separatedBy: "upgrade failed").count
        try replace(server, with: Self.dyingBinary)
        kill(server.pid, SIGUSR2)
        XCTAssertTrue(eventually(timeout: RespUpgradeTests.upgradeTimeout) {
            server.server.log.components(separatedBy: "upgrade failed").count > failures
        }, "the failure is logged: \(server.server.log.suffix(2000))")
        XCTAssertTrue(server.server.log.contains("exited with status 3 before confirming"), String(server.server.log.suffix(2000)))
        XCTAssertTrue(server.server.log.contains("(4 connections taken back)"), "taken back after the detach: \(server.server.log.suffix(2000))")

        try idle.send(respCommand([Array("PING".utf8)]))
        XCTAssertEqual(try idle.receive(exactly: 7), Array("+PONG\r\n".utf8), "the idle client is served")
        try half.send(Array(request.dropFirst(300_000)))
        XCTAssertEqual(try half.receive(exactly: 5, timeout: 10), Array("+OK\r\n".utf8), "the half-read request completes")
        let replies = try reader.receive(exactly: gets * 10, timeout: 30)
        XCTAssertEqual(replies, Array(repeating: Array("$4\r\nx\r\n\0\r\n".utf8), count: gets).flatMap { $0 },
                       "every pipelined GET answered once, in order")
        let whole = Array("$\(value.count)\r\n".utf8) + value + Array("\r\n".utf8)
        try setter.send(respCommand([Array("GET".utf8), Array("w".utf8)]))
        XCTAssertEqual(try setter.receive(exactly: whole.count, timeout: 10), whole)
        XCTAssertEqual(try server.dbsize(), 3)

        // The real binary again: it takes all four, and the keys.
        server.restoreBinary()
        XCTAssertEqual(try server.upgrade(), 4)
        try idle.send(respCommand([Array("GET".utf8), Array("v".utf8)]))
        XCTAssertEqual(try idle.receive(exactly: whole.count, timeout: 10), whole)
        XCTAssertEqual(try server.dbsize(), 3)
    }

    private func replace(_ server: UpgradableResp, with script: String) throws {
        let temporary = server.directory.appendingPathComponent("resp-server.dying")
        try script.write(to: temporary, atomically: false, encoding: .utf8)
        chmod(temporary.path, 0o755)
        guard rename(temporary.path, server.path.path) == 0 else { throw HarnessFailure("rename failed: errno \(errno)") }
    }
}
