// Faults that loopback rarely produces, injected through the reactor's syscall seam
// (`SyscallInterposer` in Syscall.swift). Each test runs a real Reactor on 127.0.0.1 on its own
// thread, with real client sockets, and checks that every byte a client sent came back exactly
// once and in order, or that the connection closed with the right reason and nothing else was
// disturbed.

import TestSupport
import CEpoll
import Glibc
import SystemPackage
import XCTest
@testable import Reactor

final class FaultInjectionTests: XCTestCase {

    // MARK: transient faults: nothing may be lost

    func testEINTROnEveryCallIsRetriedAndLosesNothing() throws {
        let faults = FaultInterposer()
        let interrupted: [SyscallName] = [.read, .write, .accept4, .close, .epollWait]
        for call in interrupted { faults.plan(call, .interruptOnce) }
        let server = try FaultServer(interposer: faults)
        let clients = try (0..<3).map { i in
            FaultConversation(try TestSocket.connect(port: server.port), payload: faultPayload(200_000, seed: UInt64(i)))
        }
        XCTAssertTrue(FaultPump.run(clients), "pump timed out")
        assertEchoedExactly(clients)
        let stats = try XCTUnwrap(server.stop())
        for call in interrupted {
            XCTAssertGreaterThan(faults.injected(call), 0, "no EINTR was injected into \(call)")
        }
        XCTAssertEqual(stats.closed, ["eof": 3])
        XCTAssertEqual(stats.acceptErrors, [:])
        assertHandlerSawExactly(server, clients)
    }

    func testEAGAINAfterPartialProgressLosesNothing() throws {
        let faults = FaultInterposer()
        // A small read buffer makes full reads common, so the reactor reads again in the same
        // event and meets the EAGAIN right after partial progress.
        var configuration = ReactorConfiguration()
        configuration.readBufferSize = 512
        faults.plan(.read, .cycle([.proceed, .proceed, .fail(.resourceTemporarilyUnavailable),
                                   .limit(7), .fail(.resourceTemporarilyUnavailable)]))
        faults.plan(.write, .cycle([.limit(1000), .fail(.resourceTemporarilyUnavailable), .proceed,
                                    .limit(3), .fail(.resourceTemporarilyUnavailable)]))
        let server = try FaultServer(interposer: faults, configuration: configuration)
        let clients = try (0..<3).map { i in
            FaultConversation(try TestSocket.connect(port: server.port), payload: faultPayload(150_000, seed: 10 + UInt64(i)),
                              chunk: 3000)
        }
        XCTAssertTrue(FaultPump.run(clients), "pump timed out")
        assertEchoedExactly(clients)
        let stats = try XCTUnwrap(server.stop())
        XCTAssertGreaterThan(faults.injected(.read), 0)
        XCTAssertGreaterThan(faults.injected(.write), 0)
        XCTAssertEqual(stats.closed, ["eof": 3])
        assertHandlerSawExactly(server, clients)
    }

    func testWritesAcceptingOneByteAtATimeLoseNothingAndRespectTheWatermarks() throws {
        let faults = FaultInterposer()
        faults.plan(.write, .limit(1))
        var configuration = ReactorConfiguration()
        configuration.readBufferSize = 4096
        configuration.highWatermark = 4096
        configuration.lowWatermark = 1024
        let server = try FaultServer(interposer: faults, configuration: configuration)
        let clients = try (0..<2).map { i in
            FaultConversation(try TestSocket.connect(port: server.port), payload: faultPayload(24_000, seed: 20 + UInt64(i)))
        }
        XCTAssertTrue(FaultPump.run(clients, timeout: 60), "pump timed out")
        assertEchoedExactly(clients)
        let stats = try XCTUnwrap(server.stop())
        XCTAssertEqual(stats.closed, ["eof": 2])
        XCTAssertGreaterThanOrEqual(faults.calls(.write), 48_000, "every echoed byte should have needed its own write")
        for log in server.recorder.connections {
            XCTAssertGreaterThan(log.largestPending, configuration.lowWatermark, "output never queued up for \(log.id)")
            XCTAssertLessThanOrEqual(log.largestPending, configuration.highWatermark + configuration.readBufferSize,
                                     "\(log.id) buffered more than the high watermark plus one read")
        }
        assertHandlerSawExactly(server, clients)
    }

