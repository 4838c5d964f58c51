// A real Reactor with a FaultInterposer, on its own thread (the shared ReactorRunner), listening on 127.0.0.1 port 0,
// driving an echo handler that records everything it is told.

import TestSupport
import Foundation
import Glibc
import SystemPackage
@testable import Reactor

/// What the handler saw of one connection.
struct FaultConnectionLog: Sendable {
    let id: ConnectionID
    let peerPort: Int
    /// Every byte onRead was given, in order (only when the recorder keeps bytes).
    var bytes: [UInt8] = []
    var byteCount = 0
    var reads = 0
    var largestRead = 0
    /// The most output the reactor held for this connection after an echo.
    var largestPending = 0
    var sawEOF = false
    var closeReason: CloseReason?
}

/// Collects what the echo handler sees, for the test thread to check.
final class FaultRecorder: Sendable {
    private struct State {
        var connections: [ConnectionID: FaultConnectionLog] = [:]
        var order: [ConnectionID] = []
        /// Callbacks that should never happen (a read after close, a second open…).
        var anomalies: [String] = []
    }

    private let state = Locked(State())
    let keepBytes: Bool

    init(keepBytes: Bool = true) { self.keepBytes = keepBytes }

    func opened(_ id: ConnectionID, peerPort: Int) {
        state.withLock { s in
            if let old = s.connections[id], old.closeReason == nil {
                s.anomalies.append("\(id) opened twice")
            }
            s.connections[id] = FaultConnectionLog(id: id, peerPort: peerPort)
            s.order.append(id)
        }
    }

    func read(_ id: ConnectionID, _ bytes: UnsafeRawBufferPointer, pendingAfterEcho: Int) {
        state.withLock { s in
            guard var log = s.connections[id] else { s.anomalies.append("read on unknown \(id)"); return }
            if log.closeReason != nil { s.anomalies.append("read on closed \(id)") }
            if log.sawEOF { s.anomalies.append("read after EOF on \(id)") }
            if keepBytes { log.bytes.append(contentsOf: bytes) }
            log.byteCount += bytes.count
            log.reads += 1
            log.largestRead = max(log.largestRead, bytes.count)
            log.largestPending = max(log.largestPending, pendingAfterEcho)
            s.connections[id] = log
        }
    }

    func readEOF(_ id: ConnectionID) {
        state.withLock { s in
            guard s.connections[id] != nil else { s.anomalies.append("EOF on unknown \(id)"); return }
            if s.connections[id]!.sawEOF { s.anomalies.append("second EOF on \(id)") }
            s.connections[id]!.sawEOF = true
        }
    }

    func closed(_ id: ConnectionID, reason: CloseReason) {
        state.withLock { s in
            guard s.connections[id] != nil else { s.anomalies.append("close of unknown \(id)"); return }
            if s.connections[id]!.closeReason != nil { s.anomalies.append("second close of \(id)") }
            s.connections[id]!.closeReason = reason
        }
    }

    var anomalies: [String] { state.withLock { $0.anomalies } }

    /// Every connection, in the order they opened.
    var connections: [FaultConnectionLog] { state.withLock { s in s.order.compactMap { s.connections[$0] } } }

    func connection(peerPort: Int) -> FaultConnectionLog? {
        state.withLock { s in
            for id in s.order.reversed() {
                if let log = s.connections[id], log.peerPort == peerPort { return log }
            }
            return nil
        }
    }

    /// Waits (up to `timeout` seconds) until the server has opened the connection of the client
    /// whose local port is `peerPort`.
    func waitForConnection(peerPort: Int, timeout: Double = 10) -> FaultConnectionLog? {
        let deadline = monotonicSeconds() + timeout
        while monotonicSeconds() < deadline {
            if let log = connection(peerPort: peerPort) { return log }
            usleep(1000)
        }
        return nil
    }

    /// Waits until the connection of `peerPort` has closed, and returns its log.
    func waitForClose(peerPort: Int, timeout: Double = 10) -> FaultConnectionLog? {
        let deadline = monotonicSeconds() + timeout
        while monotonicSeconds() < deadline {
            if let log = connection(peerPort: peerPort), log.closeReason != nil { return log }
            usleep(1000)
        }
        return connection(peerPort: peerPort)
    }

