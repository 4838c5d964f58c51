// The API for people reusing the Reactor for their own protocol: work from other threads
// (execute), gathered writes, the local address, and setup failures that throw.

import TestSupport
import CEpoll
import Foundation
import Glibc
import SystemPackage
import XCTest
@testable import Reactor

/// A reactor with any handler (and optionally a fault interposer) on its own thread. The test
/// reaches it only through its handle, mostly with `execute`.
final class ThreadedReactor<H: ConnectionHandler & SendableMetatype>: @unchecked Sendable {
    let handle: ReactorHandle
    let port: Int
    private let finished = DispatchSemaphore(value: 0)

    init(configuration: ReactorConfiguration = ReactorConfiguration(), interposer: FaultInterposer? = nil,
         makeHandler: @escaping @Sendable () -> H) throws {
        let ready = DispatchSemaphore(value: 0)
        let started = Locked<Result<(ReactorHandle, Int), ThreadedStartError>?>(nil)
        let finished = self.finished
        let thread = Thread {
            do {
                let reactor = try Reactor(handler: makeHandler(), configuration: configuration, interposer: interposer)
                let bound = try reactor.listen(on: try! SocketAddress(host: "127.0.0.1", port: 0))
                started.withLock { $0 = .success((reactor.handle, bound.port ?? 0)) }
                ready.signal()
                reactor.run()
            } catch {
                started.withLock { $0 = .failure(ThreadedStartError(description: "\(error)")) }
                ready.signal()
            }
            finished.signal()
        }
        thread.start()
        XCTAssertEqual(ready.wait(timeout: .now() + 10), .success)
        (handle, port) = try started.withLock { $0! }.get()
    }

    /// Stops the reactor and waits for run() to return.
    @discardableResult
    func stop(timeout: Double = 10) -> Bool {
        handle.stop()
        return finished.wait(timeout: .now() + timeout) == .success
    }

    deinit { handle.stopNow() }
}

struct ThreadedStartError: Error, CustomStringConvertible {
    let description: String
}

/// Records the id of each connection it opens, and writes what a test asks on "G" (gathered).
struct RecordingHandler: ConnectionHandler {
    let opened: Locked<[ConnectionID]>
    let localAddresses: Locked<[String]>
    let gathered: [[UInt8]]

    func onOpen(_ connection: borrowing Connection<Self>, state: inout Void) -> Action {
        let local = connection.localAddress?.description ?? "nil"
        localAddresses.withLock { $0.append(local) }
        opened.withLock { $0.append(connection.id) }
        return .continue
    }

    func onRead(_ bytes: UnsafeRawBufferPointer, connection: borrowing Connection<Self>, state: inout Void) -> Action {
        if bytes.first == UInt8(ascii: "G") {
            let pieces = gathered
            _ = withBuffers(pieces) { connection.write(contentsOf: $0) }
        }
        return .continue
    }
}

/// Calls `body` with raw buffers over `pieces` (nested withUnsafeBytes, no copy).
func withBuffers<R>(_ pieces: [[UInt8]], _ body: ([UnsafeRawBufferPointer]) -> R) -> R {
    func go(_ i: Int, _ acc: [UnsafeRawBufferPointer]) -> R {
        if i == pieces.count { return body(acc) }
        return pieces[i].withUnsafeBytes { go(i + 1, acc + [$0]) }
    }
    return go(0, [])
}

final class ReusersAPITests: XCTestCase {
    private func recording(gathered: [[UInt8]] = [], interposer: FaultInterposer? = nil)
        throws -> (ThreadedReactor<RecordingHandler>, Locked<[ConnectionID]>, Locked<[String]>) {
        let opened = Locked<[ConnectionID]>([])
        let locals = Locked<[String]>([])
        let reactor = try ThreadedReactor(interposer: interposer) {
            RecordingHandler(opened: opened, localAddresses: locals, gathered: gathered)
        }
        return (reactor, opened, locals)
    }

    // MARK: execute

