// The odd rows of the lifecycle diagram, for real: a pipe that hangs up while paused and whose
// re-add epoll refuses, a close while connecting, a linger cut by its deadline, the writability
// event, and ids that stop being live.

import TestSupport
import CEpoll
import Foundation
import Glibc
import SystemPackage
import XCTest
@testable import Reactor

/// Logs every callback; pauses on its first read if asked; answers "B" with a reply past the
/// high watermark, "Q" with a graceful close; writes one 0xEE byte when it hears onWritable.
struct ScenarioHandler: ConnectionHandler {
    let log: Locked<[String]>
    let pauseOnFirstRead: Bool
    let bigReply: [UInt8]

    func onOpen(_ connection: borrowing Connection<Self>, state: inout Bool) -> Action {
        log.withLock { $0.append("open") }
        return .continue
    }

    func onRead(_ bytes: UnsafeRawBufferPointer, connection: borrowing Connection<Self>, state: inout Bool) -> Action {
        log.withLock { $0.append("read \(bytes.count)") }
        if pauseOnFirstRead && !state {
            state = true
            return .pauseReading
        }
        if bytes.first == UInt8(ascii: "B") {
            bigReply.withUnsafeBytes { _ = connection.write($0) }
            let pending = connection.pendingOutputBytes
            log.withLock { $0.append("queued \(pending)") }
        }
        if bytes.first == UInt8(ascii: "Q") { return .close(CloseReason("quit")) }
        if bytes.first == UInt8(ascii: "S") {
            bigReply.withUnsafeBytes { _ = connection.write($0) }
            connection.context.shutdownWrite(connection.id)
        }
        return .continue
    }

    func onReadEOF(_ connection: borrowing Connection<Self>, state: inout Bool) -> Action {
        log.withLock { $0.append("eof") }
        return .close(.eof)
    }

    func onWritable(_ connection: borrowing Connection<Self>, state: inout Bool) -> Action {
        log.withLock { $0.append("writable \(connection.pendingOutputBytes)") }
        ([0xEE] as [UInt8]).withUnsafeBytes { _ = connection.write($0) }
        return .continue
    }

    func onClose(_ connection: borrowing Connection<Self>, state: inout Bool, reason: CloseReason) {
        log.withLock { $0.append("close \(reason.name)\(reason.errno.map { " \(Errno.name($0))" } ?? "")") }
    }

    func makeState() -> Bool { false }
}

final class LifecycleScenarioTests: XCTestCase {
    private func start(pauseOnFirstRead: Bool = false, bigReply: [UInt8] = [], configuration: ReactorConfiguration = ReactorConfiguration(),
                       interposer: FaultInterposer? = nil) throws -> (ReactorRunner<Int>, Locked<[String]>) {
        let log = Locked<[String]>([])
        let reactor = try ReactorRunner.listening(configuration: configuration, interposer: interposer) {
            ScenarioHandler(log: log, pauseOnFirstRead: pauseOnFirstRead, bigReply: bigReply)
        }
        return (reactor, log)
    }

    /// Runs `body` on the reactor's thread and waits for it.
    private func onReactor<T: Sendable>(_ reactor: ReactorRunner<Int>,
                                        _ body: @escaping @Sendable (ReactorContext<ScenarioHandler>) -> T) -> T? {
        let result = Locked<T?>(nil)
        let done = DispatchSemaphore(value: 0)
        guard reactor.handle.execute({ (context: ReactorContext<ScenarioHandler>) in
            result.withLock { $0 = body(context) }
            done.signal()
        }) else { return nil }
        guard done.wait(timeout: .now() + 10) == .success else { return nil }
        return result.withLock { $0 }
    }

    func testHangUpWhilePausedThenEpollRefusingTheReAddClosesWithTheError() throws {
        var configuration = ReactorConfiguration()
        configuration.readBufferSize = 1024
        let faults = FaultInterposer()
        let (reactor, log) = try start(pauseOnFirstRead: true, configuration: configuration, interposer: faults)
        var fds: [CInt] = [0, 0]
        XCTAssertEqual(pipe(&fds), 0)
        let payload = testPattern(count: 4096)
        XCTAssertEqual(payload.withUnsafeBytes { Glibc.write(fds[1], $0.baseAddress, $0.count) }, 4096)
        close(fds[1])  // the writer leaves: EPOLLHUP on the read end, with 3 KiB still buffered
        let readEnd = fds[0]
        let id = try XCTUnwrap(onReactor(reactor) { try? $0.reactor.takeUnretainedValue().adopt(fd: readEnd) } ?? nil)
        // Paused after its first read, then hung up: it steps out of the epoll set.
        XCTAssertTrue(eventually(timeout: 10) {
            self.onReactor(reactor) { $0.reactor.takeUnretainedValue().slots[Int(id.index)].pointee.registered == outOfEpollSet } == true
        }, "the hung-up, paused pipe did not leave the epoll set; log \(log.withLock { $0 })")
        XCTAssertEqual(log.withLock { $0 }, ["open", "read 1024"])
        // Resuming re-adds it; epoll refuses: the connection closes with that error, at once.
        _ = onReactor(reactor) { context in
            faults.plan(.epollCtl, .fail(.noMemory, times: 1))
            context.resumeReading(id)
        }
        XCTAssertTrue(eventually { log.withLock { $0.last } == "close error ENOMEM" }, "log \(log.withLock { $0 })")
        XCTAssertEqual(onReactor(reactor) { $0.isLive(id) }, false)
        XCTAssertNotNil(reactor.stop())
    }

