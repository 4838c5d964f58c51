// The built `reflectd` executable, started as a user starts it, over loopback.
//
// Every server is started on port 0 (or on a port a test just saw free) and killed in tearDown
// if a test left it running. Every socket operation and every wait has a deadline.

import TestSupport
import Foundation
import Glibc
import Synchronization
import XCTest

final class ReflectdBinaryTests: ServerTestCase {

    /// Starts reflectd with `arguments` and remembers it for tearDown.
    private func launch(_ arguments: [String]) throws -> ServerProcess {
        let server = try ServerProcess.reflectd(arguments)
        track(server)
        return server
    }

    /// Starts reflectd on 127.0.0.1 and an ephemeral port; returns it and the port it announced.
    private func startServer(port: Int = 0) throws -> (ServerProcess, Int) {
        let server = try launch(["--host", "127.0.0.1", "--port", String(port)])
        let (_, bound) = try server.waitForListening()
        return (server, bound)
    }

    private func roundTrip(_ client: TestSocket, _ message: String, file: StaticString = #filePath, line: UInt = #line) throws {
        try client.send(message)
        XCTAssertEqual(try client.receiveString(exactly: message.utf8.count), message, file: file, line: line)
    }

    // MARK: startup and arguments

    func testStartupLineNamesTheRealPort() throws {
        let server = try launch(["--port", "0"])
        let (line, port) = try server.waitForListening()
        XCTAssertTrue(line.contains("listening on 0.0.0.0:\(port)"), "startup line: \(line.debugDescription)")
        XCTAssertTrue((1...65535).contains(port), "port \(port) is not a real port")
        // It really listens there.
        let client = try TestSocket.connect(port: port)
        try roundTrip(client, "ping\n")
        client.close()
        server.send(signal: SIGTERM)
        assertExitsCleanly(server, within: 5)
    }

    func testPortInUseExitsAtOnceWithAMessage() throws {
        let occupier = try TestListener()
        let server = try launch(["--host", "127.0.0.1", "--port", String(occupier.port)])
        let stderr = assertFailsAtOnce(server)
        XCTAssertTrue(stderr.lowercased().contains("address already in use"), "stderr: \(stderr)")
    }

    func testPortInUseOnTheDefaultHostExitsAtOnce() throws {
        // Another process listening on 127.0.0.1:P also makes 0.0.0.0:P unusable.
        let occupier = try TestListener()
        let server = try launch(["--port", String(occupier.port)])
        let stderr = assertFailsAtOnce(server)
        XCTAssertTrue(stderr.lowercased().contains("address already in use"), "stderr: \(stderr)")
    }

    func testPortOutOfRangeIsRejected() throws {
        let stderr = assertFailsAtOnce(try launch(["--port", "70000"]))
        XCTAssertTrue(stderr.contains("70000"), "the message should name the bad value; stderr: \(stderr)")
        XCTAssertTrue(stderr.contains("port"), "the message should name the option; stderr: \(stderr)")
    }

    func testNonNumericPortIsRejected() throws {
        let stderr = assertFailsAtOnce(try launch(["--port", "abc"]))
        XCTAssertTrue(stderr.contains("abc"), "the message should name the bad value; stderr: \(stderr)")
        XCTAssertTrue(stderr.contains("port"), "the message should name the option; stderr: \(stderr)")
    }

    func testUnknownOptionIsRejected() throws {
        let stderr = assertFailsAtOnce(try launch(["--bogus"]))
        XCTAssertTrue(stderr.contains("bogus"), "the message should name the unknown option; stderr: \(stderr)")
    }

    // MARK: echo and the exit line

