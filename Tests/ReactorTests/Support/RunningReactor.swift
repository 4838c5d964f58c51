// An in-process Reactor on its own thread, listening on 127.0.0.1 port 0, plus a tiny echo
// handler that reports what it sees to the test through a lock-protected probe.

import TestSupport
import Foundation
import Reactor
import Synchronization

/// A Reactor running on a background thread. The reactor is created, listens and runs on that
/// thread (a reactor belongs to the thread that runs it); the test talks to it only through its
/// `ReactorHandle`.
final class RunningReactor: Sendable {
    /// The port it listens on (127.0.0.1).
    let port: Int
    let handle: ReactorHandle
    private let shared: Shared

    /// What the reactor thread hands back to the test.
    private final class Shared: Sendable {
        let ready = DispatchSemaphore(value: 0)
        let finished = DispatchSemaphore(value: 0)
        let started = Mutex<Result<(port: Int, handle: ReactorHandle), StartFailure>?>(nil)
        let final = Mutex<ReactorStatistics?>(nil)
    }

    struct StartFailure: Error, CustomStringConvertible {
        let description: String
    }

    private init(port: Int, handle: ReactorHandle, shared: Shared) {
        self.port = port
        self.handle = handle
        self.shared = shared
    }

    /// Starts a reactor with the handler made by `makeHandler` on a new thread, listening on
    /// `host` port 0. Returns once it listens.
    static func start<H: ConnectionHandler & SendableMetatype>(
        configuration: ReactorConfiguration = ReactorConfiguration(),
        host: String = "127.0.0.1",
        makeHandler: @escaping @Sendable () -> H
    ) throws -> RunningReactor {
        let shared = Shared()
        let thread = Thread {
            let reactor: Reactor<H>
            do {
                reactor = try Reactor(handler: makeHandler(), configuration: configuration)
                let bound = try reactor.listen(on: try SocketAddress(host: host, port: 0))
                let handle = reactor.handle
                shared.started.withLock { $0 = .success((bound.port ?? 0, handle)) }
            } catch {
                shared.started.withLock { $0 = .failure(StartFailure(description: "\(error)")) }
                shared.ready.signal()
                shared.finished.signal()
                return
            }
            shared.ready.signal()
            reactor.run()
            let statistics = reactor.statistics
            shared.final.withLock { $0 = statistics }
            shared.finished.signal()
        }
        thread.start()
        guard shared.ready.wait(timeout: .now() + 10) == .success,
              let started = shared.started.withLock({ $0 }) else {
            throw StartFailure(description: "the reactor thread did not start within 10 s")
        }
        let (port, handle) = try started.get()
        return RunningReactor(port: port, handle: handle, shared: shared)
    }

    /// Asks the reactor to stop and waits for `run()` to return. Returns the reactor's final
    /// statistics (read on its own thread after `run()` returned), or nil if `run()` did not
    /// return within `timeout` seconds.
    @discardableResult
    func stop(timeout: Double = 10) -> ReactorStatistics? {
        handle.stop()
        return waitForRunToReturn(timeout: timeout)
    }

    /// Waits for `run()` to return, without asking for a stop.
    func waitForRunToReturn(timeout: Double) -> ReactorStatistics? {
        if let done = shared.final.withLock({ $0 }) { return done }
        guard shared.finished.wait(timeout: .now() + timeout) == .success else { return nil }
        shared.finished.signal()  // later callers pass too
        return shared.final.withLock { $0 }
    }

    /// Statistics freshly published by the reactor, polled until `condition` holds or `timeout`
    /// seconds pass. Returns the last statistics seen either way.
    func statistics(timeout: Double = 5, until condition: (ReactorStatistics) -> Bool = { _ in true }) -> ReactorStatistics {
        let deadline = monotonicSeconds() + timeout
        while true {
            handle.requestStatistics()
            usleep(10_000)
            let last = handle.latestStatistics
            if condition(last) || monotonicSeconds() >= deadline { return last }
        }
    }
}

/// What the test echo handler saw, shared between the reactor thread and the test.
final class Probe: Sendable {
    struct Seen: Sendable {
        var opened = 0
        var closed: [String: Int] = [:]
        /// The largest `pendingOutputBytes` any connection had right after a write.
        var maxPendingOutput = 0
        /// Bytes handed to onRead.
        var bytesRead = 0
        /// `pendingOutputBytes` of each connection when its peer's EOF arrived.
        var pendingAtEOF: [Int] = []
    }

    private let seen = Mutex(Seen())

    var snapshot: Seen { seen.withLock { $0 } }

    func update(_ body: (inout Seen) -> Void) { seen.withLock { body(&$0) } }

    /// Polls until `condition` holds on what the handler saw, or `timeout` passes.
    func wait(timeout: Double = 5, until condition: (Seen) -> Bool) -> Bool {
        eventually(timeout: timeout) { condition(snapshot) }
    }
}

/// The smallest useful handler: echo every byte, and close with reason `quit` when a segment is
/// exactly `QUIT\n` (tests send it alone, after a round trip, so it arrives as one segment).
struct ProbeEchoHandler: ConnectionHandler {
    static let quit = CloseReason("quit")
    let probe: Probe

    func onOpen(_ connection: borrowing Connection<Self>, state: inout Void) -> Action {
        probe.update { $0.opened += 1 }
        return .continue
    }

    func onRead(_ bytes: UnsafeRawBufferPointer, connection: borrowing Connection<Self>, state: inout Void) -> Action {
        if bytes.elementsEqual("QUIT\n".utf8) { return .close(Self.quit) }
        connection.write(bytes)
        let pending = connection.pendingOutputBytes
        probe.update {
            $0.bytesRead += bytes.count
            if pending > $0.maxPendingOutput { $0.maxPendingOutput = pending }
        }
        return .continue
    }

    func onReadEOF(_ connection: borrowing Connection<Self>, state: inout Void) -> Action {
        let pending = connection.pendingOutputBytes
        probe.update { $0.pendingAtEOF.append(pending) }
        return .close(.eof)
    }

    func onClose(_ connection: borrowing Connection<Self>, state: inout Void, reason: CloseReason) {
        probe.update { $0.closed[reason.name, default: 0] += 1 }
    }
}

/// Answers the peer's EOF with a reply bigger than the socket buffers hold, then closes
/// gracefully: the reply is certainly still queued in the reactor when the close is requested.
struct ReplyOnEOFHandler: ConnectionHandler {
    let reply: [UInt8]
    let probe: Probe

    func onReadEOF(_ connection: borrowing Connection<Self>, state: inout Void) -> Action {
        reply.withUnsafeBytes { _ = connection.write($0) }
        let pending = connection.pendingOutputBytes
        probe.update { $0.pendingAtEOF.append(pending) }
        return .close(.eof)
    }

    func onClose(_ connection: borrowing Connection<Self>, state: inout Void, reason: CloseReason) {
        probe.update { $0.closed[reason.name, default: 0] += 1 }
    }
}
