import CEpoll
import Glibc

// Time inside a reactor: one timerfd, armed for the earliest deadline of a small binary heap.
// Nothing reads the clock per loop iteration; the loop sleeps in epoll_wait until an fd or the
// timerfd is ready.
//
// Idle timeouts use a wheel of one-second buckets driven by a repeating one-second timer. A
// connection sits in the bucket of its deadline. Traffic only stamps `lastActive` (a store, no
// list operation per message); when a bucket comes due, each connection in it is either closed
// (idle long enough) or moved to the bucket of its new deadline. So each connection is visited at
// most once per timeout period, and a tick costs only the connections due in that bucket, however
// many idle connections wait in the others.

/// Names a timer made with ``Reactor/schedule(after:repeating:_:)`` or
/// ``Connection/schedule(after:repeating:)``, to cancel it or to tell which timer fired.
public struct TimerID: Hashable, Sendable, CustomStringConvertible {
    @usableFromInline let value: UInt64
    @usableFromInline init(value: UInt64) { self.value = value }
    public var description: String { "timer \(value)" }
}

/// What a timer bound to a connection does when it fires.
enum ConnectionTimerKind {
    /// The handler's ``ConnectionHandler/onTimer(_:connection:state:)``.
    case handler
    /// Pending output made no progress for ``ReactorConfiguration/sendTimeout``.
    case sendDeadline
    /// A closing connection's output may have made no progress for
    /// ``ReactorConfiguration/closeTimeout``: `undelivered` is what the peer had not received
    /// yet when the timer was armed (see ``Reactor/closeDeadline(_:undelivered:)``).
    case closeDeadline(undelivered: Int)
}

enum TimerWork {
    case idleTick
    case publishStatistics
    case resumeAccepting
    case shutdownDeadline
    /// A lingering connection's `Budget.lingerNs` ran out.
    case lingerDeadline(ConnectionID)
    /// Bound to a connection: linked into its slot's timer list and cancelled when it closes.
    case connection(ConnectionID, ConnectionTimerKind)
    case user(() -> Void)
}

struct TimerEntry {
    var deadline: Int64
    let id: UInt64
    let interval: Int64?
    let work: TimerWork
    /// The next timer of the same connection (0: none), for `.connection` timers.
    var nextOfConnection: UInt64 = 0
}

/// A binary min-heap of timer deadlines. Cancelled timers are dropped when they surface.
struct TimerQueue {
    private var heap: [(deadline: Int64, id: UInt64)] = []
    private var entries: [UInt64: TimerEntry] = [:]
    private var nextID: UInt64 = 1

    var earliest: Int64? { heap.first?.deadline }

    mutating func add(_ deadline: Int64, interval: Int64?, _ work: TimerWork, nextOfConnection: UInt64 = 0) -> UInt64 {
        let id = nextID
        nextID += 1
        entries[id] = TimerEntry(deadline: deadline, id: id, interval: interval, work: work, nextOfConnection: nextOfConnection)
        push(deadline, id)
        return id
    }

    /// The live entry `id`, if it has neither run (one-shot) nor been cancelled.
    func entry(_ id: UInt64) -> TimerEntry? { entries[id] }

    /// Relinks a connection's timer list.
    mutating func setNextOfConnection(_ id: UInt64, _ next: UInt64) {
        entries[id]?.nextOfConnection = next
    }

    /// Live timers (repeating ones count once).
    var count: Int { entries.count }

    /// Cancelled entries stay in the heap until they surface; when they outnumber the live ones,
    /// the heap is rebuilt, so cancel-and-reschedule patterns cannot grow it without bound.
    mutating func cancel(_ id: UInt64) {
        entries[id] = nil
        if heap.count > 64 && heap.count > 2 * entries.count {
            heap = entries.values.map { ($0.deadline, $0.id) }
            heap.sort { $0.deadline < $1.deadline }  // a sorted array is a valid min-heap
        }
    }

    /// Removes and returns the next entry due at `now`, rescheduling it first if it repeats.
    mutating func popDue(_ now: Int64) -> TimerEntry? {
        while let top = heap.first, top.deadline <= now {
            popTop()
            guard var entry = entries[top.id], entry.deadline == top.deadline else { continue }
            if let interval = entry.interval {
                // Skip missed periods instead of firing a burst after a stall.
                entry.deadline += interval * max(1, (now - entry.deadline) / interval + 1)
                entries[top.id] = entry
                push(entry.deadline, top.id)
            } else {
                entries[top.id] = nil
            }
            return entry
        }
        return nil
    }