    func testEchoAndExitLineSplitAcrossWrites() throws {
        let (server, port) = try startServer()
        let client = try TestSocket.connect(port: port)
        try roundTrip(client, "hello\n")
        try roundTrip(client, "exit now\n")
        try roundTrip(client, "exits\n")
        try roundTrip(client, "xexit\n")
        let binary: [UInt8] = [0, 0xFF, 13, 65, 0, 10]
        try client.send(binary)
        XCTAssertEqual(try client.receive(exactly: binary.count), binary)

        try client.send("ex")
        usleep(50_000)
        try client.send("it\nthis is discarded\n")
        let (rest, end) = client.receiveUntilEnd(timeout: 5)
        XCTAssertEqual(String(decoding: rest, as: UTF8.self), "", "the exit line and what follows must not be echoed")
        XCTAssertEqual(end, .eof, "the server should close the connection cleanly after the exit line")
        client.close()
        server.send(signal: SIGTERM)
        assertExitsCleanly(server, within: 5)
    }

    func testExitLineOneByteAtATime() throws {
        let (_, port) = try startServer()
        let client = try TestSocket.connect(port: port)
        for byte in Array("a\nexit\r\nb".utf8) {
            try client.send([byte])
            usleep(10_000)
        }
        let (received, end) = client.receiveUntilEnd(timeout: 5)
        XCTAssertEqual(String(decoding: received, as: UTF8.self), "a\n")
        XCTAssertEqual(end, .eof)
    }

    func testExitWithoutNewlineThenEOFIsEchoed() throws {
        let (_, port) = try startServer()
        let client = try TestSocket.connect(port: port)
        try client.send("line\nexit")
        client.shutdownWrite()
        let (received, end) = client.receiveUntilEnd(timeout: 5)
        XCTAssertEqual(String(decoding: received, as: UTF8.self), "line\nexit")
        XCTAssertEqual(end, .eof)
    }

    // MARK: signals

    func testSIGTERMDeliversPendingEchoThenEOFAndExitsZero() throws {
        let (server, port) = try startServer()
        let client = try TestSocket.connect(port: port)
        try roundTrip(client, "hello\n")  // accepted for sure
        let payload = testPattern(count: 10 * 1024)
        try client.send(payload)
        usleep(200_000)
        let signalled = monotonicSeconds()
        server.send(signal: SIGTERM)
        let (received, end) = client.receiveUntilEnd(timeout: 5, limit: payload.count)
        XCTAssertEqual(received.count, payload.count, "the client should get all of its echo")
        XCTAssertNil(firstDifference(received, payload))
        XCTAssertEqual(end, .eof, "the client should see a clean EOF, not a reset")
        client.close()
        assertExitsCleanly(server, within: max(0.1, 5 - (monotonicSeconds() - signalled)))
    }

    func testSIGINTStopsGracefullyToo() throws {
        let (server, port) = try startServer()
        let client = try TestSocket.connect(port: port)
        try roundTrip(client, "hello\n")
        server.send(signal: SIGINT)
        let (received, end) = client.receiveUntilEnd(timeout: 5)
        XCTAssertEqual(received, [])
        XCTAssertEqual(end, .eof)
        client.close()
        assertExitsCleanly(server, within: 5)
    }

    func testSIGTERMWhileAClientFloodsWithoutReading() throws {
        try floodThenStop(payloadSize: 1 << 20, requireBlockedWriter: false)
    }

    /// The same with a flood too big for the socket buffers: at SIGTERM the server has stopped
    /// reading (backpressure) and holds pending echo, which it must still deliver before its FIN.
    func testSIGTERMWhileABlockedClientFloodsWithoutReading() throws {
        try floodThenStop(payloadSize: 32 << 20, requireBlockedWriter: true)
    }

