import CEpoll
import SystemPackage

// A connection's life, in one place: its phase, its read gate, and the pure functions that say
// what the reactor does next; below them, the reactor code that applies them. The state diagram
// is in the DocC (Reactor.docc/Reactor.md, "A connection's life"); LifecycleTests checks it one
// transition per row.
//
// onClose runs once: when lingering begins, or when the connection is closed from any other
// phase (not for a connection epoll refused at once, whose onOpen never ran).
//
// The lifecycle is the only writer of a connection's state: `phase`, `gate` and `conditions`
// are `private(set)`, and each change is one of the named transitions below (LifecycleTests has
// a row for each). What the reactor has done about a connection (on the dirty list, deadlines
// armed, a limit place held) is `Bookkeeping`, kept beside the state in the slot.

/// Where a connection is in its life.
@usableFromInline
enum Phase: UInt8, Sendable {
    /// An outbound connect is in progress, or an adopted fd waits for its first event: the
    /// handler has heard nothing yet. Writes are queued.
    case connecting
    /// Read (while the read gate is open) and written.
    case open
    /// A close was requested: nothing more is read or accepted for writing; pending output is
    /// flushed for as long as the peer keeps taking it: the connection is cut (reset, with
    /// ``CloseReason/closeTimeout``) only once its output made no progress for
    /// ``ReactorConfiguration/closeTimeout``.
    case closing
    /// Output flushed and the write side shut down; the handler is done (onClose ran). Input is
    /// discarded until the peer closes, for at most `Budget.lingerNs`.
    case lingering
    /// Torn down: the fd is closed and the slot free.
    case closed
}

/// How a connection came to the reactor: it decides what connecting and closing mean.
@usableFromInline
enum Origin: UInt8, Sendable {
    /// Accepted on a listener: open at once.
    case accepted
    /// `connect(to:)`: connecting until EPOLLOUT, then SO_ERROR says how it went.
    case outbound
    /// `adopt(fd:)`: maybe not a socket (a pipe, a terminal), maybe shared with other fds. It is
    /// "connecting" until its first event so that onOpen runs from the loop; it has no
    /// half-close, so it never lingers, and it leaves the epoll set explicitly at close.
    case adopted
}

/// Why an open connection is not read. Reading happens only while the gate is empty.
@usableFromInline
struct ReadGate: OptionSet, Sendable {
    // Computed constants, not `static let`s: a `static let` is a lazily initialised global,
    // and every use of one on the hot path would call its accessor.
    @usableFromInline let rawValue: UInt8
    @inlinable init(rawValue: UInt8) { self.rawValue = rawValue }
    /// The handler returned ``Action/pauseReading`` (until ``ReactorContext/resumeReading(_:)``).
    @inlinable static var handler: ReadGate { ReadGate(rawValue: 1 << 0) }
    /// Pending output passed the high watermark (until it falls below the low one).
    @inlinable static var backpressure: ReadGate { ReadGate(rawValue: 1 << 1) }
    /// read() returned 0: the peer will send nothing more.
    @inlinable static var eof: ReadGate { ReadGate(rawValue: 1 << 2) }
}

/// What a connection's phase does not say on its own: how a close ends, a hang-up, a shutdown
/// asked for. Part of the state, so only the lifecycle's transitions set or clear them.
@usableFromInline
struct Conditions: OptionSet, Sendable {
    @usableFromInline let rawValue: UInt8
    @inlinable init(rawValue: UInt8) { self.rawValue = rawValue }
    /// The close is abortive: no flush, no linger (the socket is broken, time ran out, or
    /// output was discarded). Set by ``Lifecycle/requestClose(abort:)`` and ``Lifecycle/cut()``.
    @inlinable static var abort: Conditions { Conditions(rawValue: 1 << 0) }
    /// EPOLLHUP arrived while only the handler had paused reading: what is still buffered
    /// must be read when it resumes, but EPOLLHUP is reported whatever the mask, so the
    /// connection leaves the epoll set until then (``Lifecycle/hangUp()``).
    @inlinable static var hungUp: Conditions { Conditions(rawValue: 1 << 1) }
    /// ``ReactorContext/shutdownWrite(_:)`` was asked: shut down the write side once output
    /// drains (``Lifecycle/requestShutdownWrite()``, done by ``Lifecycle/shutWrite()``).
    @inlinable static var shutdownPending: Conditions { Conditions(rawValue: 1 << 2) }
}

