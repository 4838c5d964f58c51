// A reactor with any handler (and optionally a fault interposer) on its own thread, and the
// recording handler the tests of execute, gathered writes, the local address and setup
// failures drive it with.

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

/// A ThreadedReactor with a RecordingHandler, and the lists that handler fills.
func recording(gathered: [[UInt8]] = [], interposer: FaultInterposer? = nil)
    throws -> (ThreadedReactor<RecordingHandler>, Locked<[ConnectionID]>, Locked<[String]>) {
    let opened = Locked<[ConnectionID]>([])
    let locals = Locked<[String]>([])
    let reactor = try ThreadedReactor(interposer: interposer) {
        RecordingHandler(opened: opened, localAddresses: locals, gathered: gathered)
    }
    return (reactor, opened, locals)
}