    /// A writer thread sends `payloadSize` bytes without reading; SIGTERM after ~300 ms; then the
    /// client reads: a prefix of what it sent, then a clean EOF, and reflectd exits 0 within 5 s.
    private func floodThenStop(payloadSize: Int, requireBlockedWriter: Bool,
                               file: StaticString = #filePath, line: UInt = #line) throws {
        let (server, port) = try startServer()
        let client = try TestSocket.connect(port: port)
        try roundTrip(client, "hello\n")
        let stream = PatternStream()
        let payload = stream.bytes(from: 0, count: payloadSize)
        let sent = Mutex<Result<Int, SocketFailure>?>(nil)
        let writer = TestThread {
            let result = payload.withUnsafeBytes { client.sendAll($0, timeout: 20) }
            sent.withLock { $0 = result }
        }
        usleep(300_000)
        if requireBlockedWriter {
            XCTAssertNil(sent.withLock { $0 }, "the writer was not blocked at SIGTERM; the test proves nothing", file: file, line: line)
        }
        let signalled = monotonicSeconds()
        server.send(signal: SIGTERM)
        let (received, end) = client.receiveUntilEnd(timeout: 8, limit: payload.count)
        XCTAssertLessThanOrEqual(received.count, payload.count, file: file, line: line)
        XCTAssertNil(stream.firstMismatch(received), "what comes back must be a prefix of what was sent", file: file, line: line)
        XCTAssertEqual(end, .eof, "the client should see a clean EOF after \(received.count) bytes, not a reset", file: file, line: line)
        XCTAssertTrue(writer.join(timeout: 25), "the writer thread is stuck", file: file, line: line)
        // A reset may be reported to the writer instead of the reader (the kernel reports a socket
        // error once). A graceful server discards input after its FIN, so the writer finishes.
        switch sent.withLock({ $0 }) {
        case .success(let count): XCTAssertEqual(count, payload.count, file: file, line: line)
        case .failure(let failure): XCTFail("the client's send failed while reflectd was stopping: \(failure)", file: file, line: line)
        case nil: XCTFail("the writer reported nothing", file: file, line: line)
        }
        client.close()
        assertExitsCleanly(server, within: max(0.1, 5 - (monotonicSeconds() - signalled)), file: file, line: line)
    }

    func testRestartOnTheSamePortWhileTimeWaitSocketsExist() throws {
        let (first, port) = try startServer()
        // Connections the server closes first leave server-side sockets in TIME_WAIT: two via the
        // exit line, one via the stop.
        for i in 0..<2 {
            let client = try TestSocket.connect(port: port)
            try roundTrip(client, "hello \(i)\n")
            try client.send("exit\n")
            XCTAssertEqual(client.receiveUntilEnd(timeout: 5).end, .eof)
            client.close()
        }
        let lingering = try TestSocket.connect(port: port)
        try roundTrip(lingering, "still here\n")
        first.send(signal: SIGTERM)
        XCTAssertEqual(lingering.receiveUntilEnd(timeout: 5).end, .eof)
        lingering.close()
        assertExitsCleanly(first, within: 5)
        XCTAssertTrue(eventually(timeout: 3) { timeWaitSockets(localPort: port) > 0 },
                      "no TIME_WAIT socket on port \(port); the test would prove nothing")

        let second = try launch(["--host", "127.0.0.1", "--port", String(port)])
        let (_, rebound) = try second.waitForListening(timeout: 10)
        XCTAssertEqual(rebound, port)
        XCTAssertGreaterThan(timeWaitSockets(localPort: port), 0)
        let client = try TestSocket.connect(port: port)
        try roundTrip(client, "after restart\n")
        client.close()
        second.send(signal: SIGTERM)
        assertExitsCleanly(second, within: 5)
    }

    func testBacklogOptionLimitsTheAcceptQueue() throws {
        let backlogged = try launch(["--host", "127.0.0.1", "--port", "0", "--backlog", "2"])
        let (_, smallPort) = try backlogged.waitForListening()
        // A stopped server accepts nothing: Linux completes at most backlog + 1 handshakes for it
        // and drops further SYNs, so later connects do not complete.
        backlogged.send(signal: SIGSTOP)
        defer { backlogged.send(signal: SIGCONT) }
        var completed: [TestSocket] = []
        for _ in 0..<8 {
            guard let client = try? TestSocket.connect(port: smallPort, timeout: 0.3) else { break }
            completed.append(client)
        }
        XCTAssertLessThanOrEqual(completed.count, 3, "--backlog 2 let \(completed.count) connections queue: the option is ignored")
        backlogged.send(signal: SIGCONT)
        // Once it runs again the queued ones are served.
        for (i, client) in completed.enumerated() { try roundTrip(client, "queued \(i)\n") }
    }

