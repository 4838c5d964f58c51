// The bounded exit-line hold (contract of 2026-12-01) through the built reflectd binary over
// loopback: an undecided `exit` prefix is held back only while input keeps coming, then echoed,
// and still tracked; `--exit-line off` is a pure RFC 862 echo.

import TestSupport
import Foundation
import Glibc
import XCTest

final class ExitHoldTests: ServerTestCase {

    private func start(_ extra: [String] = []) throws -> Int {
        try startAndWait(["--host", "127.0.0.1", "--port", "0", "--log-level", "warning"] + extra).1
    }

    // MARK: the hold

    func testUndecidedPrefixIsEchoedAfterTheHoldAndTheConnectionStaysOpen() throws {
        let port = try start()  // the default hold, 250 ms
        let messages = ["e", "abc\ne", "abc\nex", "xyz\nexi", "q\nexit", "q\r\nexit\r"]
        let clients = try messages.map { _ in try TestSocket.connect(port: port) }
        let started = monotonicSeconds()
        for (client, message) in zip(clients, messages) { try client.send(message) }
        for (client, message) in zip(clients, messages) {
            let echoed = try client.receive(exactly: message.utf8.count, timeout: 0.25 + 1.0)
            XCTAssertEqual(String(decoding: echoed, as: UTF8.self), message)
        }
        let elapsed = monotonicSeconds() - started
        XCTAssertGreaterThanOrEqual(elapsed, 0.2, "the prefix was not held at all")
        XCTAssertLessThan(elapsed, 1.25, "the prefixes came back long after the 250 ms hold")
        for client in clients {
            // Still open, and the released prefix diverged into data: a fresh line echoes.
            try roundTrip(client, "!\nmore\n")
        }
    }

