import SystemPackage

/// Counters of one reactor. Plain integers, written only by the reactor's own thread.
///
/// Read them on that thread (``Reactor/statistics``), or through a snapshot published by the
/// reactor (``ReactorHandle/latestStatistics``): no lock or atomic is taken per message.
public struct ReactorStatistics: Sendable, Equatable {
    /// Connections accepted (including those closed at once by the connection limit).
    public var accepted = 0
    /// Connections open now.
    public var open = 0
    /// Connections closed at once because the connection limit was reached.
    public var rejectedByLimit = 0
    /// Closed connections, by ``CloseReason/name``. The reactor's own names (`eof`, `reset`,
    /// `shutdown`, `timeout`, `limit`, `error`) appear once their count is not zero; a handler's
    /// names once counted. Built at each read from fixed counters (closing a connection hashes
    /// nothing): read it once per report, not per name.
    public var closed: [String: Int] {
        get { closes.dictionary }
        set { closes = CloseCounts(newValue) }
    }
    /// The storage of ``closed``.
    @usableFromInline var closes = CloseCounts()
    /// Bytes read from connections.
    public var bytesIn = 0
    /// Bytes written to connections (taken by the kernel).
    public var bytesOut = 0
    /// Of ``bytesIn``, the bytes echoed inside the kernel (splice(2), never copied to user
    /// space: ``ConnectionHandler/echoesUnchanged(_:state:)``). Each is in ``bytesOut`` too once
    /// sent.
    public var bytesEchoedInKernel = 0
    /// Failed accept4 calls, by error name (`EMFILE`, `ENFILE`, …).
    public var acceptErrors: [String: Int] = [:]
    /// Times accepting was paused for back-off after EMFILE, ENFILE, ENOBUFS or ENOMEM.
    public var acceptPauses = 0
    /// Iterations of the event loop (epoll_wait calls).
    public var loopIterations = 0
    /// Events dropped because their connection had been closed earlier in the same batch.
    public var staleEvents = 0
    /// Datagrams received on datagram sockets.
    public var datagramsIn = 0
    /// Payload bytes of the datagrams received.
    public var datagramBytesIn = 0
    /// Datagrams sent (taken by the kernel).
    public var datagramsOut = 0
    /// Payload bytes of the datagrams sent.
    public var datagramBytesOut = 0
    /// Datagrams dropped, by ``DatagramDrop``.
    public var datagramDrops = DatagramDropCounts()
    /// Errors a datagram socket reported instead of a datagram (a queued ICMP error, ENOMEM).
    public var datagramReceiveErrors = 0
    /// recvmmsg calls on datagram sockets (datagramsIn / this is the mean batch).
    public var datagramBatches = 0

    /// Creates zeroed counters.
    public init() {}

    /// The element-wise sum, for a process-wide view of several reactors.
    public static func + (a: ReactorStatistics, b: ReactorStatistics) -> ReactorStatistics {
        var sum = a
        sum.accepted += b.accepted
        sum.open += b.open
        sum.rejectedByLimit += b.rejectedByLimit
        sum.closes = sum.closes + b.closes
        sum.bytesIn += b.bytesIn
        sum.bytesOut += b.bytesOut
        sum.bytesEchoedInKernel += b.bytesEchoedInKernel
        sum.acceptErrors.merge(b.acceptErrors, uniquingKeysWith: +)
        sum.acceptPauses += b.acceptPauses
        sum.loopIterations += b.loopIterations
        sum.staleEvents += b.staleEvents
        sum.datagramsIn += b.datagramsIn
        sum.datagramBytesIn += b.datagramBytesIn
        sum.datagramsOut += b.datagramsOut
        sum.datagramBytesOut += b.datagramBytesOut
        sum.datagramDrops = sum.datagramDrops + b.datagramDrops
        sum.datagramBatches += b.datagramBatches
        sum.datagramReceiveErrors += b.datagramReceiveErrors
        return sum
    }
}