    // MARK: logging

    /// Lines of `log` that mention `127.0.0.1:port` (and not a longer port starting with it).
    private func lines(_ log: [String], mentioning port: Int) -> [String] {
        let needle = "127.0.0.1:\(port)"
        return log.filter { line in
            var search = line[...]
            while let range = search.range(of: needle) {
                if range.upperBound == search.endIndex || !search[range.upperBound].isNumber { return true }
                search = search[range.upperBound...]
            }
            return false
        }
    }

    /// One open line and one close line naming `reason`, and nothing else, for this peer port.
    private func assertOpenAndCloseLogged(_ log: [String], port: Int, reason: String,
                                          file: StaticString = #filePath, line: UInt = #line) {
        let mine = lines(log, mentioning: port)
        XCTAssertEqual(mine.count, 2, "expected one open and one close line for 127.0.0.1:\(port), got \(mine)", file: file, line: line)
        XCTAssertEqual(mine.filter { $0.contains("open") }.count, 1, "\(mine)", file: file, line: line)
        let closes = mine.filter { $0.contains("close") }
        XCTAssertEqual(closes.count, 1, "\(mine)", file: file, line: line)
        XCTAssertTrue(closes.first?.contains(reason) ?? false, "close line should name reason \(reason): \(closes)", file: file, line: line)
    }

    func testLogsOneOpenAndOneCloseLinePerConnectionWithReason() throws {
        let (server, port) = try startServer()
        let secret = "secret-payload-\(UInt32.random(in: 1000...9999))"

        let exitClient = try TestSocket.connect(port: port)
        let exitPort = exitClient.localPort
        try roundTrip(exitClient, secret + "\n")
        try exitClient.send("exit\n")
        XCTAssertEqual(exitClient.receiveUntilEnd().end, .eof)
        exitClient.close()

        let eofClient = try TestSocket.connect(port: port)
        let eofPort = eofClient.localPort
        try roundTrip(eofClient, "hi\n")
        eofClient.shutdownWrite()
        XCTAssertEqual(eofClient.receiveUntilEnd().end, .eof)
        eofClient.close()

        let resetClient = try TestSocket.connect(port: port)
        let resetPort = resetClient.localPort
        try roundTrip(resetClient, "hi\n")
        resetClient.closeWithReset()

        XCTAssertTrue(eventually { [exitPort, eofPort, resetPort].allSatisfy { self.lines(server.stderr.lines, mentioning: $0).count >= 2 } },
                      "missing close lines; stderr:\n\(server.stderr.text)")
        let log = server.stderr.lines
        assertOpenAndCloseLogged(log, port: exitPort, reason: "exit")
        assertOpenAndCloseLogged(log, port: eofPort, reason: "eof")
        assertOpenAndCloseLogged(log, port: resetPort, reason: "reset")
        XCTAssertFalse(server.stderr.text.contains(secret), "message contents must not be logged at info")
        server.send(signal: SIGTERM)
        assertExitsCleanly(server, within: 5)
    }

    // MARK: running out of file descriptors

    /// Reads what each of `candidates` has received into `received`, until `target` of them
    /// have their whole `expected` echo, or `timeout` passes, or (with `settle`) nothing new
    /// completed for `settle` seconds. Returns the indices whose echo is complete.
    private func collectEchoes(_ clients: [TestSocket], expected: [[UInt8]], candidates: [Int], received: inout [[UInt8]],
                               target: Int, timeout: Double, settle: Double? = nil) -> Set<Int> {
        var complete = Set(candidates.filter { received[$0] == expected[$0] })
        let deadline = monotonicSeconds() + timeout
        var lastChange = monotonicSeconds()
        while complete.count < target && monotonicSeconds() < deadline {
            for i in candidates where !complete.contains(i) {
                guard let chunk = try? clients[i].receiveNow(), !chunk.isEmpty else { continue }
                received[i] += chunk
                if received[i] == expected[i] {
                    complete.insert(i)
                    lastChange = monotonicSeconds()
                }
            }
            if let settle, !complete.isEmpty, monotonicSeconds() - lastChange > settle { break }
            usleep(10_000)
        }
        return complete
    }

