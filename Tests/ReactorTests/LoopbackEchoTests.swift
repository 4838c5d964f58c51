// The Reactor library over real loopback sockets: an in-process reactor running a tiny echo
// handler on its own thread, and blocking-with-deadline clients in the test.

import TestSupport
import Foundation
import Glibc
import Reactor
import Synchronization
import XCTest

final class LoopbackEchoTests: XCTestCase {
    private var reactors: [ReactorRunner<Int>] = []

    override func setUp() {
        super.setUp()
        // Belt and braces: every send already uses MSG_NOSIGNAL.
        signal(SIGPIPE, SIG_IGN)
    }

    override func tearDown() {
        for reactor in reactors { reactor.handle.stopNow() }
        for reactor in reactors { _ = reactor.waitForRunToReturn(timeout: 10) }
        reactors.removeAll()
        super.tearDown()
    }

    private func startEchoReactor(_ configuration: ReactorConfiguration = ReactorConfiguration()) throws -> (ReactorRunner<Int>, Probe) {
        let probe = Probe()
        let reactor = try ReactorRunner.listening(configuration: configuration) { ProbeEchoHandler(probe: probe) }
        reactors.append(reactor)
        return (reactor, probe)
    }

    // MARK: echo

    func testSmallMessagesEchoInOrder() throws {
        let (reactor, _) = try startEchoReactor()
        let client = try TestSocket.connect(port: reactor.port)
        for message in ["hello\n", "a", "two words\n", "no newline", "\n", String(repeating: "x", count: 1000) + "\n"] {
            try client.send(message)
            XCTAssertEqual(try client.receiveString(exactly: message.utf8.count), message)
        }
        // Several messages in one write come back as the same bytes.
        try client.send("one\ntwo\nthree\n")
        XCTAssertEqual(try client.receiveString(exactly: 14), "one\ntwo\nthree\n")
        XCTAssertTrue(client.staysQuiet(for: 0.1), "the reactor sent bytes nobody asked for")
    }

    func testAllByteValuesEchoUnchanged() throws {
        let (reactor, _) = try startEchoReactor()
        let client = try TestSocket.connect(port: reactor.port)
        let everyByte = (0...255).map { UInt8($0) }
        // Forwards, backwards, and NUL / 0xFF / CR runs.
        let payload = everyByte + everyByte.reversed() + [0, 0, 0, 0xFF, 0xFF, 13, 13, 10, 0]
        try client.send(payload)
        XCTAssertEqual(try client.receive(exactly: payload.count), payload)
    }

    func testSixteenMebibytesWithConcurrentSendAndReceive() throws {
        let (reactor, _) = try startEchoReactor()
        let client = try TestSocket.connect(port: reactor.port)
        let size = 16 << 20
        let stream = PatternStream()
        let payload = stream.bytes(from: 0, count: size)
        let sendResult = Mutex<Result<Int, SocketFailure>?>(nil)
        let writer = TestThread {
            let result = payload.withUnsafeBytes { client.sendAll($0, timeout: 60) }
            sendResult.withLock { $0 = result }
        }
        // Read while the writer writes: neither side may wait for the other to finish.
        let received = try client.receive(exactly: size, timeout: 60)
        XCTAssertTrue(writer.join(timeout: 10), "the writer thread did not finish")
        XCTAssertEqual(try sendResult.withLock { $0 }?.get(), size)
        XCTAssertNil(stream.firstMismatch(received), "echo differs from what was sent at this offset")
        client.shutdownWrite()
        let (rest, end) = client.receiveUntilEnd(timeout: 5)
        XCTAssertEqual(rest.count, 0)
        XCTAssertEqual(end, .eof)
    }

    // MARK: half-close, reset

