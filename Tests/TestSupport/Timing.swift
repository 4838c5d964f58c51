// Time for tests: the monotonic clock, and bounded waits for a condition.

import Glibc

/// Seconds on the monotonic clock.
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Milliseconds left until `deadline` (monotonic seconds), for poll(2); never negative.
public func millisecondsLeft(_ deadline: Double) -> CInt {
    CInt(max(0, min(Double(CInt.max), ((deadline - monotonicSeconds()) * 1000).rounded(.up))))
}

/// Polls `condition` every `interval` seconds (10 ms by default) until it holds or `timeout`
/// seconds pass; returns whether it held.
public func eventually(timeout: Double = 5, interval: Double = 0.01, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = monotonicSeconds() + timeout
    while true {
        if try condition() { return true }
        if monotonicSeconds() >= deadline { return false }
        usleep(useconds_t(interval * 1e6))
    }
}