    private mutating func push(_ deadline: Int64, _ id: UInt64) {
        heap.append((deadline, id))
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard heap[parent].deadline > heap[i].deadline else { break }
            heap.swapAt(parent, i)
            i = parent
        }
    }

    private mutating func popTop() {
        heap.swapAt(0, heap.count - 1)
        heap.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var smallest = i
            if l < heap.count && heap[l].deadline < heap[smallest].deadline { smallest = l }
            if r < heap.count && heap[r].deadline < heap[smallest].deadline { smallest = r }
            if smallest == i { return }
            heap.swapAt(i, smallest)
            i = smallest
        }
    }
}

/// The idle-timeout wheel.
struct IdleWheel {
    /// Idle seconds after which a connection closes.
    let timeout: UInt32
    /// Seconds since the reactor started.
    var tick: UInt32 = 0
    /// First slot of each bucket, or -1. One bucket per second of `timeout + 2`: a deadline is at
    /// most `timeout + 1` ticks ahead, so it never lands in the bucket being processed.
    var heads: [Int32]

    /// Why 1 day: longer timeouts would make the wheel big for no use; use TCP keepalive instead.
    static let maxTimeout = 86_400

    init(timeout: Int) {
        self.timeout = UInt32(timeout)
        heads = Array(repeating: -1, count: timeout + 2)
    }

    /// The first tick at which a connection last active during tick `lastActive` has been idle a
    /// full timeout. Traffic stamped `lastActive` happened up to 1 s before that tick ended, so
    /// the +1 makes the idle time at least `timeout` and at most `timeout + 1` seconds.
    func deadline(lastActive: UInt32) -> UInt32 { lastActive &+ timeout &+ 1 }

    func bucket(_ deadline: UInt32) -> Int { Int(deadline % UInt32(heads.count)) }
}

let nanosecondsPerSecond: Int64 = 1_000_000_000

extension Duration {
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * nanosecondsPerSecond + attoseconds / 1_000_000_000
    }
}

extension Reactor {
    /// Runs `body` on the reactor's thread after `delay`, and then every `interval` if given.
    ///
    /// The closure is kept until the timer is cancelled or, for a one-shot timer, has run;
    /// capture the reactor `unowned` in it to avoid a reference cycle.
    @discardableResult
    public func schedule(after delay: Duration, repeating interval: Duration? = nil, _ body: @escaping () -> Void) -> TimerID {
        TimerID(value: addTimer(after: delay.nanoseconds, interval: interval?.nanoseconds, .user(body)))
    }

    /// Cancels a timer, whether made by ``schedule(after:repeating:_:)`` or bound to a
    /// connection with ``Connection/schedule(after:repeating:)``; a timer that already ran (or
    /// was cancelled) is ignored.
    public func cancel(_ timer: TimerID) {
        if let entry = timers.entry(timer.value), case .connection(let id, _) = entry.work, isLive(id) {
            unlinkConnectionTimer(id.index, timer.value, next: entry.nextOfConnection)
        }
        timers.cancel(timer.value)
    }

    // MARK: timers bound to a connection
    // Each connection's timers form a singly linked list through the timer entries, headed in
    // its slot (`timerHead`), so closing a connection cancels exactly its own timers and a long
    // timer of a closed connection does not stay in the queue until its deadline.

    func addConnectionTimer(_ i: Int32, after delay: Int64, interval: Int64?, _ kind: ConnectionTimerKind) -> UInt64 {
        let slot = slots[Int(i)]
        let id = ConnectionID(index: i, generation: slot.pointee.generation)
        let timer = timers.add(cepoll_monotonic_ns() + max(0, delay), interval: interval, .connection(id, kind),
                               nextOfConnection: slot.pointee.timerHead)
        slot.pointee.timerHead = timer
        armTimerFD()
        return timer
    }

    /// Takes `timer` (whose successor is `next`) out of slot `i`'s list.
    func unlinkConnectionTimer(_ i: Int32, _ timer: UInt64, next: UInt64) {
        let slot = slots[Int(i)]
        if slot.pointee.timerHead == timer {
            slot.pointee.timerHead = next
            return
        }
        var t = slot.pointee.timerHead
        while t != 0, let entry = timers.entry(t) {
            if entry.nextOfConnection == timer {
                timers.setNextOfConnection(t, next)
                return
            }
            t = entry.nextOfConnection
        }
    }

    /// The connection is closing for good: none of its timers may fire.
    @usableFromInline
    func cancelConnectionTimers(_ i: Int32) {
        let slot = slots[Int(i)]
        var t = slot.pointee.timerHead
        slot.pointee.timerHead = 0
        while t != 0 {
            let next = timers.entry(t)?.nextOfConnection ?? 0
            timers.cancel(t)
            t = next
        }
    }

