/// Per-wakeup limits of the loop, each with the reason for its value.
@usableFromInline
enum Budget {
    /// Reads per readiness event. One read normally drains the socket (the loop reads again only
    /// when a read filled the whole buffer). Why 4: a bulk sender gets 256 KiB per turn, then
    /// the others get theirs (prevents one connection starving the loop; SwiftNIO's default).
    @usableFromInline static let readsPerEvent = 4
    /// The most connections accepted per listener wakeup (a listener starts at one per wakeup and
    /// doubles while full batches keep coming; see `Reactor.acceptReady`). Why 64: a connect storm
    /// is drained in few wakeups while existing connections still get served between them.
    @usableFromInline static let acceptsPerWakeup = 64
    /// Loop turns in a row that must each accept a whole batch before a listener's batch doubles.
    /// Why 3: connections that arrive often but one at a time also find the listener ready two
    /// turns running, and a doubled batch then ends in an accept4 that only says EAGAIN; three
    /// turns running is rare for them, and a real backlog pays just two more turns.
    @usableFromInline static let fullAcceptTurnsBeforeGrowing = 3
    /// Events per epoll_wait at first; the array doubles when a wait fills it, up to `maxEvents`.
    @usableFromInline static let initialEvents = 64
    /// Why 4096: beyond that one wait already returns more work than a millisecond of processing.
    @usableFromInline static let maxEvents = 4096
    /// Pause after EMFILE/ENFILE/ENOBUFS/ENOMEM on accept. Why 100 ms: long enough not to spin
    /// (10 wakeups a second), short enough that a freed fd is used almost at once.
    @usableFromInline static let acceptBackoffNs: Int64 = 100_000_000
    /// How long a gracefully closed connection waits for its peer to close after our FIN.
    /// Closing with unread input makes Linux send RST (tcp_close in net/ipv4/tcp.c), which
    /// destroys replies still in the send queue; lingering until the peer's EOF avoids that.
    /// Why 2 s: a peer that reads our EOF closes within a round trip; one that does not is cut.
    @usableFromInline static let lingerNs: Int64 = 2_000_000_000
    /// Closures other threads may have waiting for a reactor (``ReactorHandle/execute(_:)``).
    /// Why 4096: far more than a loop turn runs between wake-ups, so a producer only hits it
    /// when the reactor is stuck or the producer is far faster than it; the queue's array then
    /// holds at most 64 KiB of closure references.
    static let queuedClosures = 4096
    /// Buffers handed to one sendmsg/writev by a gathered write; the rest are queued. Why 1024:
    /// IOV_MAX on Linux, beyond which the call fails with EINVAL.
    @usableFromInline static let buffersPerGatheredWrite = 1024
    /// How often a reactor publishes its statistics for other threads.
    @usableFromInline static let publishIntervalNs: Int64 = 1_000_000_000
    /// Datagrams per recvmmsg / sendmmsg. Why 32: one system call then carries 32 datagrams,
    /// which amortises its entry cost to a few percent of the kernel's per-datagram work (the
    /// issue measured batching at under 5 % of a 64-byte echo); a larger batch only makes the
    /// receive area bigger and the first datagram of a batch wait longer for its reply
    /// (libuv takes 20, quinn 32).
    @usableFromInline static let datagramsPerBatch = 32
    /// recvmmsg batches per readiness event of one datagram socket. Why 4: like
    /// `readsPerEvent`, a flooded socket gets 128 datagrams per turn, then TCP connections and
    /// other sockets get theirs; level triggering brings it back at once.
    @usableFromInline static let datagramBatchesPerEvent = 4
    /// The smallest splice that keeps a connection echoing inside the kernel (it starts after a
    /// read that filled the whole read buffer). Why half the read buffer (32 KiB by default): a
    /// peer that streams faster than one turn of the loop fills most of it each time (57–65 KB
    /// per read on a loopback bulk echo, benchmarks/results/2026-12-07-bulk-harness.md), where a
    /// message-sized exchange brings a few KiB at most; below it the connection reads again,
    /// and its handler sees its bytes.
    @inlinable static func kernelEchoMinimum(readBufferSize: Int) -> Int { max(readBufferSize / 2, 1) }
    /// The largest datagram the receive area holds whole. Why 65,535: the largest UDP payload
    /// an IPv4 or IPv6 (non-jumbogram) datagram can carry fits, so nothing is ever cut. The
    /// area is `datagramsPerBatch` × this, 2 MiB of address space, mapped lazily: pages are
    /// touched only as large datagrams fill them (a batch of 64-byte datagrams touches 32 pages).
    @usableFromInline static let maxDatagramSize = 65_535
}