    func testHalfCloseFlushesAllEchoThenEOF() throws {
        let (reactor, probe) = try startEchoReactor()
        let client = try TestSocket.connect(port: reactor.port)
        // More than the socket buffers and the high watermark hold, so some of it is still
        // queued in the reactor when the EOF arrives.
        let payload = PatternStream().bytes(from: 0, count: 1 << 20)
        let writer = TestThread {
            _ = payload.withUnsafeBytes { client.sendAll($0, timeout: 30) }
            client.shutdownWrite()
        }
        let (received, end) = client.receiveUntilEnd(timeout: 30, limit: payload.count)
        XCTAssertTrue(writer.join(timeout: 10))
        XCTAssertEqual(received.count, payload.count, "not every byte was echoed before the close")
        XCTAssertNil(firstDifference(received, payload))
        XCTAssertEqual(end, .eof, "the client should read a clean EOF after its echo")
        XCTAssertTrue(probe.wait { $0.closed == ["eof": 1] }, "closed: \(probe.snapshot.closed)")
    }

    func testHalfCloseWithASlowReaderGetsEveryByte() throws {
        let (reactor, probe) = try startEchoReactor()
        // More than the socket buffers hold, read through a tiny receive window: the reactor's
        // writes come up short and it queues echo (backpressure) until the very end.
        let client = try TestSocket.connect(port: reactor.port, receiveBuffer: 4096)
        let payload = PatternStream().bytes(from: 0, count: 16 << 20)
        let writer = TestThread {
            _ = payload.withUnsafeBytes { client.sendAll($0, timeout: 30) }
            client.shutdownWrite()
        }
        usleep(300_000)
        XCTAssertGreaterThan(probe.snapshot.maxPendingOutput, 0, "nothing was queued; the test proves nothing")
        let (received, end) = client.receiveUntilEnd(timeout: 30, limit: payload.count)
        XCTAssertTrue(writer.join(timeout: 10))
        XCTAssertEqual(received.count, payload.count, "echo queued at EOF was dropped")
        XCTAssertNil(firstDifference(received, payload))
        XCTAssertEqual(end, .eof)
        XCTAssertTrue(probe.wait { $0.closed == ["eof": 1] }, "closed: \(probe.snapshot.closed)")
    }

    func testGracefulCloseWritesAReplyQueuedAtEOF() throws {
        let probe = Probe()
        let reply = PatternStream().bytes(from: 0, count: 8 << 20)
        let reactor = try ReactorRunner.listening { ReplyOnEOFHandler(reply: reply, probe: probe) }
        reactors.append(reactor)
        let client = try TestSocket.connect(port: reactor.port)
        client.shutdownWrite()
        XCTAssertTrue(probe.wait { !$0.pendingAtEOF.isEmpty })
        XCTAssertGreaterThan(probe.snapshot.pendingAtEOF.first ?? 0, 0, "the reply was not queued; the test proves nothing")
        usleep(100_000)  // the close is requested while the reply is still queued
        let (received, end) = client.receiveUntilEnd(timeout: 20, limit: reply.count)
        XCTAssertEqual(received.count, reply.count, "a graceful close dropped queued output")
        XCTAssertNil(firstDifference(received, reply))
        XCTAssertEqual(end, .eof)
        client.close()
        XCTAssertTrue(probe.wait { $0.closed == ["eof": 1] }, "closed: \(probe.snapshot.closed)")
    }

    /// A reactor with a 1 s closeTimeout whose handler answers the client's EOF with `count`
    /// bytes; a client with a 4 KiB receive buffer that half-closes and has read nothing, once
    /// at least `queuedAtLeast` bytes of the reply wait in the server's output buffer.
    /// `then` is what the handler returns once the reply is queued.
    private func halfCloseWithQueuedReply(count: Int, queuedAtLeast: Int, then: Action = .close(.eof)) throws
        -> (Probe, ReactorRunner<Int>, TestSocket, [UInt8]) {
        let probe = Probe()
        let reply = PatternStream().bytes(from: 0, count: count)
        var configuration = ReactorConfiguration()
        configuration.closeTimeout = .seconds(1)
        let reactor = try ReactorRunner.listening(configuration: configuration) {
            ReplyOnEOFHandler(reply: reply, probe: probe, then: then)
        }
        reactors.append(reactor)
        let client = try TestSocket.connect(port: reactor.port, receiveBuffer: 4096)
        client.shutdownWrite()
        XCTAssertTrue(probe.wait { !$0.pendingAtEOF.isEmpty })
        XCTAssertGreaterThan(probe.snapshot.pendingAtEOF.first ?? 0, queuedAtLeast, "the reply was not queued; the test proves nothing")
        return (probe, reactor, client, reply)
    }