/// What the reactor has done about a connection, beside its state: list membership, armed
/// timers, places held. Not a state: the lifecycle neither reads nor writes it, and no
/// transition depends on it.
@usableFromInline
struct Bookkeeping: OptionSet, Sendable {
    @usableFromInline let rawValue: UInt8
    @inlinable init(rawValue: UInt8) { self.rawValue = rawValue }
    /// In the reactor's dirty list, waiting to be settled.
    @inlinable static var dirty: Bookkeeping { Bookkeeping(rawValue: 1 << 0) }
    /// The close deadline timer is armed: closing with output pending, cut after
    /// ``ReactorConfiguration/closeTimeout`` without progress.
    @inlinable static var closeDeadlineArmed: Bookkeeping { Bookkeeping(rawValue: 1 << 1) }
    /// The send deadline timer is armed (``ReactorConfiguration/sendTimeout``).
    @inlinable static var sendDeadlineArmed: Bookkeeping { Bookkeeping(rawValue: 1 << 2) }
    /// Holds a place of the connection limit, given back at close or when lingering starts.
    /// Connections from a listener exempt from the limit, from connect(to:) or adopt(fd:) hold none.
    @inlinable static var holdsLimitPlace: Bookkeeping { Bookkeeping(rawValue: 1 << 3) }
    /// Streaming: its input is echoed inside the kernel while no output is pending
    /// (KernelEcho.swift). Set after a bulk read its handler allowed, cleared by a small one.
    @inlinable static var kernelEcho: Bookkeeping { Bookkeeping(rawValue: 1 << 4) }
}

/// The epoll interest meaning "not in the epoll set at all". Never a real mask: the reactor
/// uses neither EPOLLET nor any of the high flag bits.
@usableFromInline let outOfEpollSet: UInt32 = .max

/// A connection's state: phase, origin, read gate and conditions, four bytes in its slot.
/// Only the transitions below change it.
@usableFromInline
struct Lifecycle: Equatable, Sendable {
    @usableFromInline private(set) var phase: Phase
    @usableFromInline let origin: Origin
    @usableFromInline private(set) var gate: ReadGate
    @usableFromInline private(set) var conditions: Conditions

    /// A new connection: open if accepted, else connecting.
    @inlinable
    init(origin: Origin) {
        self.origin = origin
        self.phase = origin == .accepted ? .open : .connecting
        self.gate = []
        self.conditions = []
    }

    /// Any state, for the tests' tables (the reactor starts every connection with
    /// ``init(origin:)`` and moves it only by transitions).
    init(origin: Origin, phase: Phase, gate: ReadGate = [], conditions: Conditions = []) {
        self.origin = origin
        self.phase = phase
        self.gate = gate
        self.conditions = conditions
    }

    /// Whether the reactor reads: open, and nothing shuts the gate.
    @inlinable var isReading: Bool { phase == .open && gate.isEmpty }

    /// Whether writes are taken (sent, or queued while connecting).
    @inlinable var acceptsWrites: Bool { phase.rawValue <= Phase.open.rawValue }

    // MARK: transitions

    /// connecting → open: the connect succeeded, or an adopted fd had its first event.
    @inlinable
    mutating func connected() {
        precondition(phase == .connecting, "connected() in phase \(phase)")
        phase = .open
    }

    /// A close was requested (by the handler, an error, a timer, a stop). Returns true for the
    /// first request, whose reason is the one reported.
    ///
    /// connecting → closing, abortive: nothing was delivered yet, so the connect is abandoned
    /// and what was queued is dropped. open → closing, graceful unless `abort`. In closing and
    /// lingering, only `abort` changes anything.
    @inlinable
    mutating func requestClose(abort: Bool) -> Bool {
        switch phase {
        case .connecting:
            phase = .closing
            conditions.insert(.abort)
            return true
        case .open:
            phase = .closing
            if abort { conditions.insert(.abort) }
            return true
        case .closing, .lingering:
            if abort { conditions.insert(.abort) }
            return false
        case .closed:
            return false
        }
    }

    /// EPOLLHUP without EPOLLIN while the reactor is not reading. Returns true when the
    /// connection must close (both directions are gone and nothing more can be delivered);
    /// false when it only steps out of the epoll set until the handler resumes reading (see
    /// ``Conditions/hungUp``).
    @inlinable
    mutating func hangUp() -> Bool {
        guard phase == .open, gate == .handler else { return true }
        conditions.insert(.hungUp)
        return false
    }