    func testCloseWhileConnectingAbandonsTheConnectWithoutOnOpen() throws {
        let (reactor, log) = try start()
        let listener = try TestListener()
        let port = listener.port
        let id = try XCTUnwrap(onReactor(reactor) { context -> ConnectionID? in
            guard let id = try? context.connect(to: SocketAddress(host: "127.0.0.1", port: port)) else { return nil }
            // Still connecting: the reactor has not seen its EPOLLOUT yet.
            XCTAssertEqual(context.write(to: id, "queued before the connect finished"), .queued(pending: 34))
            context.close(id, reason: CloseReason("abandon"))
            return id
        } ?? nil)
        XCTAssertTrue(eventually { log.withLock { $0 } == ["close abandon"] }, "log \(log.withLock { $0 })")
        XCTAssertEqual(onReactor(reactor) { $0.isLive(id) }, false)
        // The peer got the connection (the kernel finished the handshake) but never a byte.
        let accepted = accept(listener.fd, nil, nil)
        XCTAssertGreaterThanOrEqual(accepted, 0)
        var byte: UInt8 = 0
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(accepted, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        XCTAssertLessThanOrEqual(recv(accepted, &byte, 1, 0), 0, "bytes queued before the connect were dropped")
        close(accepted)
        XCTAssertNotNil(reactor.stop())
    }

    func testLingerEndsAtItsDeadlineWhenThePeerNeverCloses() throws {
        let (reactor, log) = try start()
        let client = try TestSocket.connect(port: reactor.port)
        try client.send("Q")
        // Our FIN arrives at once; onClose ran when the linger began.
        XCTAssertEqual(client.receiveUntilEnd(timeout: 5).end, .eof)
        XCTAssertTrue(eventually { log.withLock { $0.last } == "close quit" })
        // The client never closes: the reactor still holds the socket, until the linger deadline.
        XCTAssertEqual(onReactor(reactor) { $0.statistics.open }, 1)
        XCTAssertTrue(eventually(timeout: 10) { self.onReactor(reactor) { $0.statistics.open } == 0 },
                      "the linger deadline did not close the socket")
        XCTAssertEqual(log.withLock { $0.filter { $0.hasPrefix("close") } }, ["close quit"], "onClose ran once")
        XCTAssertNotNil(reactor.stop())
    }

    func testHandlerHearsWhenABackedUpConnectionDrainsBelowTheLowWatermark() throws {
        // More than the kernel's largest send buffer (tcp_wmem max is 4 MiB by default) plus
        // what the client's 4 KiB receive buffer holds: most of it must queue in the reactor.
        let reply = testPattern(count: 12 << 20)
        let (reactor, log) = try start(bigReply: reply)
        let client = try TestSocket.connect(port: reactor.port, receiveBuffer: 4096)
        try client.send("B")
        XCTAssertTrue(eventually { log.withLock { $0 }.contains { $0.hasPrefix("queued") } })
        let queued = try XCTUnwrap(log.withLock { $0 }.first { $0.hasPrefix("queued") }.flatMap { Int($0.split(separator: " ")[1]) })
        XCTAssertGreaterThan(queued, ReactorConfiguration().highWatermark, "the reply did not back up")
        XCTAssertFalse(log.withLock { $0 }.contains { $0.hasPrefix("writable") }, "not writable before it drained")
        let received = try client.receive(exactly: reply.count, timeout: 60) + ((try? client.receive(exactly: 1, timeout: 5)) ?? [])
        XCTAssertNil(firstDifference(Array(received.prefix(reply.count)), reply))
        XCTAssertEqual(received.count, reply.count + 1, "log \(log.withLock { $0 })")
        XCTAssertEqual(received.last, 0xEE, "the handler's answer to onWritable comes after the backlog")
        let writable = log.withLock { $0.filter { $0.hasPrefix("writable") } }
        XCTAssertEqual(writable.count, 1, "one event per crossing: \(writable)")
        let pendingAtEvent = Int(try XCTUnwrap(writable.first).split(separator: " ")[1])!
        XCTAssertLessThan(pendingAtEvent, ReactorConfiguration().lowWatermark)
        client.close()
        XCTAssertNotNil(reactor.stop())
    }

    /// A connection handed over (``Reactor/installHandedOver(_:resume:)``) paused by its handler,
    /// with its backpressure and output between the watermarks (48 KiB: under the high one, so
    /// installing it alone would not shut the gate again): the handler hears onWritable once that
    /// output drains, as it would have in the process that handed it over. Without the flag, a
    /// handler waiting for onWritable to resume would wait for ever.
    func testAHandedOverConnectionWithBackpressureHearsOnWritableOnceItsOutputDrains() throws {
        for backpressure in [true, false] {
            let (reactor, log) = try start()
            var fds: [CInt] = [0, 0]
            XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds), 0)
            XCTAssertEqual(fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK), 0)
            let pending = testPattern(count: 48 * 1024)
            let fd = fds[0]
            let installed = onReactor(reactor) { context -> Bool in
                guard let peer = try? SocketAddress(unixPath: "peer") else { return false }
                let connection = HandedOverConnection(fd: fd, state: true, pendingOutput: pending, peer: peer,
                                                      pausedByHandler: true, backpressure: backpressure)
                return (try? context.reactor.takeUnretainedValue().installHandedOver(connection)) != nil
            }
            XCTAssertEqual(installed, true)
            let peer = fds[1]
            var timeout = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(peer, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            // The output carried, then (with backpressure) the 0xEE that onWritable writes.
            let expected = pending + (backpressure ? [0xEE] : [])
            var received: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 65536)
            while received.count < expected.count {
                let n = buffer.withUnsafeMutableBytes { recv(peer, $0.baseAddress, min($0.count, expected.count - received.count), 0) }
                guard n > 0 else { break }
                received += buffer[..<n]
            }
            XCTAssertEqual(firstDifference(received, expected), nil, "\(received.count) of \(expected.count) bytes; log \(log.withLock { $0 })")
            if backpressure {
                XCTAssertTrue(eventually { log.withLock { $0 } == ["writable 0"] }, "onWritable once drained; log \(log.withLock { $0 })")
            } else {
                // No backpressure carried: nothing to hear (a drain it never waited for).
                usleep(100_000)
                XCTAssertEqual(log.withLock { $0 }, [], "no onWritable without backpressure")
            }
            close(peer)
            XCTAssertNotNil(reactor.stop())
        }
    }

    func testShutdownWriteSendsEOFAfterTheQueuedReplyAndKeepsReading() throws {
        let reply = testPattern(count: 8 << 20)  // more than the kernel buffers: it queues first
        let (reactor, log) = try start(bigReply: reply)
        let client = try TestSocket.connect(port: reactor.port, receiveBuffer: 4096)
        try client.send("S")
        let (received, end) = client.receiveUntilEnd(timeout: 60)
        XCTAssertEqual(end, .eof, "EOF after the reply")
        // The handler's answer to onWritable (one 0xEE byte) still goes before the shutdown.
        XCTAssertEqual(received.count, reply.count + 1, "log \(log.withLock { $0 })")
        XCTAssertNil(firstDifference(received, reply + [0xEE]))
        // Our side still reads: the bytes reach the handler, and our EOF closes it.
        try client.send("after")
        XCTAssertTrue(eventually { log.withLock { $0 }.contains("read 5") }, "log \(log.withLock { $0 })")
        client.shutdownWrite()
        XCTAssertTrue(eventually { log.withLock { $0.last } == "close eof" }, "log \(log.withLock { $0 })")
        XCTAssertNotNil(reactor.stop())
    }

    func testAnIdStopsBeingLiveWhenItsConnectionIsGone() throws {
        let (reactor, log) = try start()
        let client = try TestSocket.connect(port: reactor.port)
        XCTAssertTrue(eventually { log.withLock { $0 } == ["open"] })
        let id = try XCTUnwrap(onReactor(reactor) { context -> ConnectionID? in
            let reactor = context.reactor.takeUnretainedValue()
            return (0..<reactor.slots.used).lazy.compactMap { i -> ConnectionID? in
                let slot = reactor.slots[Int(i)]
                return slot.pointee.kind == .connection ? ConnectionID(index: i, generation: slot.pointee.generation) : nil
            }.first
        } ?? nil)
        XCTAssertEqual(onReactor(reactor) { $0.isLive(id) }, true)
        client.close()
        XCTAssertTrue(eventually { log.withLock { $0.last } == "close eof" })
        XCTAssertEqual(onReactor(reactor) { $0.isLive(id) }, false)
        XCTAssertEqual(onReactor(reactor) { $0.write(to: id, "late") }, .closed)
        XCTAssertNotNil(reactor.stop())
    }
}