    func testGracefulCloseToAPeerThatNeverReadsIsResetAfterCloseTimeout() throws {
        // A graceful close waits for pending output, but not forever: a peer that never reads
        // must not hold the connection and its output buffer past closeTimeout. The output it
        // did not take is lost, so the cut is a reset (the peer must not read a clean EOF after
        // a shortened stream), counted and reported as a timeout, not as the EOF it began with.
        let (probe, reactor, client, reply) = try halfCloseWithQueuedReply(count: 8 << 20, queuedAtLeast: 1 << 20)
        let started = monotonicSeconds()
        // The client never reads. The server must give up on it after about a second.
        XCTAssertTrue(probe.wait(timeout: 6) { !$0.closed.isEmpty }, "still open after 6 s: \(probe.snapshot.closed)")
        XCTAssertLessThan(monotonicSeconds() - started, 4, "the close deadline was not honoured")
        XCTAssertEqual(probe.snapshot.closed, ["timeout": 1], "the cut must count as a timeout")
        XCTAssertEqual(probe.snapshot.closeLog, ["close-timeout 127.0.0.1:\(client.localPort)"])
        let statistics = reactor.statistics { $0.open == 0 }
        XCTAssertEqual(statistics.open, 0, "the connection is still in the table")
        XCTAssertEqual(statistics.closed["timeout"], 1, "statistics: \(statistics.closed)")
        // What the kernel already held arrives, then a reset, never a clean EOF.
        let (received, end) = client.receiveUntilEnd(timeout: 5, limit: reply.count)
        XCTAssertEqual(end, .reset, "a cut that dropped output ended in \(end) after \(received.count) of \(reply.count) bytes")
        XCTAssertLessThan(received.count, reply.count)
        XCTAssertNil(firstDifference(received, Array(reply[..<received.count])), "what arrived is not a prefix of the reply")
        client.close()
    }

    /// A handler's own reason (kept whole by the reactor, not as a one-byte code) is replaced
    /// by the cut's when the close deadline drops the output, and the statistics count only the
    /// cut's.
    func testTheCloseTimeoutReplacesAHandlersReason() throws {
        let (probe, reactor, client, _) = try halfCloseWithQueuedReply(count: 8 << 20, queuedAtLeast: 1 << 20,
                                                                       then: .close(CloseReason("bye")))
        XCTAssertTrue(probe.wait(timeout: 6) { !$0.closed.isEmpty }, "still open after 6 s: \(probe.snapshot.closed)")
        XCTAssertEqual(probe.snapshot.closed, ["timeout": 1], "the cut must count as a timeout, not as the handler's bye")
        XCTAssertEqual(probe.snapshot.closeLog, ["close-timeout 127.0.0.1:\(client.localPort)"])
        let statistics = reactor.statistics { $0.open == 0 }
        XCTAssertEqual(statistics.closed, ["timeout": 1], "statistics: \(statistics.closed)")
        client.close()
    }