    /// closing or lingering → closed at the next settle: the close deadline passed (the peer
    /// took nothing for `closeTimeout`), the lingering deadline passed, or the lingering peer
    /// sent EOF or failed. Returns false (and changes nothing) in other phases.
    @inlinable
    mutating func cut() -> Bool {
        switch phase {
        case .closing, .lingering:
            conditions.insert(.abort)
            return true
        case .connecting, .open, .closed:
            return false
        }
    }

    /// The handler returned ``Action/pauseReading``: the gate shuts until it resumes.
    @inlinable
    mutating func pauseReading() { gate.insert(.handler) }

    /// ``ReactorContext/resumeReading(_:)``: the handler's part of the gate opens (backpressure
    /// and EOF keep theirs). A connection that hung up while paused is added back to the epoll
    /// set by its interest, and reads what is left.
    @inlinable
    mutating func resumeReading() { gate.remove(.handler) }

    /// A connection handed over while its output sat over the high watermark, and has not yet
    /// drained below the low one: its backpressure part of the gate stays shut in the new
    /// process, so it is read again (and told ``ConnectionHandler/onWritable(_:state:)``) only
    /// once the output carried drains, as it would have been in the old process.
    @inlinable
    mutating func restoreBackpressure() { gate.insert(.backpressure) }

    /// read() returned 0: the peer sends nothing more; the gate stays shut for good.
    @inlinable
    mutating func readEOF() { gate.insert(.eof) }

    /// ``ReactorContext/shutdownWrite(_:)``: shut down the write side once output drains.
    @inlinable
    mutating func requestShutdownWrite() { conditions.insert(.shutdownPending) }

    /// The write side was shut down (the step ``Step/shutdownWrite``): nothing is pending any more.
    @inlinable
    mutating func shutWrite() {
        precondition(phase == .open, "shutWrite() in phase \(phase)")
        conditions.remove(.shutdownPending)
    }

    /// closing → lingering (the step ``Step/linger``): output flushed, the write side shut
    /// down, the handler done; input is discarded until the peer closes.
    @inlinable
    mutating func linger() {
        precondition(phase == .closing && !conditions.contains(.abort), "linger() in phase \(phase)")
        phase = .lingering
    }

    /// → closed (the step ``Step/finish``, or an epoll refusal at install): the fd is closed
    /// and the slot freed right after.
    @inlinable
    mutating func finish() {
        precondition(phase != .closed, "finish() of a closed connection")
        phase = .closed
    }

    /// Watermark backpressure: shut the gate above `high`, open it below `low`. Returns true
    /// when it opened, so the handler hears that the connection drained (onWritable).
    @inlinable
    mutating func updateBackpressure(pending: Int, high: Int, low: Int) -> Bool {
        if pending > high {
            gate.insert(.backpressure)
        } else if pending < low && gate.contains(.backpressure) {
            gate.remove(.backpressure)
            return true
        }
        return false
    }

    /// What settling does with a connection in this state.
    @usableFromInline
    enum Step: Equatable, Sendable {
        /// Nothing to do beyond its epoll interest.
        case stay
        /// Closing with output pending: let the peer take it for as long as it makes progress
        /// (the reactor arms the close deadline once; it cuts after `closeTimeout` without
        /// progress).
        case flush
        /// closing → lingering: output flushed, the peer may still send.
        case linger
        /// → closed: tear it down.
        case finish
        /// Open, output flushed, a shutdown of the write side asked for: do it (the peer sees
        /// EOF; reading goes on).
        case shutdownWrite
    }

    /// The next step for this state, given whether output is pending.
    @inlinable
    func step(hasOutput: Bool) -> Step {
        switch phase {
        case .closing:
            if conditions.contains(.abort) { return .finish }
            if hasOutput { return .flush }
            // No linger after the peer's EOF (it already closed its side), nor for adopted fds
            // (pipes and terminals have no half-close and no reset to avoid).
            if gate.contains(.eof) || origin == .adopted { return .finish }
            return .linger
        case .lingering:
            return conditions.contains(.abort) ? .finish : .stay
        case .open:
            return conditions.contains(.shutdownPending) && !hasOutput ? .shutdownWrite : .stay
        case .connecting, .closed:
            return .stay
        }
    }