    func connectionTimerFired(_ entry: TimerEntry, _ id: ConnectionID, _ kind: ConnectionTimerKind, now: Int64) {
        guard isLive(id) else { return }
        if entry.interval == nil { unlinkConnectionTimer(id.index, entry.id, next: entry.nextOfConnection) }
        switch kind {
        case .handler:
            let slot = slots[Int(id.index)]
            guard slot.pointee.life.phase != .lingering else { return }
            let fd = slot.pointee.fd
            let action = handler.onTimer(TimerID(value: entry.id),
                                         connection: Connection(reactor: self, id: ConnectionID(index: id.index, generation: id.generation, fd: fd)),
                                         state: &slot.pointee.state)
            apply(action, id.index)
        case .sendDeadline:
            sendDeadline(id.index, now: now)
        case .closeDeadline(let undelivered):
            closeDeadline(id.index, undelivered: undelivered)
        }
    }

    func addTimer(after delay: Int64, interval: Int64?, _ work: TimerWork) -> UInt64 {
        let id = timers.add(cepoll_monotonic_ns() + max(0, delay), interval: interval, work)
        armTimerFD()
        return id
    }

    /// Arms the timerfd for the earliest deadline, if that changed.
    func armTimerFD() {
        let earliest = timers.earliest ?? 0
        guard earliest != armedDeadline else { return }
        armedDeadline = earliest
        // Absolute CLOCK_MONOTONIC time; 0 disarms.
        Syscalls.timerfdSetAbsolute(timerFD, deadlineNs: earliest)
    }

    /// The timerfd fired: run everything due.
@usableFromInline
    func timerFired() {
        Syscalls.drain(timerFD, size: 8)
        armedDeadline = 0
        let now = cepoll_monotonic_ns()
        while let entry = timers.popDue(now) {
            switch entry.work {
            case .idleTick: idleTick(now)
            case .publishStatistics: handle.publish(counters.pointee)
            case .resumeAccepting: resumeAccepting()
            case .shutdownDeadline: abortAll()
            case .lingerDeadline(let id): lingerDeadline(id)
            case .connection(let id, let kind): connectionTimerFired(entry, id, kind, now: now)
            case .user(let body): body()
            }
            settleDirty()
        }
        armTimerFD()
    }

    // MARK: idle wheel

@usableFromInline
    // The wheel's lists link slots by index (a slot's wheelPrev and wheelNext).

    func wheelInsert(_ i: Int32) {
        guard wheel != nil else { return }
        let slot = slots[Int(i)]
        let b = wheel!.bucket(wheel!.deadline(lastActive: slot.pointee.lastActive))
        let head = wheel!.heads[b]
        slot.pointee.wheelBucket = Int32(b)
        slot.pointee.wheelPrev = -1
        slot.pointee.wheelNext = head
        if head >= 0 { slots[Int(head)].pointee.wheelPrev = i }
        wheel!.heads[b] = i
    }

@usableFromInline
    func wheelRemove(_ i: Int32) {
        guard wheel != nil else { return }
        let slot = slots[Int(i)]
        let prev = slot.pointee.wheelPrev, next = slot.pointee.wheelNext
        if prev >= 0 { slots[Int(prev)].pointee.wheelNext = next } else { wheel!.heads[Int(slot.pointee.wheelBucket)] = next }
        if next >= 0 { slots[Int(next)].pointee.wheelPrev = prev }
        slot.pointee.wheelBucket = -1
        slot.pointee.wheelPrev = -1
        slot.pointee.wheelNext = -1
    }

    /// One or more seconds passed: advance the wheel one bucket per second.
    func idleTick(_ now: Int64) {
        guard wheel != nil else { return }
        let target = UInt32(truncatingIfNeeded: (now - wheelStart) / nanosecondsPerSecond)
        var steps = 0
        while wheel!.tick != target && steps < wheel!.heads.count {
            steps += 1
            wheel!.tick &+= 1
            hot.pointee.tick = wheel!.tick
            let tick = wheel!.tick
            let b = wheel!.bucket(tick)
            var i = wheel!.heads[b]
            wheel!.heads[b] = -1
            while i >= 0 {
                let slot = slots[Int(i)]
                let next = slot.pointee.wheelNext
                slot.pointee.wheelBucket = -1
                slot.pointee.wheelPrev = -1
                slot.pointee.wheelNext = -1
                let due = wheel!.deadline(lastActive: slot.pointee.lastActive)
                if Int32(bitPattern: due &- tick) <= 0 {
                    requestClose(i, .timeout, abort: false)
                } else {
                    wheelInsert(i)
                }
                i = next
            }
        }
        wheel!.tick = target
        hot.pointee.tick = target
    }
}