    /// A handler's own reason reaches its onClose and the statistics once every byte is taken.
    func testAHandlersReasonIsReportedAfterAGracefulClose() throws {
        let (probe, reactor, client, reply) = try halfCloseWithQueuedReply(count: 3 << 20, queuedAtLeast: 32 << 10,
                                                                           then: .close(CloseReason("bye")))
        let (received, end) = client.receiveUntilEnd(timeout: 10, limit: reply.count)
        XCTAssertEqual(end, .eof, "after \(received.count) of \(reply.count) bytes")
        XCTAssertEqual(received.count, reply.count)
        XCTAssertTrue(probe.wait(timeout: 6) { !$0.closed.isEmpty }, "still open: \(probe.snapshot.closed)")
        XCTAssertEqual(probe.snapshot.closed, ["bye": 1])
        XCTAssertEqual(probe.snapshot.closeLog, ["bye 127.0.0.1:\(client.localPort)"])
        let statistics = reactor.statistics { $0.open == 0 }
        XCTAssertEqual(statistics.closed, ["bye": 1], "statistics: \(statistics.closed)")
        client.close()
    }

    func testGracefulCloseToASlowSteadyReaderDeliversEveryByte() throws {
        // A closing connection whose peer keeps reading is not cut, however long the flush
        // takes: closeTimeout counts time without progress, not the whole close. The reader
        // takes a little every 50 ms, for several closeTimeouts in all.
        let (probe, _, client, reply) = try halfCloseWithQueuedReply(count: 3 << 20, queuedAtLeast: 32 << 10)
        let started = monotonicSeconds()
        var received: [UInt8] = []
        var end = StreamEnd.timeout
        while monotonicSeconds() - started < 30 {
            let (bytes, how) = client.receive(upTo: 32 << 10, timeout: 0.2)
            received += bytes
            if how != .timeout { end = how; break }
            if received.count >= reply.count {
                end = client.receiveUntilEnd(timeout: 5, limit: 0).end
                break
            }
            usleep(50_000)
        }
        let took = monotonicSeconds() - started
        XCTAssertGreaterThan(took, 2.5, "the reader was not slow enough to outlast closeTimeout; the test proves nothing")
        XCTAssertEqual(received.count, reply.count, "a slow but steady reader lost output (after \(took) s, \(end))")
        XCTAssertNil(firstDifference(received, reply))
        XCTAssertEqual(end, .eof)
        XCTAssertTrue(probe.wait { $0.closed == ["eof": 1] }, "closed: \(probe.snapshot.closed)")
        client.close()
    }

    func testRefusingWithPendingOutputResetsThePeer() throws {
        // Refusing (like a discarding close) drops the pending output: the peer must read a
        // reset after what the kernel already held, not a clean EOF that passes for the end.
        let probe = Probe()
        let reply = PatternStream().bytes(from: 0, count: 8 << 20)
        let reactor = try ReactorRunner.listening(configuration: ReactorConfiguration()) {
            ReplyOnEOFHandler(reply: reply, probe: probe, then: .refuse(CloseReason("refused")))
        }
        reactors.append(reactor)
        let client = try TestSocket.connect(port: reactor.port, receiveBuffer: 4096)
        client.shutdownWrite()
        XCTAssertTrue(probe.wait { $0.closed == ["refused": 1] }, "closed: \(probe.snapshot.closed)")
        XCTAssertGreaterThan(probe.snapshot.pendingAtEOF.first ?? 0, 1 << 20, "the reply was not queued; the test proves nothing")
        let (received, end) = client.receiveUntilEnd(timeout: 5, limit: reply.count)
        XCTAssertEqual(end, .reset, "a refusal that dropped output ended in \(end) after \(received.count) of \(reply.count) bytes")
        XCTAssertLessThan(received.count, reply.count)
        client.close()
    }

    func testHalfCloseRightAfterASmallMessage() throws {
        let (reactor, _) = try startEchoReactor()
        let client = try TestSocket.connect(port: reactor.port)
        try client.send("last words\n")
        client.shutdownWrite()
        let (received, end) = client.receiveUntilEnd(timeout: 5)
        XCTAssertEqual(String(decoding: received, as: UTF8.self), "last words\n")
        XCTAssertEqual(end, .eof)
    }