    /// The epoll interest this state needs: a pure function of the state and of whether
    /// output is pending. EPOLLOUT is armed only while output is pending (or to learn that a
    /// connect finished); EPOLLIN only while reading, or lingering (to see the peer's EOF).
    @inlinable
    func interest(hasOutput: Bool) -> UInt32 {
        switch phase {
        case .connecting:
            // An adopted fd may be read-only (stdin): its first input also counts as "connected".
            return origin == .adopted ? CEPOLL_IN | CEPOLL_OUT : CEPOLL_OUT
        case .open:
            if gate.isEmpty { return hasOutput ? CEPOLL_IN | CEPOLL_OUT : CEPOLL_IN }
            if hasOutput { return CEPOLL_OUT }  // a write to a hung-up peer fails and closes it
            return conditions.contains(.hungUp) ? outOfEpollSet : 0
        case .closing:
            return hasOutput ? CEPOLL_OUT : 0
        case .lingering:
            return CEPOLL_IN
        case .closed:
            return outOfEpollSet
        }
    }
}

/// The epoll_ctl operation that takes a registration from `registered` to `interest` (both
/// may be `outOfEpollSet`); nil when they are equal.
@inlinable
func epollOperation(from registered: UInt32, to interest: UInt32) -> CInt? {
    if registered == interest { return nil }
    if interest == outOfEpollSet { return EPOLL_CTL_DEL }
    return registered == outOfEpollSet ? EPOLL_CTL_ADD : EPOLL_CTL_MOD
}

// MARK: applying the lifecycle to the reactor's table

extension Reactor {
    /// Puts connection `i` on the dirty list (once) to be settled at the next drain point.
    @inlinable
    func markDirty(_ i: Int32) {
        let slot = slots[Int(i)]
        guard !slot.pointee.book.contains(.dirty) else { return }
        slot.pointee.book.insert(.dirty)
        dirty.pointee.append(i)
    }

    /// Settles every dirty connection, including those that settling itself makes dirty (a
    /// handler's onWritable). Called only between callbacks: after each event, each timer and
    /// each closure from another thread, so a slot is never freed under a running callback.
    /// Out of line: an echoed message leaves nothing dirty, and the loop only checks the list.
    /// Inlinable, so that it and what it calls are specialised for the handler: the generic
    /// versions looked up `Slot<State>`'s metadata at run time, about 2,300 of reflectd's 7,900
    /// user instructions per connect / echo / close cycle (callgrind, 2026-12-07).
    @inlinable @inline(never)
    func settleDirty() {
        while let i = dirty.pointee.popLast() {
            let slot = slots[Int(i)]
            slot.pointee.book.remove(.dirty)
            if slot.pointee.kind == .connection { settle(i) }
        }
    }

    /// Brings one connection in line with its state, in three steps: advance the phase,
    /// compute the epoll interest, reconcile the registration with it.
    @inlinable
    func settle(_ i: Int32) {
        let slot = slots[Int(i)]
        // 1. Advance: watermarks first (they gate reading), then the closing phases.
        let drained = slot.pointee.life.updateBackpressure(
            pending: slot.pointee.output?.count ?? 0, high: configuration.highWatermark, low: configuration.lowWatermark)
        // It passed the high watermark and has drained below the low one: the handler hears it
        // before the next step, so that what it writes now still goes before a pending shutdown.
        if drained && slot.pointee.life.phase == .open { writable(i) }
        switch slot.pointee.life.step(hasOutput: slot.pointee.output != nil) {
        case .stay: break
        case .flush: if !slot.pointee.book.contains(.closeDeadlineArmed) { armCloseDeadline(i) }
        case .linger: startLinger(i)
        case .shutdownWrite:
            slot.pointee.life.shutWrite()
            sys.shutdownWrite(slot.pointee.fd)
        case .finish:
            finishClose(i)
            return
        }
        // 2. and 3. The interest the state needs, and the registration brought in line.
        let interest = slot.pointee.life.interest(hasOutput: slot.pointee.output != nil)
        if interest != slot.pointee.registered { _ = reconcile(i, interest) }
    }

