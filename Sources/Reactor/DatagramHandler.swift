import CEpoll
import Glibc

/// The protocol logic of a datagram socket: the reactor hands it every batch of datagrams that
/// one `recvmmsg` returned, and sends the replies it asked for with one `sendmmsg` after it returns.
///
/// The reactor calls it on its own thread only, never re-entrantly. Instead of sending from
/// inside the callback, a handler gives each datagram a verdict on the batch:
/// ``DatagramBatch/echo(_:)``, ``DatagramBatch/reply(_:with:)``, ``DatagramBatch/drop(_:_:)``
/// (counted), or nothing (ignored). A class, so that it may keep state (a rate limiter) without
/// copying it per batch.
///
/// ```swift
/// final class Echo: DatagramHandler {
///     func onDatagrams(_ batch: DatagramBatch) {
///         for i in 0..<batch.count { batch.echo(i) }
///     }
/// }
/// try reactor.bindDatagram(on: SocketAddress(host: "::", port: 8887), handler: Echo())
/// ```
public protocol DatagramHandler: AnyObject {
    /// A batch of 1 to ``DatagramBatch/capacity`` datagrams arrived on one socket. Payloads and
    /// sources point into the reactor's receive area and are valid only during this call.
    func onDatagrams(_ batch: DatagramBatch)
}

/// Why a datagram was not answered, for the statistics.
public enum DatagramDrop: Int, Sendable, CaseIterable, CustomStringConvertible {
    /// The source port is one the handler refuses to answer (a service port: echo, chargen…).
    case refusedPort
    /// The source address is one the handler refuses to answer (broadcast, multicast, 0/8…).
    case refusedAddress
    /// The source sent more than its rate allows.
    case rateLimited
    /// The socket's send buffer was full (EAGAIN or ENOBUFS): the reply was dropped, as UDP may,
    /// rather than blocking the loop or queueing without bound.
    case sendBufferFull
    /// The kernel refused the reply (EPERM from a firewall, ENETUNREACH, EMSGSIZE…).
    case sendFailed
    /// The datagram was larger than the receive area's slot and arrived cut (never with the
    /// default slot of 65,535 bytes).
    case truncated
    /// The kernel dropped it before the reactor saw it: the socket's receive queue was full
    /// (SO_RXQ_OVFL; counted when the next datagram arrives).
    case receiveQueueFull

    /// A short lowercase name for logs and metrics labels (`refused_port`, `rate_limited`…).
    public var description: String {
        switch self {
        case .refusedPort: return "refused_port"
        case .refusedAddress: return "refused_address"
        case .rateLimited: return "rate_limited"
        case .sendBufferFull: return "send_buffer_full"
        case .sendFailed: return "send_failed"
        case .truncated: return "truncated"
        case .receiveQueueFull: return "receive_queue_full"
        }
    }
}

/// Dropped datagrams, one counter per ``DatagramDrop``: a fixed array, so counting a drop
/// hashes nothing and allocates nothing.
public struct DatagramDropCounts: Sendable, Equatable {
    @usableFromInline var counts: (Int, Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0, 0)

    /// Zero drops.
    public init() {}

    /// The drops for one reason.
    public subscript(reason: DatagramDrop) -> Int {
        get {
            switch reason {
            case .refusedPort: return counts.0
            case .refusedAddress: return counts.1
            case .rateLimited: return counts.2
            case .sendBufferFull: return counts.3
            case .sendFailed: return counts.4
            case .truncated: return counts.5
            case .receiveQueueFull: return counts.6
            }
        }
        set {
            switch reason {
            case .refusedPort: counts.0 = newValue
            case .refusedAddress: counts.1 = newValue
            case .rateLimited: counts.2 = newValue
            case .sendBufferFull: counts.3 = newValue
            case .sendFailed: counts.4 = newValue
            case .truncated: counts.5 = newValue
            case .receiveQueueFull: counts.6 = newValue
            }
        }
    }

    /// Every drop, whatever the reason.
    public var total: Int { DatagramDrop.allCases.reduce(0) { $0 + self[$1] } }

    public static func == (a: DatagramDropCounts, b: DatagramDropCounts) -> Bool {
        DatagramDrop.allCases.allSatisfy { a[$0] == b[$0] }
    }

    /// The element-wise sum.
    public static func + (a: DatagramDropCounts, b: DatagramDropCounts) -> DatagramDropCounts {
        var sum = a
        for reason in DatagramDrop.allCases { sum[reason] += b[reason] }
        return sum
    }
}