    func testPeerResetDoesNotDisturbOthers() throws {
        let (reactor, probe) = try startEchoReactor()
        let clients = try (0..<4).map { _ in try TestSocket.connect(port: reactor.port) }
        for (i, client) in clients.enumerated() {
            try client.send("hello \(i)\n")
            XCTAssertEqual(try client.receiveString(exactly: "hello \(i)\n".utf8.count), "hello \(i)\n")
        }
        clients[0].closeWithReset()
        XCTAssertTrue(probe.wait { $0.closed["reset"] == 1 }, "the reset was not seen as a reset: \(probe.snapshot.closed)")
        for round in 0..<5 {
            for (i, client) in clients.enumerated().dropFirst() {
                let message = "round \(round) from \(i)\n"
                try client.send(message)
                XCTAssertEqual(try client.receiveString(exactly: message.utf8.count), message)
            }
        }
        XCTAssertEqual(probe.snapshot.closed, ["reset": 1], "only the reset connection may close")
        let statistics = reactor.statistics { $0.open == 3 }
        XCTAssertEqual(statistics.open, 3)
    }

    func testPeerResetWithPendingOutputClosesOnlyThatConnection() throws {
        let (reactor, probe) = try startEchoReactor()
        let stuck = try TestSocket.connect(port: reactor.port)
        let other = try TestSocket.connect(port: reactor.port)
        try other.send("before\n")
        XCTAssertEqual(try other.receiveString(exactly: 7), "before\n")
        // Fill every buffer on the way so the reactor holds output for `stuck`.
        _ = fillUntilBlocked(stuck, stream: PatternStream(), limit: 32 << 20)
        XCTAssertTrue(probe.wait { $0.maxPendingOutput > 0 }, "the reactor never had pending output; the test proves nothing")
        stuck.closeWithReset()
        XCTAssertTrue(probe.wait { $0.closed["reset"] == 1 }, "closed: \(probe.snapshot.closed)")
        try other.send("after\n")
        XCTAssertEqual(try other.receiveString(exactly: 6), "after\n")
        XCTAssertEqual(probe.snapshot.closed, ["reset": 1])
    }

    // MARK: many clients, slow clients

    func testFiveHundredConcurrentClients() throws {
        let (reactor, probe) = try startEchoReactor()
        let count = 500
        var clients: [TestSocket] = []
        for _ in 0..<count { clients.append(try TestSocket.connect(port: reactor.port)) }
        for round in 0..<3 {
            // Everybody writes, then everybody reads: all 500 are in flight at once.
            for (i, client) in clients.enumerated() { try client.send("client \(i) round \(round)\n") }
            for (i, client) in clients.enumerated() {
                let expected = "client \(i) round \(round)\n"
                XCTAssertEqual(try client.receiveString(exactly: expected.utf8.count), expected)
            }
        }
        let busy = reactor.statistics { $0.open == count }
        XCTAssertEqual(busy.open, count)
        XCTAssertEqual(busy.accepted, count)
        for client in clients { client.close() }
        XCTAssertTrue(probe.wait(timeout: 10) { $0.closed["eof", default: 0] == count }, "closed: \(probe.snapshot.closed)")
        let final = try XCTUnwrap(reactor.stop())
        XCTAssertEqual(final.accepted, count)
        XCTAssertEqual(final.open, 0)
        XCTAssertEqual(final.closed, ["eof": count])
    }

    /// Sends without reading until the socket will take no more for 0.5 s (or `limit` bytes).
    private func fillUntilBlocked(_ client: TestSocket, stream: PatternStream, limit: Int) -> Int {
        var sent = 0
        var lastProgress = monotonicSeconds()
        let chunk = 64 * 1024
        var pending = stream.bytes(from: 0, count: chunk)
        var pendingOffset = 0
        while sent < limit && monotonicSeconds() - lastProgress < 0.5 {
            let n = pending[pendingOffset...].withUnsafeBytes { client.sendNow($0) }
            guard let n else { break }
            if n == 0 {
                usleep(5_000)
                continue
            }
            sent += n
            pendingOffset += n
            lastProgress = monotonicSeconds()
            if pendingOffset == pending.count {
                pending = stream.bytes(from: sent, count: chunk)
                pendingOffset = 0
            }
        }
        return sent
    }

