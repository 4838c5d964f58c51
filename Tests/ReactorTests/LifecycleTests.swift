// The connection lifecycle (Sources/Reactor/Lifecycle.swift) as tables: one row per transition
// of the diagram, each checked against the pure functions the reactor applies. The odd rows
// also run for real in LifecycleScenarioTests.

import CEpoll
import XCTest
@testable import Reactor

final class LifecycleTests: XCTestCase {
    private let inOut = CEPOLL_IN | CEPOLL_OUT

    // MARK: where each origin starts

    func testEachOriginStartsInItsPhaseWithItsInterest() {
        let rows: [(Origin, Phase, UInt32)] = [
            (.accepted, .open, CEPOLL_IN),        // accept: open at once, reading
            (.outbound, .connecting, CEPOLL_OUT), // connect(to:): EPOLLOUT says the connect finished
            (.adopted, .connecting, CEPOLL_IN | CEPOLL_OUT), // adopt(fd:): its first event of any kind
        ]
        for (origin, phase, interest) in rows {
            let life = Lifecycle(origin: origin)
            XCTAssertEqual(life.phase, phase, "\(origin)")
            XCTAssertEqual(life.interest(hasOutput: false), interest, "\(origin)")
            XCTAssertEqual(life.acceptsWrites, true, "\(origin): writes are taken (queued while connecting)")
        }
    }

    // MARK: transitions, one row each

    struct Row {
        let name: String
        let from: Lifecycle
        let event: (inout Lifecycle) -> Bool
        let to: Lifecycle
        /// What the event function returned (first close request; hang-up must close; gate reopened).
        let result: Bool
    }

    private func life(_ phase: Phase, _ origin: Origin = .accepted, gate: ReadGate = [], marks: Marks = []) -> Lifecycle {
        Lifecycle(origin: origin, phase: phase, gate: gate, marks: marks)
    }

    private var rows: [Row] {
        [
            Row(name: "connecting → open: connected", from: life(.connecting, .outbound),
                event: { $0.connected(); return true }, to: life(.open, .outbound), result: true),
            Row(name: "adopted connecting → open: first event", from: life(.connecting, .adopted),
                event: { $0.connected(); return true }, to: life(.open, .adopted), result: true),
            Row(name: "open → closing: graceful close", from: life(.open),
                event: { $0.requestClose(abort: false) }, to: life(.closing), result: true),
            Row(name: "open → closing: abortive close", from: life(.open),
                event: { $0.requestClose(abort: true) }, to: life(.closing, marks: .abort), result: true),
            Row(name: "connecting → closing: close while connecting abandons the connect", from: life(.connecting, .outbound),
                event: { $0.requestClose(abort: false) }, to: life(.closing, .outbound, marks: .abort), result: true),
            Row(name: "closing: a second graceful close changes nothing", from: life(.closing),
                event: { $0.requestClose(abort: false) }, to: life(.closing), result: false),
            Row(name: "closing: an error makes the close abortive", from: life(.closing),
                event: { $0.requestClose(abort: true) }, to: life(.closing, marks: .abort), result: false),
            Row(name: "lingering: the close deadline cuts it", from: life(.lingering),
                event: { $0.requestClose(abort: true) }, to: life(.lingering, marks: .abort), result: false),
            Row(name: "open: hang-up while paused by the handler leaves the epoll set", from: life(.open, gate: .handler),
                event: { $0.hangUp() }, to: life(.open, gate: .handler, marks: .hungUp), result: false),
            Row(name: "open: hang-up while paused by backpressure closes", from: life(.open, gate: .backpressure),
                event: { $0.hangUp() }, to: life(.open, gate: .backpressure), result: true),
            Row(name: "open: hang-up after EOF closes", from: life(.open, gate: [.handler, .eof]),
                event: { $0.hangUp() }, to: life(.open, gate: [.handler, .eof]), result: true),
            Row(name: "closing: hang-up closes", from: life(.closing),
                event: { $0.hangUp() }, to: life(.closing), result: true),
            Row(name: "open: output passes the high watermark", from: life(.open),
                event: { $0.updateBackpressure(pending: 101, high: 100, low: 50) }, to: life(.open, gate: .backpressure), result: false),
            Row(name: "open: output between the watermarks keeps the gate", from: life(.open, gate: .backpressure),
                event: { $0.updateBackpressure(pending: 75, high: 100, low: 50) }, to: life(.open, gate: .backpressure), result: false),
            Row(name: "open: output below the low watermark reopens the gate (onWritable)", from: life(.open, gate: [.backpressure, .handler]),
                event: { $0.updateBackpressure(pending: 49, high: 100, low: 50) }, to: life(.open, gate: .handler), result: true),
            Row(name: "open: below the low watermark without backpressure is no event", from: life(.open),
                event: { $0.updateBackpressure(pending: 0, high: 100, low: 50) }, to: life(.open), result: false),
        ]
    }