    func testReadsReturningOneByteAtATimeLoseNothing() throws {
        let faults = FaultInterposer()
        faults.plan(.read, .limit(1))
        let server = try FaultServer(interposer: faults)
        let clients = try (0..<2).map { i in
            FaultConversation(try TestSocket.connect(port: server.port), payload: faultPayload(8_000, seed: 30 + UInt64(i)))
        }
        XCTAssertTrue(FaultPump.run(clients, timeout: 60), "pump timed out")
        assertEchoedExactly(clients)
        let stats = try XCTUnwrap(server.stop())
        XCTAssertEqual(stats.closed, ["eof": 2])
        for log in server.recorder.connections {
            XCTAssertEqual(log.largestRead, 1)
            XCTAssertEqual(log.reads, 8_000)
        }
        assertHandlerSawExactly(server, clients)
    }

    func testRandomMixOfTransientFaultsLosesNothing() throws {
        for seed: UInt64 in [1, 2, 3] {
            let faults = FaultInterposer(seed: seed)
            faults.plan(.read, .random(maxLimit: 700))
            faults.plan(.write, .random(maxLimit: 700))
            faults.plan(.accept4, .random(maxLimit: 1))
            faults.plan(.epollWait, .random(maxLimit: 1))
            faults.plan(.close, .random(maxLimit: 1))
            var configuration = ReactorConfiguration()
            configuration.readBufferSize = 1024
            configuration.highWatermark = 8192
            configuration.lowWatermark = 2048
            let server = try FaultServer(interposer: faults, configuration: configuration)
            let clients = try (0..<4).map { i in
                FaultConversation(try TestSocket.connect(port: server.port), payload: faultPayload(60_000, seed: seed * 100 + UInt64(i)),
                                  chunk: 1 + Int(seed) * 997)
            }
            XCTAssertTrue(FaultPump.run(clients, timeout: 60), "seed \(seed): pump timed out")
            assertEchoedExactly(clients, "seed \(seed)")
            let stats = try XCTUnwrap(server.stop())
            XCTAssertEqual(stats.closed, ["eof": 4], "seed \(seed)")
            XCTAssertEqual(stats.acceptErrors, [:], "seed \(seed)")
            assertHandlerSawExactly(server, clients)
        }
    }

    // MARK: per-connection failures: close that connection, with the right reason, and nothing else

    func testECONNRESETOnReadClosesOnlyThatConnectionWithReset() throws {
        try assertFailureClosesOnlyTheVictim(.read, .connectionReset)
    }

    func testEPIPEOnReadClosesOnlyThatConnectionWithReset() throws {
        try assertFailureClosesOnlyTheVictim(.read, .brokenPipe)
    }

    func testECONNRESETOnWriteClosesOnlyThatConnectionWithReset() throws {
        try assertFailureClosesOnlyTheVictim(.write, .connectionReset)
    }

    func testEPIPEOnWriteClosesOnlyThatConnectionWithReset() throws {
        try assertFailureClosesOnlyTheVictim(.write, .brokenPipe)
    }

    func testEPIPEWhileFlushingQueuedOutputDropsItAndClosesWithReset() throws {
        let faults = FaultInterposer()
        let server = try FaultServer(interposer: faults)
        let (victim, victimID, bystander) = try victimAndBystander(server)
        // The first echo write takes 1 byte (the rest is queued); the flush then meets EPIPE.
        faults.plan(.write, .cycle([.limit(1), .fail(.brokenPipe)]), fds: [victimID.fd])
        let v = FaultConversation(victim, payload: faultPayload(10_000, seed: 41), halfClose: .never)
        let b = FaultConversation(bystander, payload: faultPayload(300_000, seed: 42))
        XCTAssertTrue(FaultPump.run([v, b]), "pump timed out")
        XCTAssertTrue(b.echoedExactly, b.summary)
        XCTAssertTrue(v.end.isClosed, v.summary)
        XCTAssertTrue(v.receivedIsPrefix, v.summary)
        XCTAssertEqual(v.received.count, 1, "only the byte the first write took may arrive: \(v.summary)")
        let log = try XCTUnwrap(server.recorder.waitForClose(peerPort: victim.localPort))
        XCTAssertEqual(log.closeReason, CloseReason.reset)
        XCTAssertEqual(log.closeReason?.errno, .brokenPipe)
        let stats = try XCTUnwrap(server.stop())
        XCTAssertEqual(stats.closed, ["reset": 1, "eof": 1])
        XCTAssertEqual(server.recorder.anomalies, [])
    }

