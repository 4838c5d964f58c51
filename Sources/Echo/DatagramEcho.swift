import Glibc
import Reactor

/// The UDP half of RFC 862: every datagram goes back to its source unchanged (0 to 65,507
/// bytes), unless the source is refused (``DatagramSourcePolicy``) or over its rate
/// (``SourceRateLimiter``); those are dropped and counted by reason. There is no exit line over
/// UDP: a datagram `exit` is echoed like any other.
///
/// A reply is the received datagram itself, sent from the receive area: it is never larger
/// than its request, so the echo cannot amplify. One instance per reactor (the rate limiter's
/// table is the reactor's own).
public final class DatagramEcho: DatagramHandler {
    /// Which sources are never answered.
    public let policy: DatagramSourcePolicy
    /// The per-source rate limit, or nil for none.
    public let limiter: SourceRateLimiter?

    /// An echo refusing what `policy` refuses, limited by `limiter`.
    public init(policy: DatagramSourcePolicy, limiter: SourceRateLimiter?) {
        self.policy = policy
        self.limiter = limiter
    }

    public func onDatagrams(_ batch: DatagramBatch) {
        // One clock read per batch: a batch arrives within one recvmmsg.
        let now = limiter == nil ? 0 : Self.monotonicNanoseconds()
        for i in 0..<batch.count {
            let source = batch.source(i)
            if let refusal = policy.refusal(source) {
                batch.drop(i, refusal)
            } else if let limiter, !limiter.admit(source, now: now) {
                batch.drop(i, .rateLimited)
            } else {
                batch.echo(i)
            }
        }
    }

    static func monotonicNanoseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }
}