    /// Close reasons by name, over every connection that closed.
    var closeReasons: [String: Int] {
        var counts: [String: Int] = [:]
        for log in connections { if let r = log.closeReason { counts[r.name, default: 0] += 1 } }
        return counts
    }
}

/// The echo handler of these tests: writes back every byte it is given, records everything, and,
/// when `closeByte` is set, closes (gracefully, reason "quit") after echoing a segment that holds it.
struct FaultEchoHandler: ConnectionHandler {
    let recorder: FaultRecorder
    let closeByte: UInt8?

    static let quit = CloseReason("quit")

    func onOpen(_ connection: borrowing Connection<Self>, state: inout Void) -> Action {
        recorder.opened(connection.id, peerPort: connection.peer.port ?? -1)
        return .continue
    }

    func onRead(_ bytes: UnsafeRawBufferPointer, connection: borrowing Connection<Self>, state: inout Void) -> Action {
        connection.write(bytes)
        recorder.read(connection.id, bytes, pendingAfterEcho: connection.pendingOutputBytes)
        if let closeByte, bytes.contains(closeByte) { return .close(Self.quit) }
        return .continue
    }

    func onReadEOF(_ connection: borrowing Connection<Self>, state: inout Void) -> Action {
        recorder.readEOF(connection.id)
        return .close(.eof)
    }

    func onClose(_ connection: borrowing Connection<Self>, state: inout Void, reason: CloseReason) {
        recorder.closed(connection.id, reason: reason)
    }
}

/// A reactor with a FaultInterposer running FaultEchoHandler, on the shared ReactorRunner.
final class FaultServer: Sendable {
    struct Info: Sendable {
        let port: Int
        let listenerFD: CInt
        let listenerSlot: Int32
    }

    let runner: ReactorRunner<Info>
    var port: Int { runner.info.port }
    var listenerFD: CInt { runner.info.listenerFD }
    /// The listener's slot in the reactor's table (what epoll events carry).
    var listenerSlot: Int32 { runner.info.listenerSlot }
    var handle: ReactorHandle { runner.handle }
    let recorder: FaultRecorder
    let interposer: FaultInterposer

    init(interposer: FaultInterposer = FaultInterposer(),
         configuration: ReactorConfiguration = ReactorConfiguration(),
         recorder: FaultRecorder = FaultRecorder(),
         closeByte: UInt8? = nil) throws {
        runner = try ReactorRunner.start(
            make: { try Reactor(handler: FaultEchoHandler(recorder: recorder, closeByte: closeByte),
                                configuration: configuration, interposer: interposer) },
            setUp: { reactor in
                let bound = try reactor.listen(on: try SocketAddress(host: "127.0.0.1", port: 0))
                return Info(port: bound.port ?? 0, listenerFD: reactor.listeners.first?.fd ?? -1,
                            listenerSlot: reactor.listeners.first?.slot ?? -1)
            })
        self.recorder = recorder
        self.interposer = interposer
    }

    /// Stops the reactor gracefully and returns its final counters (nil if it did not stop within
    /// `timeout` seconds, even after `stopNow`; the thread is then abandoned).
    func stop(timeout: Double = 10) -> ReactorStatistics? {
        runner.stop(timeout: timeout, thenNow: true)
    }
}

extension FaultServer {
    /// Connects `count` clients while the reactor's loop is held inside a closure, so that the
    /// kernel queues every one of them in the listener's backlog; runs `beforeRelease` (still
    /// held), then lets the loop go on. Nil if the loop could not be held within 10 s.
    func connectWhileHeld(_ count: Int, beforeRelease: () -> Void = {}) throws -> [TestSocket]? {
        let held = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        guard handle.execute({ (_: ReactorContext<FaultEchoHandler>) in
            held.signal()
            release.wait()
        }), held.wait(timeout: .now() + 10) == .success else { return nil }
        defer { release.signal() }
        var clients: [TestSocket] = []
        for _ in 0..<count { clients.append(try TestSocket.connect(port: port)) }
        beforeRelease()
        return clients
    }
}