    func testEPOLLERRWithoutEPOLLINClosesOnlyThatConnectionWithReset() throws {
        let faults = FaultInterposer()
        let server = try FaultServer(interposer: faults)
        let (victim, victimID, bystander) = try victimAndBystander(server)
        let rewritten = Locked(0)
        faults.rewriteBatches { events, _ in
            for i in events.indices where events[i].index == victimID.index && events[i].generation == victimID.generation {
                events[i].mask = CEPOLL_ERR
                rewritten.withLock { $0 += 1 }
            }
        }
        let v = FaultConversation(victim, payload: faultPayload(4_000, seed: 51), halfClose: .never)
        let b = FaultConversation(bystander, payload: faultPayload(300_000, seed: 52))
        XCTAssertTrue(FaultPump.run([v, b]), "pump timed out")
        XCTAssertTrue(b.echoedExactly, b.summary)
        XCTAssertTrue(v.end.isClosed, v.summary)
        XCTAssertEqual(v.received.count, 0, v.summary)
        let log = try XCTUnwrap(server.recorder.waitForClose(peerPort: victim.localPort))
        XCTAssertEqual(log.closeReason, CloseReason.reset)
        // SO_ERROR is 0 on a healthy socket: the reactor reports ECONNRESET then.
        XCTAssertEqual(log.closeReason?.errno, .connectionReset)
        XCTAssertEqual(log.byteCount, 0, "the handler must not be given bytes of a failed socket")
        XCTAssertGreaterThan(rewritten.withLock { $0 }, 0)
        let stats = try XCTUnwrap(server.stop())
        XCTAssertEqual(stats.closed, ["reset": 1, "eof": 1])
        XCTAssertEqual(server.recorder.anomalies, [])
    }

    func testEPOLLHUPWithoutEPOLLINStillDeliversEveryByteAndTheEOF() throws {
        let faults = FaultInterposer()
        let server = try FaultServer(interposer: faults)
        let (victim, victimID, bystander) = try victimAndBystander(server)
        let rewritten = Locked(0)
        // Every "readable" report for the victim arrives as a bare EPOLLHUP instead.
        faults.rewriteBatches { events, _ in
            for i in events.indices where events[i].index == victimID.index && events[i].mask & CEPOLL_IN != 0 {
                events[i].mask = (events[i].mask & ~CEPOLL_IN) | CEPOLL_HUP
                rewritten.withLock { $0 += 1 }
            }
        }
        let v = FaultConversation(victim, payload: faultPayload(100_000, seed: 61))
        let b = FaultConversation(bystander, payload: faultPayload(100_000, seed: 62))
        XCTAssertTrue(FaultPump.run([v, b]), "pump timed out")
        assertEchoedExactly([v, b])
        XCTAssertGreaterThan(rewritten.withLock { $0 }, 0)
        let stats = try XCTUnwrap(server.stop())
        XCTAssertEqual(stats.closed, ["eof": 2])
        assertHandlerSawExactly(server, [v, b])
    }

