// systemd socket activation (LISTEN_PID, LISTEN_FDS): the inherited sockets are served and
// none of its own is bound; a bad environment is an error that names what is wrong.
//
// Through the built `reflectd` on loopback: every socket operation and wait has a deadline, and
// tearDown (ServerTestCase) kills whatever a test left running.

import TestSupport
import Foundation
import Glibc
import XCTest

final class SocketActivationTests: ServerTestCase {

    func testEachBadLISTEN_FDSExitsWithAMessageAndNeverBinds() throws {
        let listener = try TestListener(host: "127.0.0.1")
        defer { listener.close() }
        let cases: [(value: String, expected: String)] = [
            ("2147483647", "LISTEN_FDS=2147483647 is more sockets than the fd limit"),
            ("2147483644", "LISTEN_FDS=2147483644 is more sockets than the fd limit"),
            ("99999999999999999999999", "is more sockets than the fd limit"),
            ("-1", "LISTEN_FDS=\"-1\" is not a positive decimal number"),
            ("abc", "LISTEN_FDS=\"abc\" is not a positive decimal number"),
            ("0", "LISTEN_FDS=\"0\" is not a positive decimal number"),
            ("", "LISTEN_FDS=\"\" is not a positive decimal number"),
            (" 1", "is not a positive decimal number"),
            ("1000", "LISTEN_FDS=1000: fd 4 is not open"),
        ]
        for (value, expected) in cases {
            let ownPort = try LoopbackSockets.unusedPort()
            let server = track(try TestProcess.reflectd(
                shellPrologue: "export LISTEN_PID=$$",
                ["--host", "127.0.0.1", "--port", String(ownPort)],
                environment: ["LISTEN_FDS": value], inheritedListeners: [listener.fd]))
            let stderr = assertFailsAtOnce(server)
            XCTAssertTrue(stderr.contains(expected), "LISTEN_FDS=\(value.debugDescription): expected \(expected.debugDescription) in: \(stderr)")
            XCTAssertTrue(stderr.contains("not binding"), "the message should say it does not fall back to binding: \(stderr)")
            XCTAssertFalse(LoopbackSockets.somethingListens(host: "127.0.0.1", port: ownPort), "LISTEN_FDS=\(value.debugDescription): reflectd bound its own port")
        }
    }

    func testLISTEN_PIDThatIsNotANumberOrLISTEN_FDSMissingIsAnError() throws {
        let server = track(try TestProcess.spawn(try TestProcess.binaryPath("reflectd"), ["--host", "127.0.0.1", "--port", "0"],
                                                environment: ["LISTEN_PID": "abc", "LISTEN_FDS": "1"]))
        XCTAssertTrue(assertFailsAtOnce(server).contains("LISTEN_PID=\"abc\" is not a process id"))
        let missing = track(try TestProcess.reflectd(shellPrologue: "export LISTEN_PID=$$", ["--host", "127.0.0.1", "--port", "0"]))
        XCTAssertTrue(assertFailsAtOnce(missing).contains("LISTEN_FDS is not set"))
    }

    func testInheritedFdThatIsNotAListeningSocketIsNamedInTheError() throws {
        // fd 3 a listener, fd 4 a socket that never listened, then fd 4 a pipe.
        let listener = try TestListener(host: "127.0.0.1")
        defer { listener.close() }
        let idle = try LoopbackSockets.socket(AF_INET)
        defer { Glibc.close(idle) }
        var ends: [CInt] = [-1, -1]
        XCTAssertEqual(pipe(&ends), 0)
        defer { ends.forEach { Glibc.close($0) } }
        for (fd, expected) in [(idle, "LISTEN_FDS=2: fd 4 is a socket that is not listening"), (ends[0], "LISTEN_FDS=2: fd 4 is not a socket")] {
            let server = track(try TestProcess.reflectd(
                shellPrologue: "export LISTEN_PID=$$", ["--host", "127.0.0.1", "--port", "0"],
                environment: ["LISTEN_FDS": "2"], inheritedListeners: [listener.fd, fd]))
            let stderr = assertFailsAtOnce(server)
            XCTAssertTrue(stderr.contains(expected), "expected \(expected.debugDescription) in: \(stderr)")
        }
    }

