// --unix: echo over a Unix-domain socket, the stale file replaced and removed at exit, the
// file's mode set before it listens, and errors that name the path.
//
// Through the built `reflectd` on loopback: every socket operation and wait has a deadline, and
// tearDown (ServerTestCase) kills whatever a test left running.

import TestSupport
import Foundation
import Glibc
import XCTest

final class UnixSocketTests: ServerTestCase {

    func testUnixSocketErrorsNameThePath() throws {
        let path = try temporaryDirectory() + "/no-such-directory/reflectd.sock"
        let server = try start(["--host", "127.0.0.1", "--port", "0", "--unix", path])
        let stderr = assertFailsAtOnce(server)
        XCTAssertTrue(stderr.contains("cannot listen on \(path)"), "the error should name the path: \(stderr)")
        XCTAssertFalse(stderr.contains("127.0.0.1"), "the error should not name the TCP address: \(stderr)")
    }

    func testUnixModeSetsTheSocketFilesModeBeforeItListens() throws {
        let directory = try temporaryDirectory()
        for (mode, expected) in [("0600", 0o600), ("660", 0o660), ("0o666", 0o666)] {
            let path = directory + "/mode-\(expected).sock"
            let server = try start(["--host", "127.0.0.1", "--port", "0", "--unix", path, "--unix-mode", mode])
            _ = try server.waitForListening(count: 2)
            var st = stat()
            XCTAssertEqual(lstat(path, &st), 0)
            XCTAssertEqual(Int(st.st_mode) & 0o7777, expected, "--unix-mode \(mode)")
            try TestSocket.connect(unixPath: path).expectEcho("mode \(mode)\n")
            server.send(signal: SIGTERM)
            assertExitsCleanly(server, within: 5)
        }
        for bad in ["999", "rw-rw----", "0x1ff", "77777"] {
            let server = try start(["--host", "127.0.0.1", "--port", "0", "--unix", directory + "/bad.sock", "--unix-mode", bad])
            XCTAssertTrue(assertFailsAtOnce(server).contains("--unix-mode"), "--unix-mode \(bad) should be rejected")
        }
        let alone = try start(["--host", "127.0.0.1", "--port", "0", "--unix-mode", "0600"])
        XCTAssertTrue(assertFailsAtOnce(alone).contains("--unix-mode needs --unix"))
    }

    func testServerBsSocketFileSurvivesServerAStopping() throws {
        let path = try temporaryDirectory() + "/shared.sock"
        let a = try start(["--host", "127.0.0.1", "--port", "0", "--unix", path])
        _ = try a.waitForListening(count: 2)
        // The operator removes A's file and starts B on the same path.
        XCTAssertEqual(unlink(path), 0)
        let b = try start(["--host", "127.0.0.1", "--port", "0", "--unix", path])
        _ = try b.waitForListening(count: 2)
        var before = stat()
        XCTAssertEqual(lstat(path, &before), 0)

        a.send(signal: SIGTERM)
        assertExitsCleanly(a, within: 5)
        var after = stat()
        XCTAssertEqual(lstat(path, &after), 0, "server A removed server B's socket file")
        XCTAssertEqual(after.st_ino, before.st_ino)
        try TestSocket.connect(unixPath: path).expectEcho("B is still reachable\n")

        b.send(signal: SIGTERM)
        assertExitsCleanly(b, within: 5)
        XCTAssertNotEqual(lstat(path, &after), 0, "B removes its own file at exit")
    }

    func testUnixSocketEchoReplacesAStaleFileAndRemovesItAtExit() throws {
        let path = try temporaryDirectory() + "/reflectd.sock"
        let first = try start(["--host", "127.0.0.1", "--port", "0", "--unix", path])
        let lines = try first.waitForListening(count: 2)
        XCTAssertNotNil(LoopbackSockets.port(of: lines[0]), "TCP comes first: \(lines)")
        XCTAssertEqual(lines[1], path, "then the Unix path")
        try TestSocket.connect(unixPath: path).expectEcho("over a unix socket\n")

        // A server that dies leaves its socket file behind.
        first.kill()
        var st = stat()
        XCTAssertEqual(lstat(path, &st), 0, "SIGKILL should leave the socket file")
        XCTAssertEqual(st.st_mode & S_IFMT, S_IFSOCK)

        let second = try start(["--host", "127.0.0.1", "--port", "0", "--unix", path])
        XCTAssertEqual(try second.waitForListening(count: 2)[1], path)
        let client = try TestSocket.connect(unixPath: path)
        try client.expectEcho("the stale file was replaced\n")

        // A socket a live server accepts on is not stale: a third server must not steal it.
        let third = try start(["--host", "127.0.0.1", "--port", "0", "--unix", path])
        let stderr = assertFailsAtOnce(third)
        XCTAssertTrue(stderr.contains("in use"), "expected an address-in-use message: \(stderr)")
        try client.expectEcho("the live server still owns it\n")
        client.close()

        second.send(signal: SIGTERM)
        assertExitsCleanly(second, within: 6)
        XCTAssertNotEqual(lstat(path, &st), 0, "the socket file should be removed at exit")
    }
}