    func testPeerResetReportedAsEPOLLERRAndEPOLLHUPWithoutEPOLLINClosesWithReset() throws {
        let faults = FaultInterposer()
        let server = try FaultServer(interposer: faults)
        let (victim, victimID, bystander) = try victimAndBystander(server)
        let greeting = faultPayload(100, seed: 71)
        let hello = FaultConversation(victim, payload: greeting, halfClose: .never)
        XCTAssertTrue(FaultPump.run([hello]))
        XCTAssertEqual(hello.received, greeting)

        // Hide the victim from the reactor while it sends and then resets, then show the reactor
        // what the kernel reports for a reset socket, minus EPOLLIN.
        enum Mode { case hide, stripIn }
        let mode = Locked(Mode.hide)
        let seen = Locked<[UInt32]>([])
        faults.rewriteBatches { events, _ in
            mode.withLock { m in
                switch m {
                case .hide:
                    events.removeAll { $0.index == victimID.index }
                case .stripIn:
                    for i in events.indices where events[i].index == victimID.index {
                        seen.withLock { $0.append(events[i].mask) }
                        events[i].mask &= ~CEPOLL_IN
                    }
                }
            }
        }
        try victim.send(faultPayload(1000, seed: 72))
        victim.closeWithReset()
        usleep(50_000)
        mode.withLock { $0 = .stripIn }
        let log = try XCTUnwrap(server.recorder.waitForClose(peerPort: hello.client.localPort))
        XCTAssertEqual(log.closeReason, CloseReason.reset)
        XCTAssertEqual(log.closeReason?.errno, .connectionReset, "SO_ERROR of a reset socket")
        XCTAssertEqual(log.byteCount, greeting.count, "bytes behind the reset must not reach the handler")
        let masks = seen.withLock { $0 }
        XCTAssertTrue(masks.contains { $0 & CEPOLL_ERR != 0 && $0 & CEPOLL_HUP != 0 },
                      "expected EPOLLERR|EPOLLHUP for the reset socket, saw \(masks.map { String($0, radix: 16) })")

        let b = FaultConversation(bystander, payload: faultPayload(50_000, seed: 73))
        XCTAssertTrue(FaultPump.run([b]), "pump timed out")
        XCTAssertTrue(b.echoedExactly, b.summary)
        let stats = try XCTUnwrap(server.stop())
        XCTAssertEqual(stats.closed, ["reset": 1, "eof": 1])
        XCTAssertEqual(server.recorder.anomalies, [])
    }

    func testPeerThatNeverReadsIsHeldToTheHighWatermarkPlusOneRead() throws {
        let faults = FaultInterposer()
        let configuration = ReactorConfiguration()
        let server = try FaultServer(interposer: faults, configuration: configuration, recorder: FaultRecorder(keepBytes: false))
        let (victim, victimID, bystander) = try victimAndBystander(server)
        // The kernel never takes a byte for the victim, as if its peer never read.
        faults.plan(.write, .fail(.resourceTemporarilyUnavailable, times: .max), fds: [victimID.fd])
        let payload = faultPayload(4 << 20, seed: 81)
        var offset = 0
        let deadline = monotonicSeconds() + 1.5
        while offset < payload.count && monotonicSeconds() < deadline {
            if case .success(let n) = victim.sendSome(payload[offset..<min(payload.count, offset + 65536)]) {
                offset += n
                if n == 0 { usleep(2000) }
            } else { break }
        }
        usleep(100_000)
        let bound = configuration.highWatermark + configuration.readBufferSize
        let log = try XCTUnwrap(server.recorder.connection(peerPort: victim.localPort))
        XCTAssertGreaterThan(log.largestPending, configuration.highWatermark, "the reactor should have buffered up to the mark")
        XCTAssertLessThanOrEqual(log.largestPending, bound)
        XCTAssertLessThanOrEqual(log.byteCount, bound, "the reactor kept reading from a peer that does not read")
        XCTAssertLessThan(log.byteCount, offset, "the client's excess should still sit in kernel buffers")

        let b = FaultConversation(bystander, payload: faultPayload(100_000, seed: 82))
        XCTAssertTrue(FaultPump.run([b]), "pump timed out")
        XCTAssertTrue(b.echoedExactly, b.summary)
        victim.closeWithReset()
        let closed = try XCTUnwrap(server.recorder.waitForClose(peerPort: log.peerPort))
        XCTAssertEqual(closed.closeReason, CloseReason.reset)
        let stats = try XCTUnwrap(server.stop())
        XCTAssertEqual(stats.closed, ["reset": 1, "eof": 1])
    }

    // MARK: epoll_ctl refusing a connection (ENOMEM, or ENOSPC past max_user_watches)