    func testEveryTransitionOfTheDiagram() {
        for row in rows {
            var state = row.from
            let result = row.event(&state)
            XCTAssertEqual(state, row.to, row.name)
            XCTAssertEqual(result, row.result, row.name)
        }
    }

    // MARK: settling: the step after a state

    func testTheStepSettlingTakesFromEachState() {
        let rows: [(String, Lifecycle, Bool, Lifecycle.Step)] = [
            ("open stays", life(.open), true, .stay),
            ("open, shutdown asked, output pending: wait for the flush", life(.open, marks: .shutdownPending), true, .stay),
            ("open, shutdown asked, flushed: shut the write side", life(.open, marks: .shutdownPending), false, .shutdownWrite),
            ("connecting stays", life(.connecting, .outbound), true, .stay),
            ("closing with output arms the close deadline", life(.closing), true, .armCloseDeadline),
            ("closing with output and the deadline armed waits", life(.closing, marks: .closeDeadlineArmed), true, .stay),
            ("closing, flushed, peer still open → lingering", life(.closing), false, .linger),
            ("closing, flushed, peer sent EOF → closed", life(.closing, gate: .eof), false, .finish),
            ("closing, flushed, adopted fd → closed (no half-close)", life(.closing, .adopted), false, .finish),
            ("closing, abortive → closed, output dropped", life(.closing, marks: .abort), true, .finish),
            ("closing while connecting → closed at once", life(.closing, .outbound, marks: .abort), true, .finish),
            ("lingering waits for the peer", life(.lingering), false, .stay),
            ("lingering, peer EOF or close deadline → closed", life(.lingering, marks: .abort), false, .finish),
        ]
        for (name, state, hasOutput, step) in rows {
            XCTAssertEqual(state.step(hasOutput: hasOutput), step, name)
        }
    }

    // MARK: the interest, a pure function of the state

    func testTheEpollInterestOfEachState() {
        let rows: [(String, Lifecycle, Bool, UInt32)] = [
            ("open, reading", life(.open), false, CEPOLL_IN),
            ("open, reading, output pending", life(.open), true, inOut),
            ("open, paused by the handler", life(.open, gate: .handler), false, 0),
            ("open, backpressure: only EPOLLOUT", life(.open, gate: .backpressure), true, CEPOLL_OUT),
            ("open, after EOF, output pending", life(.open, gate: .eof), true, CEPOLL_OUT),
            ("open, hung up while paused: out of the epoll set", life(.open, gate: .handler, marks: .hungUp), false, outOfEpollSet),
            ("open, hung up while paused, output pending: EPOLLOUT (the write fails and closes)",
             life(.open, gate: .handler, marks: .hungUp), true, CEPOLL_OUT),
            ("open, hung up, resumed: reading again (re-added)", life(.open, marks: .hungUp), false, CEPOLL_IN),
            ("closing, flushing", life(.closing), true, CEPOLL_OUT),
            ("closing, flushed", life(.closing), false, 0),
            ("lingering: EPOLLIN to see the peer's EOF", life(.lingering), false, CEPOLL_IN),
            ("closed", life(.closed), false, outOfEpollSet),
        ]
        for (name, state, hasOutput, interest) in rows {
            XCTAssertEqual(state.interest(hasOutput: hasOutput), interest, name)
        }
    }

    func testReconcilingPicksAddModifyOrDelete() {
        XCTAssertNil(epollOperation(from: CEPOLL_IN, to: CEPOLL_IN), "unchanged: no system call")
        XCTAssertEqual(epollOperation(from: CEPOLL_IN, to: inOut), EPOLL_CTL_MOD)
        XCTAssertEqual(epollOperation(from: CEPOLL_IN, to: outOfEpollSet), EPOLL_CTL_DEL, "hang-up while paused")
        XCTAssertEqual(epollOperation(from: outOfEpollSet, to: CEPOLL_IN), EPOLL_CTL_ADD, "re-added on resume")
        XCTAssertNil(epollOperation(from: outOfEpollSet, to: outOfEpollSet))
    }

    func testOnlyConnectingAndOpenConnectionsTakeWritesOrAreRead() {
        for phase in [Phase.connecting, .open, .closing, .lingering, .closed] {
            let state = life(phase, .outbound)
            XCTAssertEqual(state.acceptsWrites, phase == .connecting || phase == .open, "\(phase)")
            XCTAssertEqual(state.isReading, phase == .open, "\(phase)")
        }
        XCTAssertFalse(life(.open, gate: .eof).isReading)
    }

    func testTheStateFitsInFourBytes() {
        XCTAssertEqual(MemoryLayout<Lifecycle>.size, 4)
    }
}
