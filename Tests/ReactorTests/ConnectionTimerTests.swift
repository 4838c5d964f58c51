// Timers bound to a connection (Connection.schedule / onTimer) and the send timeout, over real
// loopback sockets with an in-process reactor.

import TestSupport
import Foundation
import Glibc
import Reactor
import XCTest

/// What the timer handler saw, shared with the test.
final class TimerProbe: Sendable {
    struct Seen: Sendable {
        var fired = 0
        var closed: [String] = []
    }
    private let seen = Locked(Seen())
    var snapshot: Seen { seen.withLock { $0 } }
    func update(_ body: (inout Seen) -> Void) { seen.withLock { body(&$0) } }
}

/// On open, arms a timer as told by the first byte the test sends:
/// - `o`: one shot after 50 ms that writes `tick` and closes with reason `ticked`;
/// - `r`: repeating every 30 ms, each firing counted (and writing `.`);
/// - `c`: one shot after 150 ms, cancelled at once by the next byte `x`;
/// - `l`: one shot after 300 ms that would write `late` (the test closes first).
struct TimerHandler: ConnectionHandler {
    struct State { var timer: TimerID? }
    static let ticked = CloseReason("ticked")
    let probe: TimerProbe

    func makeState() -> State { State() }

    func onRead(_ bytes: UnsafeRawBufferPointer, connection: borrowing Connection<Self>, state: inout State) -> Action {
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "o"): state.timer = connection.schedule(after: .milliseconds(50))
            case UInt8(ascii: "r"): state.timer = connection.schedule(after: .milliseconds(30), repeating: .milliseconds(30))
            case UInt8(ascii: "c"): state.timer = connection.schedule(after: .milliseconds(150))
            case UInt8(ascii: "l"): state.timer = connection.schedule(after: .milliseconds(300))
            case UInt8(ascii: "x"): if let timer = state.timer { connection.cancel(timer) }
            default: break
            }
        }
        return .continue
    }

    func onTimer(_ timer: TimerID, connection: borrowing Connection<Self>, state: inout State) -> Action {
        XCTAssertEqual(timer, state.timer, "onTimer names the timer that fired")
        probe.update { $0.fired += 1 }
        connection.write(".")
        return .continue
    }

    func onClose(_ connection: borrowing Connection<Self>, state: inout State, reason: CloseReason) {
        probe.update { $0.closed.append(reason.description) }
    }
}

/// A one-shot timer that writes and closes: proves the action returned by onTimer is applied.
struct ClosingTimerHandler: ConnectionHandler {
    func onOpen(_ connection: borrowing Connection<Self>, state: inout Void) -> Action {
        connection.schedule(after: .milliseconds(50))
        return .continue
    }

    func onTimer(_ timer: TimerID, connection: borrowing Connection<Self>, state: inout Void) -> Action {
        connection.write("tick")
        return .close(CloseReason("ticked"))
    }
}

/// Echo, with every close reason recorded (as logged: `description`).
struct RecordingEchoHandler: ConnectionHandler {
    let probe: TimerProbe

    func onRead(_ bytes: UnsafeRawBufferPointer, connection: borrowing Connection<Self>, state: inout Void) -> Action {
        connection.write(bytes)
        return .continue
    }

    func onClose(_ connection: borrowing Connection<Self>, state: inout Void, reason: CloseReason) {
        probe.update { $0.closed.append(reason.description) }
    }
}

final class ConnectionTimerTests: XCTestCase {
    private var reactors: [ReactorRunner<Int>] = []

    override func tearDown() {
        for reactor in reactors { reactor.handle.stopNow() }
        for reactor in reactors { _ = reactor.waitForRunToReturn(timeout: 10) }
        reactors.removeAll()
        super.tearDown()
    }

    private func start<H: ConnectionHandler & SendableMetatype>(
        _ configuration: ReactorConfiguration = ReactorConfiguration(), _ make: @escaping @Sendable () -> H
    ) throws -> ReactorRunner<Int> {
        let reactor = try ReactorRunner.listening(configuration: configuration, makeHandler: make)
        reactors.append(reactor)
        return reactor
    }

    func testConnectionTimerActionIsApplied() throws {
        let reactor = try start { ClosingTimerHandler() }
        let client = try TestSocket.connect(port: reactor.port)
        let started = monotonicSeconds()
        let (bytes, end) = client.receiveUntilEnd(timeout: 5)
        XCTAssertEqual(String(decoding: bytes, as: UTF8.self), "tick")
        XCTAssertEqual(end, .eof, "the timer's .close action closes the connection gracefully")
        XCTAssertGreaterThanOrEqual(monotonicSeconds() - started, 0.04, "the timer fired before its delay")
    }