    func testEpollCtlENOSPCOnAddClosesThatConnectionAndAcceptingGoesOn() throws {
        let faults = FaultInterposer()
        let server = try FaultServer(interposer: faults)
        // The next epoll_ctl is the EPOLL_CTL_ADD of the next accepted connection.
        faults.plan(.epollCtl, .fail(.noSpace, times: 1))
        let refused = try TestSocket.connect(port: server.port)
        let (_, end) = refused.receiveUntilEnd(timeout: 10)
        XCTAssertTrue(end.isClosed, "the connection epoll refused should be closed, not left hanging")
        XCTAssertEqual(faults.injected(.epollCtl), 1)
        let next = FaultConversation(try TestSocket.connect(port: server.port), payload: faultPayload(50_000, seed: 131))
        XCTAssertTrue(FaultPump.run([next]), "pump timed out")
        XCTAssertTrue(next.echoedExactly, next.summary)
        let stats = try XCTUnwrap(server.stop())
        XCTAssertEqual(stats.closed["error"], 1)
        XCTAssertEqual(stats.closed["eof"], 1)
        // The handler saw the refused connection either not at all, or opened and then closed:
        // never a close for a connection it was not told about (makeState promises "onOpen
        // follows at once").
        XCTAssertEqual(server.recorder.anomalies, [])
    }

    func testEpollCtlENOMEMOnModifyClosesOnlyThatConnectionWithError() throws {
        let faults = FaultInterposer()
        let server = try FaultServer(interposer: faults)
        let (victim, victimID, bystander) = try victimAndBystander(server)
        // A short write makes the reactor arm EPOLLOUT (EPOLL_CTL_MOD), which epoll refuses.
        faults.plan(.write, .limit(1), fds: [victimID.fd])
        faults.plan(.epollCtl, .fail(.noMemory, times: 1), fds: [victimID.fd])
        let v = FaultConversation(victim, payload: faultPayload(10_000, seed: 141), halfClose: .never)
        let b = FaultConversation(bystander, payload: faultPayload(100_000, seed: 142))
        XCTAssertTrue(FaultPump.run([v, b]), "pump timed out")
        XCTAssertTrue(b.echoedExactly, b.summary)
        XCTAssertTrue(v.end.isClosed, v.summary)
        XCTAssertTrue(v.receivedIsPrefix, v.summary)
        let log = try XCTUnwrap(server.recorder.waitForClose(peerPort: victim.localPort))
        XCTAssertEqual(log.closeReason?.name, "error")
        XCTAssertEqual(log.closeReason?.errno, .noMemory)
        let stats = try XCTUnwrap(server.stop())
        XCTAssertEqual(stats.closed, ["error": 1, "eof": 1])
        XCTAssertEqual(server.recorder.anomalies, [])
    }

    // MARK: accept failures: the listener stays alive, backs off without spinning, and resumes

    func testAcceptEMFILEBacksOffAndResumes() throws { try assertAcceptBacksOffAndResumes(.tooManyOpenFiles, "EMFILE") }
    func testAcceptENFILEBacksOffAndResumes() throws { try assertAcceptBacksOffAndResumes(.tooManyOpenFilesInSystem, "ENFILE") }
    func testAcceptENOBUFSBacksOffAndResumes() throws { try assertAcceptBacksOffAndResumes(.noBufferSpace, "ENOBUFS") }
    func testAcceptENOMEMBacksOffAndResumes() throws { try assertAcceptBacksOffAndResumes(.noMemory, "ENOMEM") }

    func testAcceptECONNABORTEDIsRetriedAtOnce() throws {
        let faults = FaultInterposer()
        faults.plan(.accept4, .fail(.connectionAbort, times: 3))
        let server = try FaultServer(interposer: faults)
        let first = FaultConversation(try TestSocket.connect(port: server.port), payload: faultPayload(10_000, seed: 91))
        XCTAssertTrue(FaultPump.run([first]), "pump timed out")
        let second = FaultConversation(try TestSocket.connect(port: server.port), payload: faultPayload(10_000, seed: 92))
        XCTAssertTrue(FaultPump.run([second]), "pump timed out")
        assertEchoedExactly([first, second])
        let stats = try XCTUnwrap(server.stop())
        XCTAssertEqual(stats.acceptErrors, [:], "ECONNABORTED is not an accept error: the peer gave up, not us")
        XCTAssertEqual(stats.acceptPauses, 0)
        let accepts = faults.accepts
        let aborted = accepts.prefix { $0.answer == .fail(.connectionAbort) }
        XCTAssertEqual(aborted.count, 3)
        // Retried inside the same wakeup: no epoll_wait between the aborts and the accept.
        XCTAssertEqual(Set(accepts.prefix(4).map(\.epollWaitsBefore)).count, 1)
        XCTAssertEqual(stats.closed, ["eof": 2])
    }