    /// Changes the epoll registration to `interest`: add, modify or delete. If epoll refuses
    /// (ENOMEM, or ENOSPC past fs.epoll.max_user_watches, on ADD or MOD) the connection cannot
    /// be watched any more and is closed at once; returns false then.
    @inlinable
    func reconcile(_ i: Int32, _ interest: UInt32) -> Bool {
        let slot = slots[Int(i)]
        guard let op = epollOperation(from: slot.pointee.registered, to: interest) else { return true }
        let data = ConnectionID(index: i, generation: slot.pointee.generation).epollData
        if let e = sys.epollCtl(epfd, op, slot.pointee.fd, events: interest == outOfEpollSet ? 0 : interest, data: data) {
            // A refused MOD leaves the old registration in place; a refused ADD leaves none.
            requestClose(i, .error(e), abort: true)
            finishClose(i)
            return false
        }
        slot.pointee.registered = interest
        return true
    }

    /// Tells the handler a connection drained below the low watermark (see ``ConnectionHandler/onWritable(_:state:)``).
    @usableFromInline
    func writable(_ i: Int32) {
        let slot = slots[Int(i)]
        let id = ConnectionID(index: i, generation: slot.pointee.generation, fd: slot.pointee.fd)
        let action = handler.onWritable(Connection(reactor: self, id: id), state: &slot.pointee.state)
        apply(action, i)
    }

    /// Puts a new connection in the table and registers it with epoll, with the interest of its
    /// first phase. Throws, with the fd closed, if there is no slot or epoll refused it (ENOMEM,
    /// or ENOSPC past fs.epoll.max_user_watches); the handler then hears nothing of it (no
    /// onOpen, so no onClose either). `peer` and `state` are consumed: moved into the slot, not copied.
    @inlinable
    func install(_ fd: CInt, peer: consuming SocketAddress?, state: consuming Handler.ConnectionState, origin: Origin) throws(SyscallError) -> ConnectionID {
        guard let i = slots.allocate(fd: fd) else {
            sys.close(fd)
            throw SyscallError(call: "no free connection slot (the fd hard limit is \(slots.capacity))", errno: .tooManyOpenFiles)
        }
        let slot = slots[Int(i)]
        let generation = slot.pointee.generation &+ 1
        let life = Lifecycle(origin: origin)
        let interest = life.interest(hasOutput: false)
        slot.initialize(to: Slot(fd: fd, generation: generation, life: life, registered: interest,
                                 lastActive: hot.pointee.tick, peer: peer ?? SocketAddress(storage: .unix("")), state: state))
        counters.pointee.open &+= 1
        let id = ConnectionID(index: i, generation: generation, fd: fd)
        if let e = sys.epollCtl(epfd, EPOLL_CTL_ADD, fd, events: interest, data: id.epollData) {
            slot.pointee.registered = outOfEpollSet
            _ = slot.pointee.life.requestClose(abort: true)
            setCloseReason(i, .error(e))
            finishClose(i, notify: false)
            throw SyscallError(call: "epoll_ctl", errno: e)
        }
        wheelInsert(i)
        return id
    }

    /// A close was requested: the lifecycle decides what it means in the current phase (see
    /// ``Lifecycle/requestClose(abort:)``). The first reason given is the one reported.
    /// Out of line: it is on no message's path.
    @inlinable @inline(never)
    func requestClose(_ i: Int32, _ reason: CloseReason, abort: Bool) {
        let slot = slots[Int(i)]
        guard slot.pointee.kind == .connection else { return }
        guard slot.pointee.life.requestClose(abort: abort) else { markDirty(i); return }
        // Usually no peer-close reason is set: record `reason` as it is, with no copy.
        if peerCloseReasons.isEmpty { setCloseReason(i, reason) } else { setCloseReason(i, peerClose(i, reason)) }
        markDirty(i)
    }

    /// Records the reason connection `i` closes with, replacing any earlier one: one of the
    /// reactor's own without an errno as its code in the slot (no hashing on the common close),
    /// any other in `closeReasons`.
    @inlinable
    func setCloseReason(_ i: Int32, _ reason: CloseReason) {
        let slot = slots[Int(i)]
        if reason.isPreset {
            if slot.pointee.closing == .other { closeReasons.removeValue(forKey: i) }
            slot.pointee.closing = reason.code
        } else {
            slot.pointee.closing = .other
            closeReasons[i] = reason
        }
    }

    /// The reason recorded for connection `i`, or nil when none was.
    @inlinable
    func closeReason(_ i: Int32) -> CloseReason? {
        switch slots[Int(i)].pointee.closing {
        case .none: return nil
        case .other: return closeReasons[i]
        case let code: return .preset(code)
        }
    }