    func testBinaryRequestResponseClientsNeverStall() throws {
        // 2,000 round trips of random binary messages on 20 connections, about 1 in 30 ending in
        // an undecided prefix of `exit` after a newline (random data does so 1 in 65,536 times).
        let port = try start()
        let failures = Locked<[String]>([])
        let slowest = Locked(0.0)
        let threads = (0..<20).map { c in
            Thread {
                var rng = SystemRandomNumberGenerator()
                do {
                    let client = try TestSocket.connect(port: port)
                    var previousEndedInPrefix = false
                    for i in 0..<100 {
                        var message = (0..<Int.random(in: 1...200, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                        if previousEndedInPrefix { message[0] = UInt8(ascii: "Q") }  // the held line diverges
                        previousEndedInPrefix = false
                        if Int.random(in: 0..<30, using: &rng) == 0 {
                            message += Array(["\ne", "\nex", "\nexi", "\nexit", "\nexit\r"].randomElement(using: &rng)!.utf8)
                            previousEndedInPrefix = true
                        }
                        let sent = monotonicSeconds()
                        try client.send(message)
                        let echoed = try client.receive(exactly: message.count, timeout: 1.5)
                        let took = monotonicSeconds() - sent
                        slowest.withLock { $0 = max($0, took) }
                        if echoed != message { failures.withLock { $0.append("connection \(c) message \(i): echo differs") } }
                    }
                    client.close()
                } catch {
                    failures.withLock { $0.append("connection \(c): \(error)") }
                }
            }
        }
        threads.forEach { $0.start() }
        XCTAssertTrue(eventually(timeout: 60) { threads.allSatisfy(\.isFinished) }, "round trips still running after 60 s")
        XCTAssertEqual(failures.withLock { $0 }, [])
        XCTAssertLessThan(slowest.withLock { $0 }, 1.0, "a round trip took longer than the hold plus a wide margin")
    }

    func testSplitWiderThanTheHoldIsEchoedThenClosesOnCompletion() throws {
        let port = try start(["--exit-hold-ms", "100"])
        let client = try TestSocket.connect(port: port)
        try roundTrip(client, "before\n")
        try client.send("ex")
        XCTAssertEqual(try client.receiveString(exactly: 2, timeout: 2), "ex", "the prefix was not released after the hold")
        try client.send("it\n")
        let (rest, end) = client.receiveUntilEnd(timeout: 5)
        XCTAssertEqual(rest, [], "an exit line completed after a release echoed more")
        XCTAssertEqual(end, .eof, "the client asked to leave: the connection closes")
    }

    func testSplitWithinTheHoldClosesWithNothingEchoed() throws {
        let port = try start()
        let client = try TestSocket.connect(port: port)
        for part in ["ex", "i", "t\r\n"] {
            try client.send(part)
            usleep(50_000)
        }
        let (rest, end) = client.receiveUntilEnd(timeout: 5)
        XCTAssertEqual(String(decoding: rest, as: UTF8.self), "", "the exit line was echoed")
        XCTAssertEqual(end, .eof)
    }

    func testZeroHoldEchoesAPrefixAtOnceAndStillCloses() throws {
        let port = try start(["--exit-hold-ms", "0"])
        let client = try TestSocket.connect(port: port)
        let started = monotonicSeconds()
        try client.send("e")
        XCTAssertEqual(try client.receiveString(exactly: 1, timeout: 2), "e")
        XCTAssertLessThan(monotonicSeconds() - started, 0.2, "a zero hold still waited")
        try client.send("xit\n")
        let (rest, end) = client.receiveUntilEnd(timeout: 5)
        XCTAssertEqual(rest, [])
        XCTAssertEqual(end, .eof)
    }

    func testLongHoldStillHoldsBeforeItEnds() throws {
        let port = try start(["--exit-hold-ms", "1500"])
        let client = try TestSocket.connect(port: port)
        try client.send("e")
        XCTAssertTrue(client.staysQuiet(for: 0.8), "a 1500 ms hold released the prefix before 0.8 s")
        // The line goes on as data: everything comes back at once, nothing waits out the hold.
        try client.send("cho\n")
        XCTAssertEqual(try client.receiveString(exactly: 5, timeout: 2), "echo\n")
    }

    // MARK: --exit-line off

    func testExitLineOffIsAPureEcho() throws {
        let port = try start(["--exit-line", "off", "--exit-hold-ms", "5000"])
        let client = try TestSocket.connect(port: port)
        let started = monotonicSeconds()
        try client.send("exit\n")
        XCTAssertEqual(try client.receiveString(exactly: 5, timeout: 2), "exit\n")
        try client.send("e")
        XCTAssertEqual(try client.receiveString(exactly: 1, timeout: 2), "e")
        XCTAssertLessThan(monotonicSeconds() - started, 1.0, "with the exit line off nothing is held")
        try roundTrip(client, "\nexit\r\n")
        let binary = (0...255).map { UInt8($0) } + Array("\nexit\n".utf8)
        try client.send(binary)
        XCTAssertEqual(try client.receive(exactly: binary.count), binary)
    }

    // MARK: bad flags

    func testBadExitLineFlagsAreRejected() throws {
        for (arguments, option) in [(["--exit-line", "maybe"], "--exit-line"), (["--exit-hold-ms", "-5"], "--exit-hold-ms"),
                                    (["--exit-hold-ms", "soon"], "--exit-hold-ms"), (["--exit-hold-ms", "60001"], "--exit-hold-ms")] {
            let server = try TestProcess.reflectd(["--port", "0"] + arguments)
            track(server)
            let status = server.waitForExit(timeout: 5)
            XCTAssertNotNil(status, "\(arguments) still runs")
            XCTAssertNotEqual(status, .exited(0), "\(arguments) was accepted")
            server.stderr.waitForEOF(timeout: 2)
            XCTAssertTrue(server.stderr.text.contains(option), "\(arguments): the error does not name \(option): \(server.stderr.text)")
            XCTAssertFalse(server.stdout.text.contains("listening on"), "\(arguments): it listened anyway")
        }
    }
}