    // MARK: an fd closed and reused inside one epoll batch

    func testStaleEventForAnFDClosedAndReusedInTheSameBatchIsDropped() throws {
        let faults = FaultInterposer()
        let server = try FaultServer(interposer: faults)
        let a = try TestSocket.connect(port: server.port)
        let hello = FaultConversation(a, payload: faultPayload(100, seed: 101), halfClose: .never)
        XCTAssertTrue(FaultPump.run([hello]))
        XCTAssertEqual(hello.received, hello.payload)
        let aID = try XCTUnwrap(server.recorder.connection(peerPort: a.localPort)).id
        let aPort = a.localPort

        // The script: while B waits in the backlog and A resets, hide both from the reactor.
        // Then hand it one batch: [A's error event, the listener's event, a copy of A's event].
        // A closes (abortively, at once), B is accepted on A's fd number, and the copy, which
        // still carries A's generation, arrives for an fd that now belongs to B.
        enum Phase { case hold, armed, done }
        struct Script {
            var phase = Phase.hold
            var batch: [FaultEvent] = []
        }
        let script = Locked(Script())
        let listenerSlot = server.listenerSlot
        faults.rewriteBatches { events, capacity in
            script.withLock { s in
                switch s.phase {
                case .done:
                    return
                case .hold:
                    events.removeAll { $0.index == aID.index || $0.index == listenerSlot }
                case .armed:
                    guard let ai = events.firstIndex(where: { $0.index == aID.index && $0.generation == aID.generation }),
                          let li = events.firstIndex(where: { $0.index == listenerSlot })
                    else {
                        events.removeAll { $0.index == aID.index || $0.index == listenerSlot }
                        return
                    }
                    let aEvent = events[ai], listenerEvent = events[li]
                    let others = events.indices.filter { $0 != ai && $0 != li }.map { events[$0] }
                    // What the kernel reports for a reset socket, so a stale delivery would close B.
                    let stale = FaultEvent(mask: CEPOLL_IN | CEPOLL_ERR | CEPOLL_HUP, data: aEvent.data)
                    events = Array(([aEvent, listenerEvent, stale] + others).prefix(capacity))
                    s.batch = events
                    s.phase = .done
                }
            }
        }
        let b = try TestSocket.connect(port: server.port)
        a.closeWithReset()
        // accept4 gives the lowest free fd: take every free fd below A's (the client's own
        // socket that reset() just freed, among others), so that A's is the one B gets.
        var placeholders: [CInt] = []
        defer { for p in placeholders { Glibc.close(p) } }
        while true {
            let p = socket(AF_INET, CEPOLL_SOCK_STREAM, 0)
            guard p >= 0 else { break }
            if p < aID.fd { placeholders.append(p) } else { Glibc.close(p); break }
        }
        script.withLock { $0.phase = .armed }
        let deadline = monotonicSeconds() + 10
        while script.withLock({ $0.phase }) != .done && monotonicSeconds() < deadline { usleep(1000) }
        let batch = script.withLock { $0.batch }
        XCTAssertEqual(batch.count, 3, "the scripted batch never ran: \(batch)")

        let bLog = try XCTUnwrap(server.recorder.waitForConnection(peerPort: b.localPort))
        XCTAssertEqual(bLog.id.fd, aID.fd, "B should have been given A's fd number")
        // The stale event names A's slot: the test means something only if B now sits in it.
        XCTAssertEqual(bLog.id.index, aID.index, "B should have been given A's slot")
        XCTAssertNotEqual(bLog.id.generation, aID.generation)
        let bTalk = FaultConversation(b, payload: faultPayload(100_000, seed: 102))
        XCTAssertTrue(FaultPump.run([bTalk]), "pump timed out")
        XCTAssertTrue(bTalk.echoedExactly, bTalk.summary)

        let stats = try XCTUnwrap(server.stop())
        XCTAssertEqual(stats.staleEvents, 1)
        XCTAssertEqual(server.recorder.connection(peerPort: aPort)?.closeReason, CloseReason.reset)
        let bFinal = try XCTUnwrap(server.recorder.connection(peerPort: b.localPort))
        XCTAssertEqual(bFinal.closeReason, CloseReason.eof)
        XCTAssertTrue(bFinal.bytes == bTalk.payload,
                      "B's handler was given \(bFinal.byteCount) bytes, not the \(bTalk.payload.count) B sent")
        XCTAssertEqual(stats.closed, ["reset": 1, "eof": 1])
        XCTAssertEqual(server.recorder.anomalies, [])
    }