    /// The reason recorded for connection `i`, or nil, forgetting it.
    @inlinable
    func takeCloseReason(_ i: Int32) -> CloseReason? {
        let slot = slots[Int(i)]
        let code = slot.pointee.closing
        slot.pointee.closing = .none
        switch code {
        case .none: return nil
        case .other: return closeReasons.removeValue(forKey: i)
        default: return .preset(code)
        }
    }

    /// `reason`, or what ``Connection/countPeerClose(as:)`` asked for when the peer ended it.
    @inlinable
    func peerClose(_ i: Int32, _ reason: CloseReason) -> CloseReason {
        guard !peerCloseReasons.isEmpty, reason == .eof || reason == .reset, let own = peerCloseReasons[i] else { return reason }
        return own
    }

    /// → closed: the handler's onClose (unless it already ran, at the start of the linger, or
    /// `notify` is false), close(2), and the slot freed. close(2) also removes the fd from the
    /// epoll set (the reactor never duplicates fds); adopted fds are removed explicitly.
    @inlinable @inline(never)
    func finishClose(_ i: Int32, notify: Bool = true) {
        let slot = slots[Int(i)]
        let reason = takeCloseReason(i) ?? peerClose(i, .eof)
        if !peerCloseReasons.isEmpty { peerCloseReasons.removeValue(forKey: i) }
        if slot.pointee.timerHead != 0 { cancelConnectionTimers(i) }
        if notify && slot.pointee.life.phase != .lingering {
            let id = ConnectionID(index: i, generation: slot.pointee.generation, fd: slot.pointee.fd)
            handler.onClose(Connection(reactor: self, id: id), state: &slot.pointee.state, reason: reason)
        }
        slot.pointee.life.finish()
        if slot.pointee.wheelBucket >= 0 { wheelRemove(i) }
        if slot.pointee.life.origin == .adopted && slot.pointee.registered != outOfEpollSet {
            // An adopted fd may share its file description with other fds (a dup'd stdin, a
            // terminal on 0, 1 and 2); then close(2) does not take it out of the epoll set.
            _ = sys.epollCtl(epfd, EPOLL_CTL_DEL, slot.pointee.fd, events: 0, data: 0)
        } else if let out = slot.pointee.output, !out.isEmpty {
            // Output the peer has not received is being thrown away (a deadline, a discarding
            // close, a stop past its grace, an error): reset, so that the peer sees ECONNRESET
            // and not a clean EOF after a shortened stream. (Not for adopted fds: a pipe has no
            // reset, and a shared socket's other fds would reset it later.)
            sys.resetOnClose(slot.pointee.fd)
        }
        sys.close(slot.pointee.fd)
        if let out = slot.pointee.output {
            slot.pointee.output = nil
            pool.give(out)
        }
        counters.pointee.open &-= 1
        counters.pointee.closes.count(reason)
        if slot.pointee.book.contains(.holdsLimitPlace) { configuration.connectionLimit?.release() }
        // The slot's fields with something to release, each destroyed by its own type: the
        // whole slot's deinitialize(count:) went through Slot<State>'s generic value witness
        // (about 180 user instructions per close, callgrind 2026-12-07). The rest are plain
        // values, left as they are for the next install to overwrite.
        // An IP peer holds nothing to release; only a Unix path (a String) does.
        if slot.pointee.peer.isUnix { _ = withUnsafeMutablePointer(to: &slot.pointee.peer) { $0.deinitialize(count: 1) } }
        _ = withUnsafeMutablePointer(to: &slot.pointee.state) { $0.deinitialize(count: 1) }
        slots.release(i)
    }

    /// closing → lingering. Output is flushed but the peer may still send: shut down our side
    /// (the peer sees EOF after the last byte) and discard input until the peer closes too, or
    /// `lingerNs` passes. Closing at once could turn into an RST that destroys replies still in
    /// the send queue. The handler is done with the connection here, so its onClose runs now.
    @usableFromInline
    func startLinger(_ i: Int32) {
        let slot = slots[Int(i)]
        if slot.pointee.timerHead != 0 { cancelConnectionTimers(i) }
        slot.pointee.book.remove([.closeDeadlineArmed, .sendDeadlineArmed])  // their timers are gone
        let id = ConnectionID(index: i, generation: slot.pointee.generation, fd: slot.pointee.fd)
        handler.onClose(Connection(reactor: self, id: id), state: &slot.pointee.state,
                        reason: closeReason(i) ?? peerClose(i, .eof))
        slot.pointee.life.linger()
        // A lingering connection is done: it counts against no limit (a peer that never closes
        // must not keep a place for the whole linger). Its fd is the only thing it still holds.
        if slot.pointee.book.contains(.holdsLimitPlace) {
            slot.pointee.book.remove(.holdsLimitPlace)
            configuration.connectionLimit?.release()
        }
        sys.shutdownWrite(slot.pointee.fd)
        _ = addTimer(after: Budget.lingerNs, interval: nil, .lingerDeadline(id))
    }