    func testHostPortOrUnixGivenWithSocketActivationIsAWarning() throws {
        let listener = try TestListener(host: "127.0.0.1")
        let server = track(try TestProcess.reflectd(
            shellPrologue: "export LISTEN_PID=$$", ["--host", "127.0.0.1", "--port=0"],
            environment: ["LISTEN_FDS": "1"], inheritedListeners: [listener.fd]))
        XCTAssertEqual(try server.waitForTCPPort(), listener.port)
        listener.close()
        waitForLog(server, "socket activation: --host, --port ignored")
        try TestSocket.connect(host: "127.0.0.1", port: listener.port).expectEcho("activated\n")

        let quiet = try TestListener(host: "127.0.0.1")
        let plain = track(try TestProcess.reflectd(
            shellPrologue: "export LISTEN_PID=$$", [], environment: ["LISTEN_FDS": "1"], inheritedListeners: [quiet.fd]))
        _ = try plain.waitForTCPPort()
        quiet.close()
        usleep(300_000)
        XCTAssertFalse(plain.stderr.text.contains("ignored"), "no flags given, no warning: \(plain.stderr.text)")
    }

    func testSocketActivationServesTheInheritedSocketWithoutBindingItsOwn() throws {
        let listener = try TestListener(host: "127.0.0.1")
        let ownPort = try LoopbackSockets.unusedPort()
        // LISTEN_PID must be reflectd's pid: the shell exports its own pid, then execs reflectd.
        let server = track(try TestProcess.reflectd(
            shellPrologue: "export LISTEN_PID=$$",
            ["--host", "127.0.0.1", "--port", String(ownPort), "--reactors", "2"],
            environment: ["LISTEN_FDS": "1"], inheritedListeners: [listener.fd]))
        let lines = try server.waitForListening(count: 1)
        // Only reflectd holds the listening socket from now on.
        listener.close()
        XCTAssertEqual(lines.map { LoopbackSockets.port(of: $0) ?? -1 }, [listener.port], "it should announce the inherited socket only: \(lines)")
        XCTAssertTrue(server.stderr.text.contains("socket activation") || eventually(timeout: 1) { server.stderr.text.contains("socket activation") })

        let clients = try ClientCrowd.connect(count: 40, host: "127.0.0.1", port: listener.port)
        let bad = try ClientCrowd.echoAtOnce(clients) { Array("activated \($0)\n".utf8) }
        XCTAssertEqual(bad, [])
        XCTAssertFalse(LoopbackSockets.somethingListens(host: "127.0.0.1", port: ownPort), "reflectd bound --port \(ownPort) although it was given a socket")
        XCTAssertFalse(server.stdout.text.contains(":\(ownPort)"))
        clients.forEach { $0.close() }

        server.send(signal: SIGTERM)
        assertExitsCleanly(server, within: 6)
    }

    func testSocketActivationWithATCPAndAUnixSocketServesBothAndLeavesTheFile() throws {
        // As systemd passes `ListenStream=PORT` and `ListenStream=/run/….sock`: fds 3 and 4.
        let tcp = try TestListener(host: "127.0.0.1")
        let path = try temporaryDirectory() + "/activated.sock"
        let unix = try TestListener(unixPath: path)
        let server = track(try TestProcess.reflectd(
            shellPrologue: "export LISTEN_PID=$$",
            ["--host", "127.0.0.1", "--port", "0", "--reactors", "2"],
            environment: ["LISTEN_FDS": "2"], inheritedListeners: [tcp.fd, unix.fd]))
        let lines = try server.waitForListening(count: 2)
        tcp.close()
        unix.close()
        XCTAssertEqual(lines.first.flatMap(LoopbackSockets.port(of:)), tcp.port, "\(lines)")
        XCTAssertEqual(lines.last, path)
        try TestSocket.connect(host: "127.0.0.1", port: tcp.port).expectEcho("activated over TCP\n")
        try TestSocket.connect(unixPath: path).expectEcho("activated over a unix socket\n")

        server.send(signal: SIGTERM)
        assertExitsCleanly(server, within: 6)
        var st = stat()
        XCTAssertEqual(lstat(path, &st), 0, "an inherited socket's file belongs to the service manager and must stay")
    }

    func testSocketActivationMeantForAnotherProcessIsIgnored() throws {
        let listener = try TestListener(host: "127.0.0.1")
        // LISTEN_PID names some other process (pid 1): the fds are not reflectd's to use.
        let server = track(try TestProcess.spawn(
            try TestProcess.binaryPath("reflectd"), ["--host", "127.0.0.1", "--port", "0"],
            environment: ["LISTEN_PID": "1", "LISTEN_FDS": "1"], inheritedListeners: [listener.fd]))
        let port = try server.waitForTCPPort()
        XCTAssertNotEqual(port, listener.port, "it should bind its own port")
        try TestSocket.connect(host: "127.0.0.1", port: port).expectEcho("own socket\n")
    }
}