/// Where a datagram came from: a view of the source address the kernel wrote into the receive
/// area. Reading it formats nothing and allocates nothing.
public struct DatagramSource {
    @usableFromInline let storage: UnsafePointer<sockaddr_storage>

    @inlinable init(_ storage: UnsafePointer<sockaddr_storage>) { self.storage = storage }

    /// True for an IPv6 source (including an IPv4 client of a dual-stack socket, `::ffff:a.b.c.d`).
    @inlinable public var isIPv6: Bool { CInt(storage.pointee.ss_family) == AF_INET6 }

    /// The source port.
    @inlinable public var port: Int {
        let raw = UnsafeRawPointer(storage)
        // sin_port and sin6_port both sit right after the family, at offset 2.
        return Int(UInt16(bigEndian: raw.load(fromByteOffset: 2, as: UInt16.self)))
    }

    /// The IPv4 address in host byte order: of an IPv4 source, or of an IPv4-mapped IPv6 source
    /// (`::ffff:a.b.c.d`) on a dual-stack socket; nil for other IPv6 sources.
    @inlinable public var ipv4: UInt32? {
        let raw = UnsafeRawPointer(storage)
        if !isIPv6 { return UInt32(bigEndian: raw.load(fromByteOffset: 4, as: UInt32.self)) }
        // sin6_addr is at offset 8: mapped means 10 zero bytes, then 0xffff.
        let high = raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
        let mid = UInt32(bigEndian: raw.loadUnaligned(fromByteOffset: 16, as: UInt32.self))
        guard high == 0, mid == 0x0000_FFFF else { return nil }
        return UInt32(bigEndian: raw.loadUnaligned(fromByteOffset: 20, as: UInt32.self))
    }

    /// The 16 bytes of an IPv6 source address, as two host-order halves (the first is the /64
    /// prefix); nil for an IPv4 source.
    @inlinable public var ipv6: (prefix: UInt64, interface: UInt64)? {
        guard isIPv6 else { return nil }
        let raw = UnsafeRawPointer(storage)
        return (UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self)),
                UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self)))
    }

    /// The source as a ``SocketAddress``, for logs (a copy; formatting it allocates).
    public var address: SocketAddress? { SocketAddress(storage: storage.pointee) }
}

/// One batch of received datagrams and the handler's verdicts on them. Valid only during
/// ``DatagramHandler/onDatagrams(_:)``.
public struct DatagramBatch {
    @usableFromInline unowned(unsafe) let area: DatagramArea
    @usableFromInline let counters: UnsafeMutablePointer<ReactorStatistics>
    /// How many datagrams the batch holds.
    public let count: Int

    @inlinable init(area: DatagramArea, count: Int, counters: UnsafeMutablePointer<ReactorStatistics>) {
        self.area = area
        self.count = count
        self.counters = counters
    }

    /// The most datagrams one batch can hold: 32 (the reactor's `datagramsPerBatch` budget).
    public static var capacity: Int { Budget.datagramsPerBatch }

    /// The payload of datagram `i` (0 to 65,535 bytes), in the reactor's receive area.
    @inlinable public func payload(_ i: Int) -> UnsafeRawBufferPointer {
        precondition(i >= 0 && i < count, "datagram index out of the batch")
        return UnsafeRawBufferPointer(start: area.data + i * area.slotSize, count: Int(area.receive[i].msg_len))
    }

    /// Where datagram `i` came from.
    @inlinable public func source(_ i: Int) -> DatagramSource {
        precondition(i >= 0 && i < count, "datagram index out of the batch")
        return DatagramSource(area.sources + i)
    }

    /// Sends datagram `i`'s own payload back to its source, unchanged: no copy, the reply
    /// points into the receive area.
    @inlinable public func echo(_ i: Int) {
        reply(i, with: payload(i))
    }

    /// Sends `bytes` to datagram `i`'s source after the callback returns. `bytes` must stay
    /// valid until then: a slice of a payload, or memory the handler owns. One reply per
    /// datagram; a second replaces the first.
    @inlinable public func reply(_ i: Int, with bytes: UnsafeRawBufferPointer) {
        precondition(i >= 0 && i < count, "datagram index out of the batch")
        area.addReply(i, bytes)
    }

    /// Does not answer datagram `i`, and counts it under `reason`.
    @inlinable public func drop(_ i: Int, _ reason: DatagramDrop) {
        precondition(i >= 0 && i < count, "datagram index out of the batch")
        counters.pointee.datagramDrops[reason] &+= 1
    }
}
