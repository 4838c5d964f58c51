// The kernel echo (KernelEcho.swift): a handler that echoes every byte unchanged lets the reactor
// echo bulk streams with splice(2) through one pipe per reactor. Real loopback clients, binary
// payloads; the syscall seam for what loopback does not produce (a socket that takes part of a
// splice, a kernel that cannot splice). Each test checks that every byte came back exactly once
// and in order, and through which path (ReactorStatistics.bytesEchoedInKernel, the handler's count).

import TestSupport
import Glibc
import Synchronization
import SystemPackage
import XCTest
@testable import Reactor

/// Echoes what it is given and counts it; says whether it echoes unchanged as told.
struct KernelEchoTestHandler: ConnectionHandler {
    let allows: Bool
    let seen: Seen

    final class Seen: Sendable {
        let bytes = Atomic<Int>(0)
    }

    func onRead(_ bytes: UnsafeRawBufferPointer, connection: borrowing Connection<Self>, state: inout Void) -> Action {
        connection.write(bytes)
        seen.bytes.add(bytes.count, ordering: .relaxed)
        return .continue
    }

    func echoesUnchanged(_ connection: borrowing Connection<Self>, state: inout Void) -> Bool { allows }
}

final class KernelEchoTests: XCTestCase {
    override func setUp() {
        super.setUp()
        // The kernel echo runs only while SIGPIPE is ignored (splice has no MSG_NOSIGNAL).
        signal(SIGPIPE, SIG_IGN)
    }

    private struct Run {
        let statistics: ReactorStatistics
        let handlerSaw: Int
        let sent: Int
    }

    /// Streams `clients` payloads of `size` bytes (sent in chunks of `chunk`) through a reactor
    /// at once, checks each came back exactly, and returns the reactor's counters.
    private func stream(clients: Int = 3, size: Int = 3_000_000, chunk: Int = 256 * 1024, allows: Bool = true,
                        configuration: ReactorConfiguration = ReactorConfiguration(), faults: FaultInterposer? = nil,
                        file: StaticString = #filePath, line: UInt = #line) throws -> Run {
        let seen = KernelEchoTestHandler.Seen()
        let reactor = try ReactorRunner.listening(configuration: configuration, interposer: faults) {
            KernelEchoTestHandler(allows: allows, seen: seen)
        }
        let conversations = try (0..<clients).map { i in
            FaultConversation(try TestSocket.connect(port: reactor.port), payload: faultPayload(size, seed: 700 + UInt64(i)), chunk: chunk)
        }
        let finished = FaultPump.run(conversations, timeout: 60)
        let statistics = try XCTUnwrap(reactor.stop(timeout: 10, thenNow: true), file: file, line: line)
        XCTAssertTrue(finished, "pump timed out", file: file, line: line)
        for c in conversations {
            XCTAssertTrue(c.echoedExactly, c.summary, file: file, line: line)
        }
        XCTAssertEqual(statistics.closed, ["eof": clients], file: file, line: line)
        XCTAssertEqual(statistics.bytesIn, clients * size, file: file, line: line)
        XCTAssertEqual(statistics.bytesOut, clients * size, file: file, line: line)
        return Run(statistics: statistics, handlerSaw: seen.bytes.load(ordering: .relaxed), sent: clients * size)
    }

    // MARK: when it is used

    func testBulkStreamsAreEchoedInTheKernelByteExact() throws {
        let run = try stream()
        // The first bulk read of each connection goes through the handler; after that, the kernel.
        XCTAssertGreaterThan(run.statistics.bytesEchoedInKernel, run.sent / 2, "most of the stream should be spliced")
        XCTAssertEqual(run.handlerSaw + run.statistics.bytesEchoedInKernel, run.sent,
                       "every byte either reached the handler or was echoed in the kernel, once")
    }

    func testAHandlerThatDoesNotEchoUnchangedSeesEveryByte() throws {
        let run = try stream(allows: false)
        XCTAssertEqual(run.statistics.bytesEchoedInKernel, 0)
        XCTAssertEqual(run.handlerSaw, run.sent)
    }

    func testTurnedOffInTheConfigurationEveryByteIsRead() throws {
        var configuration = ReactorConfiguration()
        configuration.kernelEcho = false
        let faults = FaultInterposer()
        let run = try stream(configuration: configuration, faults: faults)
        XCTAssertEqual(run.statistics.bytesEchoedInKernel, 0)
        XCTAssertEqual(run.handlerSaw, run.sent)
        XCTAssertEqual(faults.calls(.spliceIn), 0)
    }

    func testMessageSizedExchangesNeverSplice() throws {
        let seen = KernelEchoTestHandler.Seen()
        let faults = FaultInterposer()
        let reactor = try ReactorRunner.listening(interposer: faults) { KernelEchoTestHandler(allows: true, seen: seen) }
        let client = try TestSocket.connect(port: reactor.port)
        for round in 0..<200 {
            let message = faultPayload(64 + round % 4000, seed: UInt64(round))
            try client.send(message)
            XCTAssertEqual(try client.receive(exactly: message.count), message)
        }
        let statistics = try XCTUnwrap(reactor.stop(timeout: 10, thenNow: true))
        XCTAssertEqual(faults.calls(.spliceIn), 0, "a request/response exchange was spliced")
        XCTAssertEqual(statistics.bytesEchoedInKernel, 0)
        XCTAssertEqual(seen.bytes.load(ordering: .relaxed), statistics.bytesIn)
    }

