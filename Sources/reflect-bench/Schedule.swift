/// When each message of an open-loop run is meant to go out (`--rate`, and the cycles of
/// `--connect-rate`): at a fixed rate, whatever the server does.
///
/// A closed loop (send the next message when the echo returns) hides a server stall: each
/// connection waits through it and records one slow sample, while a real client sending at a
/// fixed rate would have sent, and waited for, every message of the stall (coordinated omission).
/// So an open-loop run times each message from when it was *meant* to be sent, as wrk2 does, and
/// counts the sends that could not go out on time.
///
/// Message `m` of a generator thread is due at `start + m × gap`, and goes to connection
/// `m % connections`: each connection sends at the thread's rate divided by its connections,
/// and the connections take turns, evenly spread.
struct Schedule {
    /// When message 0 is due (monotonic nanoseconds); set when the load begins.
    var start: UInt64 = 0
    /// Nanoseconds from one message of this thread to the next (10^9 / its rate).
    let gapNs: Double

    init(perSecond rate: Double) {
        gapNs = 1e9 / rate
    }

    /// How many messages are due at `t`: those numbered below the result.
    @inline(__always)
    func due(at t: UInt64) -> Int {
        t < start ? 0 : Int(Double(t - start) / gapNs) + 1
    }

    /// When message `m` is due.
    @inline(__always)
    func intended(_ m: Int) -> UInt64 {
        start &+ UInt64(Double(m) * gapNs)
    }

    /// When the `k`th message of connection `c` (of `n`) is due.
    @inline(__always)
    func intended(message k: Int, connection c: Int, of n: Int) -> UInt64 {
        intended(k * n + c)
    }

    /// How many of connection `c`'s messages are due when `total` of the thread's are.
    @inline(__always)
    static func share(of total: Int, connection c: Int, of n: Int) -> Int {
        total > c ? (total - c - 1) / n + 1 : 0
    }
}

/// How late after its intended time a message may go out and still count as sent on time.
/// Why 1 ms: waking the generator thread (a timerfd, then the scheduler) and the loop's other
/// work delay a send by tens of microseconds on a healthy run, more on a busy machine; a send
/// held up by a full pipeline (the server has not answered) is late by a round trip or more.
/// The delay is in the latency either way, since latency counts from the intended time.
let lateToleranceNs: UInt64 = 1_000_000

/// The shortest sleep of the pacer. Why 20 µs: a timer wake-up costs a few microseconds
/// (timerfd, epoll_wait, the timer heap), so at rates above 50,000 messages per second per
/// thread the messages that fall due within 20 µs go out together, each still stamped with its
/// own intended time.
let pacingQuantumNs: UInt64 = 20_000