    func testStaleEventForAClosedFDThatWasNotReusedIsDropped() throws {
        let faults = FaultInterposer()
        let server = try FaultServer(interposer: faults)
        let bystander = try TestSocket.connect(port: server.port)
        XCTAssertNotNil(server.recorder.waitForConnection(peerPort: bystander.localPort))
        let a = FaultConversation(try TestSocket.connect(port: server.port), payload: faultPayload(1000, seed: 111))
        XCTAssertTrue(FaultPump.run([a]))
        XCTAssertTrue(a.echoedExactly, a.summary)
        let aLog = try XCTUnwrap(server.recorder.waitForClose(peerPort: a.client.localPort))
        XCTAssertEqual(aLog.closeReason, CloseReason.eof)

        let injected = Locked(false)
        faults.rewriteBatches { events, capacity in
            injected.withLock { done in
                guard !done, events.count < capacity else { return }
                events.insert(FaultEvent(mask: CEPOLL_IN | CEPOLL_ERR | CEPOLL_HUP, index: aLog.id.index,
                                         generation: aLog.id.generation), at: 0)
                done = true
            }
        }
        let b = FaultConversation(bystander, payload: faultPayload(50_000, seed: 112))
        XCTAssertTrue(FaultPump.run([b]), "pump timed out")
        XCTAssertTrue(b.echoedExactly, b.summary)
        XCTAssertTrue(injected.withLock { $0 })
        let stats = try XCTUnwrap(server.stop())
        XCTAssertEqual(stats.staleEvents, 1)
        XCTAssertEqual(stats.closed, ["eof": 2])
        XCTAssertEqual(server.recorder.anomalies, [])
    }

    // MARK: helpers

    /// Two connected clients whose server side is open; returns the victim's server-side id.
    private func victimAndBystander(_ server: FaultServer) throws -> (TestSocket, ConnectionID, TestSocket) {
        let victim = try TestSocket.connect(port: server.port)
        let bystander = try TestSocket.connect(port: server.port)
        let victimLog = try XCTUnwrap(server.recorder.waitForConnection(peerPort: victim.localPort), "victim never accepted")
        _ = try XCTUnwrap(server.recorder.waitForConnection(peerPort: bystander.localPort), "bystander never accepted")
        return (victim, victimLog.id, bystander)
    }

    private func assertFailureClosesOnlyTheVictim(_ call: SyscallName, _ e: Errno,
                                                  file: StaticString = #filePath, line: UInt = #line) throws {
        let faults = FaultInterposer()
        let server = try FaultServer(interposer: faults)
        let (victim, victimID, bystander) = try victimAndBystander(server)
        faults.plan(call, .fail(e, times: 1), fds: [victimID.fd])
        let v = FaultConversation(victim, payload: faultPayload(20_000, seed: 1), halfClose: .never)
        let b = FaultConversation(bystander, payload: faultPayload(300_000, seed: 2))
        XCTAssertTrue(FaultPump.run([v, b]), "pump timed out", file: file, line: line)
        XCTAssertTrue(b.echoedExactly, "bystander: \(b.summary)", file: file, line: line)
        XCTAssertTrue(v.end.isClosed, "victim: \(v.summary)", file: file, line: line)
        XCTAssertEqual(v.received.count, 0, "the failed call sent nothing: \(v.summary)", file: file, line: line)
        let log = try XCTUnwrap(server.recorder.waitForClose(peerPort: victim.localPort), file: file, line: line)
        XCTAssertEqual(log.closeReason, CloseReason.reset, file: file, line: line)
        XCTAssertEqual(log.closeReason?.errno, e, file: file, line: line)
        if call == .read { XCTAssertEqual(log.byteCount, 0, file: file, line: line) }
        XCTAssertEqual(faults.injected(call), 1, file: file, line: line)
        let stats = try XCTUnwrap(server.stop(), file: file, line: line)
        XCTAssertEqual(stats.closed, ["reset": 1, "eof": 1], file: file, line: line)
        XCTAssertEqual(server.recorder.anomalies, [], file: file, line: line)
    }