    // MARK: faults: nothing lost, nothing crosses connections

    func testShortAndRefusedSplicesBackLoseNothingAcrossConnections() throws {
        // The socket takes part of a splice, or none of it: what stays in the pipe must leave it
        // at once (queued as output), or the next connection's splice would carry it.
        let faults = FaultInterposer()
        // The write that follows takes only part of the rest, so bytes are queued: the next
        // splice (often in the same event, after a full one) must not overtake them.
        faults.plan(.spliceOut, .cycle([.limit(1000), .fail(.resourceTemporarilyUnavailable), .proceed, .limit(40_000)]))
        faults.plan(.write, .cycle([.proceed, .proceed, .proceed, .limit(500), .fail(.resourceTemporarilyUnavailable)]))
        let run = try stream(clients: 4, size: 2_000_000, faults: faults)
        XCTAssertGreaterThan(faults.injected(.write), 0)
        XCTAssertGreaterThan(faults.injected(.spliceOut), 10)
        XCTAssertGreaterThan(run.statistics.bytesEchoedInKernel, 0)
        XCTAssertLessThan(run.statistics.bytesEchoedInKernel + run.handlerSaw, run.sent,
                          "some spliced bytes should have gone back through the output buffer")
    }

    func testAFailedSpliceBackIsRetriedAsAWrite() throws {
        // An error on the splice back (here injected: the socket itself is fine) empties the pipe
        // and writes the bytes the ordinary way, which finds the socket's real state.
        let faults = FaultInterposer()
        faults.plan(.spliceOut, .fail(.connectionReset, times: 3))
        let run = try stream(faults: faults)
        XCTAssertEqual(faults.injected(.spliceOut), 3)
        XCTAssertGreaterThan(run.statistics.bytesEchoedInKernel, 0)
    }

    func testAKernelThatCannotSpliceFallsBackToReadsForGood() throws {
        let faults = FaultInterposer()
        faults.plan(.spliceIn, .fail(.invalidArgument, times: 1))
        let run = try stream(faults: faults)
        XCTAssertEqual(faults.calls(.spliceIn), 1, "the reactor kept trying to splice after EINVAL")
        XCTAssertEqual(run.statistics.bytesEchoedInKernel, 0)
        XCTAssertEqual(run.handlerSaw, run.sent)
    }

    func testASocketThatCannotBeSplicedToFallsBackAndKeepsTheBytes() throws {
        let faults = FaultInterposer()
        faults.plan(.spliceOut, .fail(.invalidArgument, times: 1))
        let run = try stream(faults: faults)
        XCTAssertEqual(faults.calls(.spliceOut), 1)
        XCTAssertEqual(faults.calls(.spliceIn), 1, "the reactor kept splicing after the way back failed with EINVAL")
        XCTAssertEqual(run.statistics.bytesEchoedInKernel, 0)
        // The one splice in brought bytes the handler never saw; they went back by a write.
        XCTAssertLessThan(run.handlerSaw, run.sent)
    }

    func testAPeerThatStopsReadingStopsTheStreamAtTheWatermark() throws {
        // Kernel echo or not, a peer that does not read gets no more than the socket buffers and
        // one output buffer: the reactor stops reading it, so its sends stop making progress.
        let seen = KernelEchoTestHandler.Seen()
        var configuration = ReactorConfiguration()
        configuration.sendTimeout = .seconds(60)
        let reactor = try ReactorRunner.listening(configuration: configuration, interposer: nil) {
            KernelEchoTestHandler(allows: true, seen: seen)
        }
        let client = try TestSocket.connect(port: reactor.port, receiveBuffer: 64 * 1024)
        let chunk = faultPayload(1 << 20, seed: 99)
        var sent = 0
        var stalled = false
        let deadline = monotonicSeconds() + 20
        while monotonicSeconds() < deadline {
            let n = chunk.withUnsafeBytes { client.sendNow($0) } ?? 0
            if n > 0 { sent += n; continue }
            // Nothing taken: give the reactor time to read more, if it still reads.
            usleep(200_000)
            if (chunk.withUnsafeBytes { client.sendNow($0) } ?? 0) == 0 { stalled = true; break }
        }
        let statistics = reactor.statistics { $0.bytesIn > 0 }
        XCTAssertTrue(stalled, "the reactor kept reading from a peer that reads nothing (\(sent) bytes sent)")
        XCTAssertGreaterThan(statistics.bytesEchoedInKernel, 0, "the stream never reached the kernel echo")
        XCTAssertLessThan(sent, 64 << 20, "sent \(sent) bytes to a peer that never reads")
        _ = reactor.stop(timeout: 10, thenNow: true)
    }
}