    func testPeerThatNeverReadsHasBoundedPendingOutput() throws {
        let configuration = ReactorConfiguration()
        let bound = configuration.highWatermark + configuration.readBufferSize
        let (reactor, probe) = try startEchoReactor(configuration)
        let stuck = try TestSocket.connect(port: reactor.port)
        let other = try TestSocket.connect(port: reactor.port)
        let stream = PatternStream()
        let limit = 64 << 20
        let sent = fillUntilBlocked(stuck, stream: stream, limit: limit)
        XCTAssertLessThan(sent, limit, "the sender was never pushed back: the reactor keeps reading from a peer that does not read")
        let seen = probe.snapshot
        XCTAssertGreaterThan(seen.maxPendingOutput, 0, "no output was ever queued; the test did not reach backpressure")
        XCTAssertLessThanOrEqual(seen.maxPendingOutput, bound,
                                 "pending output for a peer that never reads grew past highWatermark + readBufferSize")
        // The reactor stopped reading from it, so it read much less than was sent.
        XCTAssertLessThan(seen.bytesRead, sent)

        // Others are served meanwhile.
        for i in 0..<3 {
            try other.send("still served \(i)\n")
            XCTAssertEqual(try other.receiveString(exactly: "still served \(i)\n".utf8.count, timeout: 2), "still served \(i)\n")
        }

        // Once the peer reads, everything comes back, in order: reading resumed below the low mark.
        stuck.shutdownWrite()
        let (received, end) = stuck.receiveUntilEnd(timeout: 30, limit: sent)
        XCTAssertEqual(received.count, sent)
        XCTAssertNil(stream.firstMismatch(received))
        XCTAssertEqual(end, .eof)
        XCTAssertLessThanOrEqual(probe.snapshot.maxPendingOutput, bound)
    }

    // MARK: stopping, statistics

    func testStopFlushesAndClosesClientsAndRunReturns() throws {
        let (reactor, probe) = try startEchoReactor()
        let idle = try TestSocket.connect(port: reactor.port)
        let unread = try TestSocket.connect(port: reactor.port)
        try idle.send("hi\n")
        XCTAssertEqual(try idle.receiveString(exactly: 3), "hi\n")
        try unread.send("not read yet\n")
        XCTAssertTrue(probe.wait { $0.bytesRead == 16 })

        reactor.handle.stop()
        reactor.handle.stop()  // a second stop is harmless

        // Each client gets what it was owed, then EOF; then it closes, as a client does.
        let (idleRest, idleEnd) = idle.receiveUntilEnd(timeout: 5)
        XCTAssertEqual(idleRest, [])
        XCTAssertEqual(idleEnd, .eof)
        idle.close()
        let (unreadRest, unreadEnd) = unread.receiveUntilEnd(timeout: 5)
        XCTAssertEqual(String(decoding: unreadRest, as: UTF8.self), "not read yet\n")
        XCTAssertEqual(unreadEnd, .eof)
        unread.close()

        let final = try XCTUnwrap(reactor.waitForRunToReturn(timeout: 10), "run() did not return after handle.stop()")
        XCTAssertEqual(final.open, 0)
        XCTAssertEqual(final.closed, ["shutdown": 2])
        XCTAssertEqual(probe.snapshot.closed, ["shutdown": 2])
        // The listener is closed too.
        XCTAssertThrowsError(try TestSocket.connect(port: reactor.port, timeout: 2), "the reactor still accepts after stopping")
    }