    func testExecuteRunsClosuresOnTheReactorThreadInSubmissionOrder() throws {
        let (reactor, _, _) = try recording()
        let seen = Locked<[(Int, pthread_t)]>([])
        for i in 0..<1_000 {
            XCTAssertTrue(reactor.handle.execute { (_: ReactorContext<RecordingHandler>) in
                seen.withLock { $0.append((i, pthread_self())) }
            })
        }
        XCTAssertTrue(eventually(timeout: 10) { seen.withLock { $0.count } == 1_000 })
        let runs = seen.withLock { $0 }
        XCTAssertEqual(runs.map(\.0), Array(0..<1_000), "FIFO for one submitting thread")
        XCTAssertTrue(runs.allSatisfy { pthread_equal($0.1, runs[0].1) != 0 }, "all on one thread")
        XCTAssertEqual(pthread_equal(runs[0].1, pthread_self()), 0, "not on the submitting thread")
        XCTAssertTrue(reactor.stop())
    }

    func testExecuteWritesToAConnectionFromAnotherThread() throws {
        let (reactor, opened, _) = try recording()
        let client = try TestSocket.connect(port: reactor.port)
        XCTAssertTrue(eventually { opened.withLock { $0.count } == 1 })
        let id = opened.withLock { $0[0] }
        let payload: [UInt8] = [0, 1, 2, 0xFF, 0xFE, 10, 13]
        XCTAssertTrue(reactor.handle.execute { (loop: ReactorContext<RecordingHandler>) in
            payload.withUnsafeBytes { _ = loop.write(to: id, $0) }
            loop.close(id, reason: CloseReason("done"))
        })
        XCTAssertEqual(try client.receive(exactly: payload.count), payload)
        XCTAssertEqual(client.receiveUntilEnd(timeout: 5).end, .eof, "the close from execute was settled")
        XCTAssertTrue(reactor.stop())
    }

    func testExecuteRefusesWhenTheQueueIsFullAndAfterRunReturns() throws {
        let (reactor, _, _) = try recording()
        let blocking = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        let ran = Locked(0)
        // Hold the loop inside one closure, so nothing drains the queue meanwhile.
        XCTAssertTrue(reactor.handle.execute { (_: ReactorContext<RecordingHandler>) in
            blocking.signal()
            release.wait()
        })
        XCTAssertEqual(blocking.wait(timeout: .now() + 10), .success)
        let capacity = reactor.handle.executeCapacity
        var accepted = 0
        for _ in 0..<(capacity + 10) {
            if reactor.handle.execute({ (_: ReactorContext<RecordingHandler>) in ran.withLock { $0 += 1 } }) { accepted += 1 }
        }
        XCTAssertEqual(accepted, capacity, "a full queue refuses instead of growing")
        release.signal()
        XCTAssertTrue(eventually(timeout: 10) { ran.withLock { $0 } == capacity }, "every accepted closure ran once")
        XCTAssertTrue(reactor.stop())
        XCTAssertFalse(reactor.handle.execute { (_: ReactorContext<RecordingHandler>) in }, "refused after run() returned")
    }

    // MARK: gathered write

    func testGatheredWriteSendsEveryBufferInOrder() throws {
        let pieces: [[UInt8]] = [[0x47, 0], [], Array(repeating: 0xAB, count: 1000), [0xFF, 10]]
        let (reactor, _, _) = try recording(gathered: pieces)
        let client = try TestSocket.connect(port: reactor.port)
        try client.send([0x47])
        let expected = pieces.flatMap { $0 }
        XCTAssertEqual(try client.receive(exactly: expected.count), expected)
        XCTAssertTrue(client.staysQuiet(for: 0.1))
        client.close()
        XCTAssertTrue(reactor.stop())
    }

    func testGatheredWriteTheKernelCutsShortQueuesTheRestInOrder() throws {
        // Short writes at every call: the gathered write is cut inside its second buffer, and
        // the rest (including whole later buffers) must come out of the output buffer in order.
        let faults = FaultInterposer()
        faults.plan(.write, .limit(700))
        let pieces = (0..<5).map { testPattern(count: 3_000 + $0, seed: UInt64($0 + 1)) }
        let (reactor, _, _) = try recording(gathered: pieces, interposer: faults)
        let client = try TestSocket.connect(port: reactor.port)
        try client.send([0x47])
        let expected = pieces.flatMap { $0 }
        let received = try client.receive(exactly: expected.count, timeout: 10)
        XCTAssertNil(firstDifference(received, expected), "bytes differ from what was written")
        XCTAssertGreaterThan(faults.injected(.write), 10, "the limit really cut the writes")
        client.close()
        XCTAssertTrue(reactor.stop())
    }