    private func assertAcceptBacksOffAndResumes(_ e: Errno, _ name: String,
                                                file: StaticString = #filePath, line: UInt = #line) throws {
        let failures = 3
        let faults = FaultInterposer()
        faults.plan(.accept4, .fail(e, times: failures))
        let server = try FaultServer(interposer: faults)
        let start = monotonicSeconds()
        let first = FaultConversation(try TestSocket.connect(port: server.port), payload: faultPayload(10_000, seed: 121))
        XCTAssertTrue(FaultPump.run([first]), "pump timed out", file: file, line: line)
        let elapsed = monotonicSeconds() - start
        // Accepting resumed for good: a later client is served at once.
        let second = FaultConversation(try TestSocket.connect(port: server.port), payload: faultPayload(10_000, seed: 122))
        XCTAssertTrue(FaultPump.run([second]), "pump timed out", file: file, line: line)
        assertEchoedExactly([first, second], name, file: file, line: line)
        let stats = try XCTUnwrap(server.stop(), file: file, line: line)
        XCTAssertEqual(stats.acceptErrors, [name: failures], file: file, line: line)
        XCTAssertEqual(stats.acceptPauses, failures, file: file, line: line)
        XCTAssertEqual(stats.closed, ["eof": 2], file: file, line: line)
        // Each failure paused accepting for Budget.acceptBackoffNs (100 ms)…
        XCTAssertGreaterThanOrEqual(elapsed, 0.9 * Double(failures) * Double(Budget.acceptBackoffNs) / 1e9, file: file, line: line)
        // …without spinning: a handful of epoll_wait calls per back-off, not thousands.
        let accepts = faults.accepts
        let failed = accepts.prefix { $0.answer == .fail(e) }
        XCTAssertEqual(failed.count, failures, "accept4 was retried while paused", file: file, line: line)
        let resumed = try XCTUnwrap(accepts.dropFirst(failures).first, file: file, line: line)
        let waits = resumed.epollWaitsBefore - failed.first!.epollWaitsBefore
        XCTAssertLessThanOrEqual(waits, 5 * failures, "\(waits) epoll_wait calls during \(failures) back-offs", file: file, line: line)
    }

    private func assertEchoedExactly(_ conversations: [FaultConversation], _ context: String = "",
                                     file: StaticString = #filePath, line: UInt = #line) {
        for c in conversations {
            XCTAssertTrue(c.echoedExactly, "\(context) \(c.summary)", file: file, line: line)
            if !c.echoedExactly, let i = c.received.indices.first(where: { $0 >= c.payload.count || c.received[$0] != c.payload[$0] }) {
                XCTFail("\(context) first difference at byte \(i)", file: file, line: line)
            }
        }
    }

    /// The handler was given exactly what each client sent, and closed it once, after EOF.
    private func assertHandlerSawExactly(_ server: FaultServer, _ conversations: [FaultConversation],
                                         file: StaticString = #filePath, line: UInt = #line) {
        for c in conversations {
            guard let log = server.recorder.connection(peerPort: c.client.localPort) else {
                XCTFail("no server-side record of \(c.summary)", file: file, line: line)
                continue
            }
            if server.recorder.keepBytes {
                XCTAssertTrue(log.bytes == c.payload, "handler saw \(log.byteCount) bytes of \(c.payload.count), or different ones",
                              file: file, line: line)
            }
            XCTAssertTrue(log.sawEOF, file: file, line: line)
            XCTAssertEqual(log.closeReason, CloseReason.eof, file: file, line: line)
        }
        XCTAssertEqual(server.recorder.anomalies, [], file: file, line: line)
    }
}