    func testStopFlushesPendingOutputToASlowReader() throws {
        let (reactor, probe) = try startEchoReactor()
        let slow = try TestSocket.connect(port: reactor.port)
        let stream = PatternStream()
        let sent = fillUntilBlocked(slow, stream: stream, limit: 32 << 20)
        XCTAssertTrue(probe.wait { $0.maxPendingOutput > 0 }, "no output was pending; the test proves nothing")

        reactor.handle.stop()
        // Everything the handler echoed must arrive, then EOF: the stop flushes pending output.
        let (received, end) = slow.receiveUntilEnd(timeout: 20, limit: sent)
        XCTAssertEqual(end, .eof)
        slow.close()
        XCTAssertNotNil(reactor.waitForRunToReturn(timeout: 10), "run() did not return")
        let echoed = probe.snapshot.bytesRead
        XCTAssertGreaterThan(echoed, 0)
        XCTAssertEqual(received.count, echoed, "the stop dropped \(echoed - received.count) bytes of pending echo")
        XCTAssertNil(stream.firstMismatch(received))
    }

    func testStopReturnsEvenIfAPeerNeverClosesItsSide() throws {
        let (reactor, _) = try startEchoReactor()
        let stubborn = try TestSocket.connect(port: reactor.port)
        try stubborn.send("hi\n")
        XCTAssertEqual(try stubborn.receiveString(exactly: 3), "hi\n")
        // The client reads nothing and never closes: the reactor must still finish (grace period).
        let final = try XCTUnwrap(reactor.stop(timeout: 15), "run() never returned while a peer kept its side open")
        XCTAssertEqual(final.open, 0)
        XCTAssertEqual(final.closed, ["shutdown": 1])
        XCTAssertEqual(stubborn.receiveUntilEnd(timeout: 2).end, .eof)
    }

    func testStopWithoutConnectionsReturnsPromptly() throws {
        let (reactor, _) = try startEchoReactor()
        let started = monotonicSeconds()
        let final = try XCTUnwrap(reactor.stop(timeout: 5), "run() did not return after handle.stop()")
        XCTAssertLessThan(monotonicSeconds() - started, 5)
        XCTAssertEqual(final.accepted, 0)
        XCTAssertEqual(final.open, 0)
    }

    func testStatisticsCountAcceptsClosesAndBytes() throws {
        let (reactor, probe) = try startEchoReactor()

        let eofClient = try TestSocket.connect(port: reactor.port)
        try eofClient.send("hello\n")
        XCTAssertEqual(try eofClient.receiveString(exactly: 6), "hello\n")
        eofClient.shutdownWrite()
        XCTAssertEqual(eofClient.receiveUntilEnd().end, .eof)
        eofClient.close()

        let resetClient = try TestSocket.connect(port: reactor.port)
        try resetClient.send("abc\n")
        XCTAssertEqual(try resetClient.receiveString(exactly: 4), "abc\n")
        resetClient.closeWithReset()

        let quitClient = try TestSocket.connect(port: reactor.port)
        try quitClient.send("xyz\n")
        XCTAssertEqual(try quitClient.receiveString(exactly: 4), "xyz\n")
        try quitClient.send("QUIT\n")
        let quitEnd = quitClient.receiveUntilEnd()
        XCTAssertEqual(quitEnd.bytes, [])
        XCTAssertEqual(quitEnd.end, .eof)
        quitClient.close()

        XCTAssertTrue(probe.wait { $0.closed.values.reduce(0, +) == 3 }, "closed: \(probe.snapshot.closed)")
        let live = reactor.statistics { $0.accepted == 3 && $0.open == 0 }
        XCTAssertEqual(live.accepted, 3)
        XCTAssertEqual(live.open, 0)

        let final = try XCTUnwrap(reactor.stop())
        XCTAssertEqual(final.accepted, 3)
        XCTAssertEqual(final.open, 0)
        XCTAssertEqual(final.rejectedByLimit, 0)
        XCTAssertEqual(final.closed, ["eof": 1, "reset": 1, "quit": 1])
        XCTAssertEqual(final.bytesIn, 6 + 4 + 4 + 5)
        XCTAssertEqual(final.bytesOut, 6 + 4 + 4, "QUIT is not echoed")
        XCTAssertEqual(final.acceptErrors, [:])
        XCTAssertEqual(reactor.handle.latestStatistics, final, "the reactor publishes its final counters when it stops")
    }
}