    func testGatheredWriteOfMegabytesToASlowReaderArrivesWhole() throws {
        let pieces = (0..<4).map { testPattern(count: 1 << 20, seed: UInt64($0 + 7)) }
        let (reactor, _, _) = try recording(gathered: pieces)
        let client = try TestSocket.connect(port: reactor.port, receiveBuffer: 4096)
        try client.send([0x47])
        let expected = pieces.flatMap { $0 }
        let received = try client.receive(exactly: expected.count, timeout: 30)
        XCTAssertNil(firstDifference(received, expected))
        client.close()
        XCTAssertTrue(reactor.stop())
    }

    // MARK: local address

    func testLocalAddressIsTheAddressAndPortThePeerReached() throws {
        let (reactor, _, locals) = try recording()
        let client = try TestSocket.connect(port: reactor.port)
        XCTAssertTrue(eventually { locals.withLock { $0.count } == 1 })
        XCTAssertEqual(locals.withLock { $0 }, ["127.0.0.1:\(reactor.port)"])
        client.close()
        XCTAssertTrue(reactor.stop())
    }

    // MARK: setup failures throw

    func testListenThrowsAndLeaksNothingWhenEpollRefusesTheListener() throws {
        let faults = FaultInterposer()
        let reactor = try Reactor(handler: RecordingHandler(opened: Locked([]), localAddresses: Locked([]), gathered: []),
                                  configuration: ReactorConfiguration(), interposer: faults)
        let fdsBefore = openFDCount()
        faults.plan(.epollCtl, .fail(.noMemory, times: 1))
        XCTAssertThrowsError(try reactor.listen(on: SocketAddress(host: "127.0.0.1", port: 0))) { error in
            XCTAssertEqual((error as? SyscallError)?.errno, .noMemory)
        }
        // At most as many: the test process's other threads (a child's pipe readers, reactors of
        // earlier tests winding down) may close an fd meanwhile; a leak would show as more.
        XCTAssertLessThanOrEqual(openFDCount(), fdsBefore, "the listening socket was closed")
        XCTAssertEqual(reactor.listeningAddresses.count, 0)
        // The slot was given back and the next listen works.
        XCTAssertNoThrow(try reactor.listen(on: SocketAddress(host: "127.0.0.1", port: 0)))
        XCTAssertEqual(reactor.listeningAddresses.count, 1)
    }

    func testReactorInitThrowsWhenEpollRefusesItsOwnFDs() throws {
        let faults = FaultInterposer()
        faults.plan(.epollCtl, .fail(.noSpace, times: 1))
        let fdsBefore = openFDCount()
        XCTAssertThrowsError(try Reactor(handler: RecordingHandler(opened: Locked([]), localAddresses: Locked([]), gathered: []),
                                         configuration: ReactorConfiguration(), interposer: faults)) { error in
            XCTAssertEqual((error as? SyscallError)?.errno, .noSpace)
        }
        // At most as many (see above): a leak of the three would show as more.
        XCTAssertLessThanOrEqual(openFDCount(), fdsBefore, "epoll fd, timerfd and eventfd were closed")
    }

    func testReactorClosesEveryFDItOwnsThroughOnePath() throws {
        let faults = FaultInterposer()
        do {
            let reactor = try Reactor(handler: RecordingHandler(opened: Locked([]), localAddresses: Locked([]), gathered: []),
                                      configuration: ReactorConfiguration(), interposer: faults)
            try reactor.listen(on: SocketAddress(host: "127.0.0.1", port: 0))
        }
        // The listener, the timerfd and the epoll fd go through the seam; the eventfd belongs
        // to the handle, which went away with the reactor.
        XCTAssertEqual(faults.calls(.close), 3)
    }
}

/// Open fds of this process of the kinds a reactor opens (epoll, eventfd, timerfd, sockets),
/// so that whatever else the test process (or a sanitizer runtime) opens and closes meanwhile
/// does not count.
func openFDCount() -> Int {
    guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return -1 }
    return names.filter { name in
        guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(name)") else { return false }
        return target.hasPrefix("socket:") || target.hasPrefix("anon_inode:[eventpoll]")
            || target.hasPrefix("anon_inode:[eventfd]") || target.hasPrefix("anon_inode:[timerfd]")
    }.count
}