    func testConnectionTimerFiresOnceWithItsID() throws {
        let probe = TimerProbe()
        let reactor = try start { TimerHandler(probe: probe) }
        let client = try TestSocket.connect(port: reactor.port)
        try client.send("o")
        XCTAssertEqual(try client.receiveString(exactly: 1, timeout: 5), ".")
        XCTAssertTrue(client.staysQuiet(for: 0.2), "a one-shot timer fired again")
        XCTAssertEqual(probe.snapshot.fired, 1)
    }

    func testRepeatingConnectionTimerStopsWhenTheConnectionCloses() throws {
        let probe = TimerProbe()
        let reactor = try start { TimerHandler(probe: probe) }
        let client = try TestSocket.connect(port: reactor.port)
        try client.send("r")
        XCTAssertEqual(try client.receiveString(exactly: 3, timeout: 5), "...")
        client.close()
        XCTAssertTrue(eventually(timeout: 5) { probe.snapshot.closed.count == 1 })
        let firedAtClose = probe.snapshot.fired
        usleep(200_000)
        XCTAssertEqual(probe.snapshot.fired, firedAtClose, "a closed connection's repeating timer kept firing")
    }

    func testCancelledConnectionTimerNeverFires() throws {
        let probe = TimerProbe()
        let reactor = try start { TimerHandler(probe: probe) }
        let client = try TestSocket.connect(port: reactor.port)
        try client.send("c")
        try client.send("x")
        XCTAssertTrue(client.staysQuiet(for: 0.4), "a cancelled timer fired")
        // The handler still works: a fresh one-shot fires.
        try client.send("o")
        XCTAssertEqual(try client.receiveString(exactly: 1, timeout: 5), ".")
        XCTAssertEqual(probe.snapshot.fired, 1)
    }

    func testConnectionTimerIsCancelledAtClose() throws {
        let probe = TimerProbe()
        let reactor = try start { TimerHandler(probe: probe) }
        // Many connections arm a 300 ms timer and leave at once; none may fire.
        for _ in 0..<20 {
            let client = try TestSocket.connect(port: reactor.port)
            try client.send("l")
            client.closeWithReset()
        }
        // One that stays sees its timer fire: the timers work, and only closed ones were cancelled.
        let stayer = try TestSocket.connect(port: reactor.port)
        try stayer.send("l")
        XCTAssertEqual(try stayer.receiveString(exactly: 1, timeout: 5), ".")
        XCTAssertTrue(eventually(timeout: 5) { probe.snapshot.closed.count == 20 })
        usleep(100_000)
        XCTAssertEqual(probe.snapshot.fired, 1, "a timer fired for a closed connection")
    }

    // MARK: send timeout

    func testSendTimeoutCutsAPeerThatNeverReads() throws {
        let probe = TimerProbe()
        var configuration = ReactorConfiguration()
        configuration.sendTimeout = .milliseconds(500)
        let reactor = try start(configuration) { RecordingEchoHandler(probe: probe) }
        let client = try TestSocket.connect(port: reactor.port, receiveBuffer: 4096)
        // Far more than the socket buffers and the high watermark hold: the echo backs up, the
        // reactor stops reading (backpressure), and only the send timeout can end it.
        let payload = testPattern(count: 8 << 20)
        let started = monotonicSeconds()
        _ = payload.withUnsafeBytes { client.sendAll($0, timeout: 6) }
        XCTAssertTrue(eventually(timeout: 6) { probe.snapshot.closed == ["send-timeout"] },
                      "closed: \(probe.snapshot.closed)")
        let elapsed = monotonicSeconds() - started
        XCTAssertGreaterThanOrEqual(elapsed, 0.45)
        XCTAssertLessThan(elapsed, 5)
        XCTAssertEqual(reactor.statistics { $0.closed["timeout"] == 1 }.closed["timeout"], 1,
                       "a send timeout counts under the reason name `timeout`")
    }

    func testSendTimeoutSparesASlowButSteadyReader() throws {
        let probe = TimerProbe()
        var configuration = ReactorConfiguration()
        configuration.sendTimeout = .milliseconds(400)
        let reactor = try start(configuration) { RecordingEchoHandler(probe: probe) }
        let client = try TestSocket.connect(port: reactor.port, receiveBuffer: 4096)
        let payload = testPattern(count: 512 << 10)
        let sender = Thread { _ = payload.withUnsafeBytes { client.sendAll($0, timeout: 20) } }
        sender.start()
        // Read a little every 10 ms: progress never stops for the 400 ms timeout.
        var received: [UInt8] = []
        let deadline = monotonicSeconds() + 30
        while received.count < payload.count && monotonicSeconds() < deadline {
            usleep(10_000)
            if let chunk = try client.receiveNow(max: 64 * 1024) { received += chunk }
        }
        XCTAssertEqual(received.count, payload.count)
        XCTAssertNil(firstDifference(received, payload))
        XCTAssertEqual(probe.snapshot.closed, [], "a reader that keeps reading was cut")
    }
}
