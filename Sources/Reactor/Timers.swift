import CEpoll
import Glibc

// Time inside a reactor.
//
// - Idle timeouts: a wheel of one-second buckets, driven by one periodic timerfd. A connection
//   sits in the bucket of its deadline. Traffic only stamps `lastActive` (a store, no list
//   operation per message); when a bucket comes due, each connection in it is either closed (idle
//   long enough) or moved to the bucket of its new deadline. Each connection is therefore visited
//   once per timeout period at most, and a tick costs only the connections due in that bucket,
//   however many idle connections wait in the others.
// - Accept back-off and the shutdown deadline are single deadlines, folded into the epoll_wait
//   timeout (as redis ae does), so they need no fd.

/// The idle-timeout wheel.
struct IdleWheel {
    /// Idle seconds after which a connection closes.
    let timeout: UInt32
    /// Seconds since the reactor started, advanced by the timerfd.
    var tick: UInt32 = 0
    /// First fd of each bucket, or -1. One bucket per second of `timeout + 2`: a deadline is at most
    /// `timeout + 1` ticks ahead, so it never lands in the bucket being processed.
    var heads: [Int32]

    /// Why 1 day: longer timeouts would make the wheel big for no use; use TCP keepalive instead.
    static let maxTimeout = 86_400

    init(timeout: Int) {
        self.timeout = UInt32(timeout)
        heads = Array(repeating: -1, count: timeout + 2)
    }

    /// The first tick at which a connection last active at `lastActive` has been idle a full timeout.
    /// `lastActive` is the tick during which the traffic happened, up to 1 s before that tick ends,
    /// so the +1 makes the idle time at least `timeout` and at most `timeout + 1` seconds.
    func deadline(lastActive: UInt32) -> UInt32 { lastActive &+ timeout &+ 1 }

    func bucket(_ deadline: UInt32) -> Int { Int(deadline % UInt32(heads.count)) }
}

extension Reactor {
    /// The current idle tick, stamped on a connection at each read and write.
    @inlinable var currentTick: UInt32 { hot.pointee.tick }

    func wheelInsert(_ fd: Int32) {
        guard wheel != nil else { return }
        let slot = slots[Int(fd)]
        let b = wheel!.bucket(wheel!.deadline(lastActive: slot.pointee.lastActive))
        let head = wheel!.heads[b]
        slot.pointee.wheelBucket = Int32(b)
        slot.pointee.wheelPrev = -1
        slot.pointee.wheelNext = head
        if head >= 0 { slots[Int(head)].pointee.wheelPrev = fd }
        wheel!.heads[b] = fd
    }

    func wheelRemove(_ fd: Int32) {
        guard wheel != nil else { return }
        let slot = slots[Int(fd)]
        let prev = slot.pointee.wheelPrev, next = slot.pointee.wheelNext
        if prev >= 0 { slots[Int(prev)].pointee.wheelNext = next } else { wheel!.heads[Int(slot.pointee.wheelBucket)] = next }
        if next >= 0 { slots[Int(next)].pointee.wheelPrev = prev }
        slot.pointee.wheelPrev = -1
        slot.pointee.wheelNext = -1
    }

    /// The timerfd fired: advance the wheel one second per expiration and process due buckets.
    func timerFired() {
        var expirations: UInt64 = 0
        guard Glibc.read(timerFD, &expirations, 8) == 8, wheel != nil else { return }
        for _ in 0..<min(expirations, UInt64(wheel!.heads.count)) {
            wheel!.tick &+= 1
            hot.pointee.tick = wheel!.tick
            let now = wheel!.tick
            let b = wheel!.bucket(now)
            var fd = wheel!.heads[b]
            wheel!.heads[b] = -1
            while fd >= 0 {
                let slot = slots[Int(fd)]
                let next = slot.pointee.wheelNext
                slot.pointee.wheelPrev = -1
                slot.pointee.wheelNext = -1
                let due = wheel!.deadline(lastActive: slot.pointee.lastActive)
                if due &- now == 0 || Int32(bitPattern: due &- now) < 0 {
                    slot.pointee.wheelBucket = -1
                    requestClose(fd, .timeout, abort: false)
                } else {
                    wheelInsert(fd)
                }
                fd = next
            }
        }
        settlePending()
    }

    /// Milliseconds epoll_wait may sleep: until accept back-off or the shutdown deadline ends.
    func waitTimeout() -> CInt {
        var deadline = Int64.max
        if acceptResumeAt != 0 { deadline = acceptResumeAt }
        if case .stopping(let end) = runState { deadline = min(deadline, end) }
        guard deadline != Int64.max else { return -1 }
        let remaining = deadline - cepoll_monotonic_ns()
        return remaining <= 0 ? 0 : CInt(min((remaining + 999_999) / 1_000_000, 60_000))
    }
}
