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

    /// One transition: the state before, the event, the state after (phase, gate, conditions),
    /// what the event returned, and the epoll interest of the new state without output pending.
    struct Row {
        let name: String
        let from: Lifecycle
        let event: (inout Lifecycle) -> Bool
        let to: Lifecycle
        /// What the event function returned (first close request; hang-up must close; gate
        /// reopened; cut took effect). Transitions that return nothing count as true.
        let result: Bool
        let interest: UInt32
    }

    private func life(_ phase: Phase, _ origin: Origin = .accepted, gate: ReadGate = [], conditions: Conditions = []) -> Lifecycle {
        Lifecycle(origin: origin, phase: phase, gate: gate, conditions: conditions)
    }

    private var rows: [Row] {
        [
            // connecting
            Row(name: "connecting → open: connected", from: life(.connecting, .outbound),
                event: { $0.connected(); return true }, to: life(.open, .outbound), result: true, interest: CEPOLL_IN),
            Row(name: "adopted connecting → open: first event", from: life(.connecting, .adopted),
                event: { $0.connected(); return true }, to: life(.open, .adopted), result: true, interest: CEPOLL_IN),
            Row(name: "connecting → closing: close while connecting abandons the connect", from: life(.connecting, .outbound),
                event: { $0.requestClose(abort: false) }, to: life(.closing, .outbound, conditions: .abort), result: true, interest: 0),
            Row(name: "connecting: the close deadline has nothing to cut", from: life(.connecting, .outbound),
                event: { $0.cut() }, to: life(.connecting, .outbound), result: false, interest: CEPOLL_OUT),
            // open: closing
            Row(name: "open → closing: graceful close", from: life(.open),
                event: { $0.requestClose(abort: false) }, to: life(.closing), result: true, interest: 0),
            Row(name: "open → closing: abortive close", from: life(.open),
                event: { $0.requestClose(abort: true) }, to: life(.closing, conditions: .abort), result: true, interest: 0),
            Row(name: "open: the close deadline has nothing to cut", from: life(.open),
                event: { $0.cut() }, to: life(.open), result: false, interest: CEPOLL_IN),
            // open: the read gate
            Row(name: "open: the handler pauses reading", from: life(.open),
                event: { $0.pauseReading(); return true }, to: life(.open, gate: .handler), result: true, interest: 0),
            Row(name: "open: the handler resumes reading", from: life(.open, gate: .handler),
                event: { $0.resumeReading(); return true }, to: life(.open), result: true, interest: CEPOLL_IN),
            Row(name: "open: resuming keeps backpressure's part of the gate", from: life(.open, gate: [.handler, .backpressure]),
                event: { $0.resumeReading(); return true }, to: life(.open, gate: .backpressure), result: true, interest: 0),
            Row(name: "open: resuming after a hang-up adds it back to the epoll set", from: life(.open, gate: .handler, conditions: .hungUp),
                event: { $0.resumeReading(); return true }, to: life(.open, conditions: .hungUp), result: true, interest: CEPOLL_IN),
            Row(name: "open: the peer's EOF shuts the gate", from: life(.open),
                event: { $0.readEOF(); return true }, to: life(.open, gate: .eof), result: true, interest: 0),
            Row(name: "open: a hand-over restores backpressure (output between the watermarks)", from: life(.open),
                event: { $0.restoreBackpressure(); return true }, to: life(.open, gate: .backpressure), result: true, interest: 0),
            Row(name: "open: output passes the high watermark", from: life(.open),
                event: { $0.updateBackpressure(pending: 101, high: 100, low: 50) }, to: life(.open, gate: .backpressure), result: false, interest: 0),
            Row(name: "open: output between the watermarks keeps the gate", from: life(.open, gate: .backpressure),
                event: { $0.updateBackpressure(pending: 75, high: 100, low: 50) }, to: life(.open, gate: .backpressure), result: false, interest: 0),
            Row(name: "open: output below the low watermark reopens the gate (onWritable)", from: life(.open, gate: [.backpressure, .handler]),
                event: { $0.updateBackpressure(pending: 49, high: 100, low: 50) }, to: life(.open, gate: .handler), result: true, interest: 0),
            Row(name: "open: below the low watermark without backpressure is no event", from: life(.open),
                event: { $0.updateBackpressure(pending: 0, high: 100, low: 50) }, to: life(.open), result: false, interest: CEPOLL_IN),
            // open: hang-up
            Row(name: "open: hang-up while paused by the handler leaves the epoll set", from: life(.open, gate: .handler),
                event: { $0.hangUp() }, to: life(.open, gate: .handler, conditions: .hungUp), result: false, interest: outOfEpollSet),
            Row(name: "open: hang-up while paused by backpressure closes", from: life(.open, gate: .backpressure),
                event: { $0.hangUp() }, to: life(.open, gate: .backpressure), result: true, interest: 0),
            Row(name: "open: hang-up after EOF closes", from: life(.open, gate: [.handler, .eof]),
                event: { $0.hangUp() }, to: life(.open, gate: [.handler, .eof]), result: true, interest: 0),
            // open: shutdown of the write side
            Row(name: "open: shutdownWrite asked", from: life(.open),
                event: { $0.requestShutdownWrite(); return true }, to: life(.open, conditions: .shutdownPending), result: true, interest: CEPOLL_IN),
            Row(name: "open: the write side shut down once flushed", from: life(.open, conditions: .shutdownPending),
                event: { $0.shutWrite(); return true }, to: life(.open), result: true, interest: CEPOLL_IN),
            // closing
            Row(name: "closing: a second graceful close changes nothing", from: life(.closing),
                event: { $0.requestClose(abort: false) }, to: life(.closing), result: false, interest: 0),
            Row(name: "closing: an error or the send timeout makes the close abortive", from: life(.closing),
                event: { $0.requestClose(abort: true) }, to: life(.closing, conditions: .abort), result: false, interest: 0),
            Row(name: "closing: hang-up closes", from: life(.closing),
                event: { $0.hangUp() }, to: life(.closing), result: true, interest: 0),
            Row(name: "closing: the close deadline cuts the flush (no progress for closeTimeout)", from: life(.closing),
                event: { $0.cut() }, to: life(.closing, conditions: .abort), result: true, interest: 0),
            Row(name: "closing → lingering: flushed, the peer may still send", from: life(.closing),
                event: { $0.linger(); return true }, to: life(.lingering), result: true, interest: CEPOLL_IN),
            Row(name: "closing → closed: finished", from: life(.closing, conditions: .abort),
                event: { $0.finish(); return true }, to: life(.closed, conditions: .abort), result: true, interest: outOfEpollSet),
            // lingering
            Row(name: "lingering: an error makes it abortive", from: life(.lingering),
                event: { $0.requestClose(abort: true) }, to: life(.lingering, conditions: .abort), result: false, interest: CEPOLL_IN),
            Row(name: "lingering: the peer's EOF or the linger deadline cuts it", from: life(.lingering),
                event: { $0.cut() }, to: life(.lingering, conditions: .abort), result: true, interest: CEPOLL_IN),
            Row(name: "lingering → closed: finished", from: life(.lingering, conditions: .abort),
                event: { $0.finish(); return true }, to: life(.closed, conditions: .abort), result: true, interest: outOfEpollSet),
            // closed
            Row(name: "closed: a close request is ignored", from: life(.closed),
                event: { $0.requestClose(abort: true) }, to: life(.closed), result: false, interest: outOfEpollSet),
            Row(name: "closed: the close deadline is ignored", from: life(.closed),
                event: { $0.cut() }, to: life(.closed), result: false, interest: outOfEpollSet),
        ]
    }

    func testEveryTransitionOfTheDiagram() {
        for row in rows {
            var state = row.from
            let result = row.event(&state)
            XCTAssertEqual(state, row.to, row.name)
            XCTAssertEqual(state.phase, row.to.phase, row.name)
            XCTAssertEqual(result, row.result, row.name)
            XCTAssertEqual(state.interest(hasOutput: false), row.interest, row.name)
        }
    }

    // MARK: the hand-over restores a connection through the same transitions

    /// A connection detached in one process (its phase, gate and conditions as
    /// HandedOverConnection carries them) and installed in another: installHandedOver applies
    /// these transitions to a new accepted connection, and must land on the state it left.
    func testTheHandOverRestoresEachStateThroughTheTransitions() {
        let rows: [(String, Lifecycle, (inout Lifecycle) -> Void)] = [
            ("open", life(.open), { _ in }),
            ("open, paused by the handler", life(.open, gate: .handler), { $0.pauseReading() }),
            ("open, after the peer's EOF", life(.open, gate: .eof), { $0.readEOF() }),
            ("open, held back by its output", life(.open, gate: .backpressure), { $0.restoreBackpressure() }),
            ("open, paused and held back", life(.open, gate: [.handler, .backpressure]), { $0.pauseReading(); $0.restoreBackpressure() }),
            ("open, shutdownWrite pending", life(.open, conditions: .shutdownPending), { $0.requestShutdownWrite() }),
            ("closing (graceful)", life(.closing), { _ = $0.requestClose(abort: false) }),
            ("closing after the peer's EOF", life(.closing, gate: .eof), { $0.readEOF(); _ = $0.requestClose(abort: false) }),
            ("lingering", life(.lingering), { _ = $0.requestClose(abort: false); $0.linger() }),
        ]
        for (name, left, restore) in rows {
            var state = Lifecycle(origin: .accepted)
            restore(&state)
            XCTAssertEqual(state, left, name)
            XCTAssertEqual(state.interest(hasOutput: false), left.interest(hasOutput: false), name)
        }
    }

    // MARK: settling: the step after a state

    func testTheStepSettlingTakesFromEachState() {
        let rows: [(String, Lifecycle, Bool, Lifecycle.Step)] = [
            ("open stays", life(.open), true, .stay),
            ("open, shutdown asked, output pending: wait for the flush", life(.open, conditions: .shutdownPending), true, .stay),
            ("open, shutdown asked, flushed: shut the write side", life(.open, conditions: .shutdownPending), false, .shutdownWrite),
            ("connecting stays", life(.connecting, .outbound), true, .stay),
            ("closing with output flushes (while the peer takes it; the close deadline cuts one that stops)", life(.closing), true, .flush),
            ("closing, flushed, peer still open → lingering", life(.closing), false, .linger),
            ("closing, flushed, peer sent EOF → closed", life(.closing, gate: .eof), false, .finish),
            ("closing, flushed, adopted fd → closed (no half-close)", life(.closing, .adopted), false, .finish),
            ("closing, abortive → closed, output dropped", life(.closing, conditions: .abort), true, .finish),
            ("closing while connecting → closed at once", life(.closing, .outbound, conditions: .abort), true, .finish),
            ("lingering waits for the peer", life(.lingering), false, .stay),
            ("lingering, peer EOF or close deadline → closed", life(.lingering, conditions: .abort), false, .finish),
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
            ("open, hung up while paused: out of the epoll set", life(.open, gate: .handler, conditions: .hungUp), false, outOfEpollSet),
            ("open, hung up while paused, output pending: EPOLLOUT (the write fails and closes)",
             life(.open, gate: .handler, conditions: .hungUp), true, CEPOLL_OUT),
            ("open, hung up, resumed: reading again (re-added)", life(.open, conditions: .hungUp), false, CEPOLL_IN),
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

    /// The bookkeeping byte sits in what was padding after the state: a slot is no larger.
    func testBookkeepingDoesNotGrowASlot() {
        XCTAssertEqual(MemoryLayout<Bookkeeping>.size, 1)
        XCTAssertEqual(MemoryLayout<Slot<Void>>.offset(of: \Slot<Void>.registered), 16)
    }
}
