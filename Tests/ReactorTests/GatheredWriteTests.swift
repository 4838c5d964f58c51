// Gathered writes (writev): every buffer in order, the rest queued in order when the kernel
// takes only part, and megabytes to a slow reader arriving whole.
//
// An in-process reactor (TestSupport's ReactorRunner) running Support/RecordingHandler.swift on
// 127.0.0.1, with real loopback clients.

import TestSupport
import CEpoll
import Foundation
import Glibc
import SystemPackage
import XCTest
@testable import Reactor

final class GatheredWriteTests: XCTestCase {

    func testGatheredWriteSendsEveryBufferInOrder() throws {
        let pieces: [[UInt8]] = [[0x47, 0], [], Array(repeating: 0xAB, count: 1000), [0xFF, 10]]
        let (reactor, _, _) = try recording(gathered: pieces)
        let client = try TestSocket.connect(port: reactor.port)
        try client.send([0x47])
        let expected = pieces.flatMap { $0 }
        XCTAssertEqual(try client.receive(exactly: expected.count), expected)
        XCTAssertTrue(client.staysQuiet(for: 0.1))
        client.close()
        XCTAssertNotNil(reactor.stop())
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
        XCTAssertNotNil(reactor.stop())
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
        XCTAssertNotNil(reactor.stop())
    }
}