    /// Lingering: discard what arrives; the peer's EOF (or an error) ends the linger.
    @usableFromInline
    func lingerRead(_ i: Int32) {
        let slot = slots[Int(i)]
        for _ in 0..<Budget.readsPerEvent {
            switch sys.read(slot.pointee.fd, into: readBuffer) {
            case .bytes: continue
            case .wouldBlock: return
            case .eof, .failed:
                _ = slot.pointee.life.cut()
                markDirty(i)
                return
            }
        }
    }

    /// Closing with output pending: the peer gets `closeTimeout` without progress to take it.
    /// Progress is what the peer received: the bytes still in the output buffer plus those the
    /// kernel holds unacknowledged (SIOCOUTQ), sampled when the deadline is armed and again
    /// when it fires. Writes are not timed: with a large kernel send buffer and a slow reader
    /// the reactor may not write for seconds while the peer reads all the time, and the write
    /// path stays as it is. A peer that keeps taking bytes gets all of them; one that stops is
    /// cut between `closeTimeout` and twice that after the last byte it took.
    @usableFromInline
    func armCloseDeadline(_ i: Int32) {
        slots[Int(i)].pointee.book.insert(.closeDeadlineArmed)
        _ = addConnectionTimer(i, after: configuration.closeTimeout.nanoseconds, interval: nil,
                               .closeDeadline(undelivered: undelivered(i)))
    }

    /// What connection `i` has not delivered: its pending output, and what its socket holds that
    /// the peer has not acknowledged (0 where the fd cannot tell, such as an adopted pipe).
    func undelivered(_ i: Int32) -> Int {
        let slot = slots[Int(i)]
        return (slot.pointee.output?.count ?? 0) + (sys.unacknowledgedBytes(slot.pointee.fd) ?? 0)
    }

    /// The close deadline fired: if the peer received nothing since it was armed (what is
    /// undelivered did not shrink), cut the connection, abortively and with
    /// ``CloseReason/closeTimeout``; else arm it again, for another `closeTimeout`.
    func closeDeadline(_ i: Int32, undelivered before: Int) {
        let slot = slots[Int(i)]
        slot.pointee.book.remove(.closeDeadlineArmed)
        guard slot.pointee.life.phase == .closing, slot.pointee.output != nil else { return }
        let now = undelivered(i)
        if now >= before {
            configuration.logger.debug("connection \(slot.pointee.peer) (\(ConnectionID(index: i, generation: slot.pointee.generation, fd: slot.pointee.fd))): closing, its peer took nothing for \(configuration.closeTimeout), \(now) bytes dropped (close-timeout)")
            // The output is dropped: the reason the close began with (eof, the handler's) no
            // longer says what happened.
            if slot.pointee.life.cut() { setCloseReason(i, .closeTimeout) }
            markDirty(i)
            return
        }
        slot.pointee.book.insert(.closeDeadlineArmed)
        _ = addConnectionTimer(i, after: configuration.closeTimeout.nanoseconds, interval: nil, .closeDeadline(undelivered: now))
    }

    /// Pending output will not be delivered (the send timeout ran out): close at once, abortively
    /// (``finishClose(_:notify:)`` resets the connection), reported with `reason` even when a
    /// graceful close was already under way with another one, whose promise of every byte
    /// this breaks.
    func cutDiscarding(_ i: Int32, _ reason: CloseReason) {
        _ = slots[Int(i)].pointee.life.requestClose(abort: true)
        setCloseReason(i, reason)
        markDirty(i)
    }

    /// A lingering connection ran out of time for its peer to close: cut it, keeping its
    /// reason (its output was all taken by then).
    @usableFromInline
    func lingerDeadline(_ id: ConnectionID) {
        guard slots.isLive(id) else { return }
        let slot = slots[Int(id.index)]
        if slot.pointee.life.cut() { markDirty(id.index) }
    }
}
