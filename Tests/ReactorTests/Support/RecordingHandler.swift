// The recording handler the tests of execute, gathered writes, the local address and setup
// failures drive an in-process reactor (TestSupport's ReactorRunner) with.

import TestSupport
import CEpoll
import Foundation
import Glibc
import SystemPackage
import XCTest
@testable import Reactor

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

/// A reactor running a RecordingHandler on 127.0.0.1, and the lists that handler fills.
func recording(gathered: [[UInt8]] = [], interposer: FaultInterposer? = nil)
    throws -> (ReactorRunner<Int>, Locked<[ConnectionID]>, Locked<[String]>) {
    let opened = Locked<[ConnectionID]>([])
    let locals = Locked<[String]>([])
    let reactor = try ReactorRunner.listening(interposer: interposer) {
        RecordingHandler(opened: opened, localAddresses: locals, gathered: gathered)
    }
    return (reactor, opened, locals)
}