    func testRunningOutOfFileDescriptorsDoesNotSpinAndRecovers() throws {
        let path = try ServerProcess.reflectdPath()
        let launchedAt = monotonicSeconds()
        // One client address takes every fd here: without `off`, the default per-client limit
        // (90 % of the room) would refuse the rest at once instead of leaving them in the backlog,
        // which is what this test is about (RefusalTests covers the default).
        let server = try ServerProcess.launch("/bin/sh", ["-c", "ulimit -n 32; exec '\(path)' --host 127.0.0.1 --port 0 --max-connections-per-client off"])
        track(server)
        let (_, port) = try server.waitForListening()

        let count = 40
        var clients: [TestSocket] = []
        for _ in 0..<count { clients.append(try TestSocket.connect(port: port)) }
        let ports = clients.map(\.localPort)
        let expected = (0..<count).map { Array("hello from \($0)\n".utf8) }
        for (i, client) in clients.enumerated() { try client.send(expected[i]) }
        var received = [[UInt8]](repeating: [], count: count)

        let served = collectEchoes(clients, expected: expected, candidates: Array(0..<count), received: &received,
                                   target: count, timeout: 8, settle: 2.5)
        XCTAssertTrue(Set(0..<10).isSubset(of: served), "the first connections should be served; served: \(served.sorted())")
        XCTAssertLessThan(served.count, count, "every connection was served: the fd limit never bit, so the test proves nothing")
        let waiting = (0..<count).filter { !served.contains($0) }
        for i in waiting where !received[i].isEmpty {
            XCTFail("client \(i) got a partial or wrong echo: \(TestSocket.preview(received[i]))")
        }

        // At the fd limit, with connections waiting in the backlog, the server must sleep.
        let before = try XCTUnwrap(server.cpuSeconds())
        usleep(2_000_000)
        let after = try XCTUnwrap(server.cpuSeconds())
        XCTAssertLessThan(after - before, 0.3, "reflectd used \(after - before) s of CPU in 2 s at the fd limit: it spins")

        // Ten served clients leave; as many waiting ones must now be accepted and echoed.
        let leaving = served.sorted().prefix(10)
        for i in leaving { clients[i].close() }
        let target = min(10, waiting.count)
        let recovered = collectEchoes(clients, expected: expected, candidates: waiting, received: &received,
                                      target: target, timeout: 8)
        XCTAssertGreaterThanOrEqual(recovered.count, target,
                                    "after 10 connections closed, only \(recovered.count) waiting ones were served; stderr:\n\(server.stderr.text)")

        XCTAssertTrue(eventually { leaving.allSatisfy { self.lines(server.stderr.lines, mentioning: ports[$0]).count >= 2 } },
                      "no close lines for the clients that left")
        let log = server.stderr.lines
        for i in leaving { assertOpenAndCloseLogged(log, port: ports[i], reason: "eof") }
        for i in served.union(recovered).subtracting(leaving) {
            XCTAssertEqual(lines(log, mentioning: ports[i]).filter { $0.contains("open") }.count, 1, "open lines for client \(i)")
        }
        // Accept errors are logged at most about once a second, not once per attempt.
        let emfileLines = log.filter { $0.contains("EMFILE") }.count
        let elapsed = monotonicSeconds() - launchedAt
        XCTAssertGreaterThan(emfileLines, 0, "running out of fds was not logged")
        XCTAssertLessThanOrEqual(emfileLines, Int(elapsed) + 2, "accept errors are logged too often")

        let signalled = monotonicSeconds()
        server.send(signal: SIGTERM)
        assertExitsCleanly(server, within: max(0.1, 5 - (monotonicSeconds() - signalled)))
    }
}
