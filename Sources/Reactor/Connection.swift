import CEpoll
import Glibc

/// Names one connection for as long as it lives: its slot in the reactor's table and a
/// generation number.
///
/// Slots are reused at once, so the generation tells a live connection from a closed one that
/// had the same slot. An id of a closed connection stays safe to use: writes to it report
/// ``WriteOutcome/closed``.
public struct ConnectionID: Hashable, Sendable, CustomStringConvertible {
    @usableFromInline let index: Int32
    @usableFromInline let generation: UInt32
    /// The fd, for logs (it is what lsof and ss show) and tests. Not part of the identity, and
    /// -1 in ids decoded from epoll events.
    let fd: Int32

    @usableFromInline init(index: Int32, generation: UInt32, fd: Int32 = -1) {
        self.index = index
        self.generation = generation
        self.fd = fd
    }

    /// Packs the id into the 64-bit user data of an epoll event.
    @usableFromInline var epollData: UInt64 { UInt64(generation) << 32 | UInt64(UInt32(bitPattern: index)) }

    @usableFromInline init(epollData: UInt64) {
        index = Int32(bitPattern: UInt32(truncatingIfNeeded: epollData))
        generation = UInt32(truncatingIfNeeded: epollData >> 32)
        fd = -1
    }

    public static func == (a: ConnectionID, b: ConnectionID) -> Bool {
        a.index == b.index && a.generation == b.generation
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(index)
        hasher.combine(generation)
    }

    public var description: String { fd >= 0 ? "#\(index).\(generation) fd \(fd)" : "#\(index).\(generation)" }
}

/// What happened to bytes given to ``Connection/write(_:)-(UnsafeRawBufferPointer)`` or ``ReactorContext/write(to:_:)-(_,UnsafeRawBufferPointer)``.
public enum WriteOutcome: Sendable, Equatable {
    /// Every byte went to the kernel.
    case sent
    /// Some bytes wait in the connection's output buffer; `pending` is its size now.
    case queued(pending: Int)
    /// The connection is closed or closing; the bytes were dropped.
    case closed
}

/// The connection a callback is about, valid only during that callback.
///
/// It is `~Copyable` and passed `borrowing`, so it cannot be stored: keep its ``id`` instead,
/// and use ``ReactorContext/write(to:_:)-(_,UnsafeRawBufferPointer)`` later.
public struct Connection<Handler: ConnectionHandler>: ~Copyable {
    // Unmanaged, not a strong or unowned reference: the reactor outlives every callback, and a
    // guaranteed reference costs no retain/release pair per message.
    @usableFromInline let reactor: Unmanaged<Reactor<Handler>>
    /// The id of this connection, for use after the callback returns.
    public let id: ConnectionID

    @inlinable init(reactor: Reactor<Handler>, id: ConnectionID) {
        self.reactor = Unmanaged.passUnretained(reactor)
        self.id = id
    }

    /// The peer's address (for a Unix-domain connection, usually unnamed).
    @inlinable
    public var peer: SocketAddress {
        reactor._withUnsafeGuaranteedRef { $0.slots[Int(id.index)].pointee.peer }
    }

    /// Sends `bytes`, or queues what the kernel did not take. The bytes may be reused as soon
    /// as this returns. Writing to a closing connection drops the bytes.
    @inlinable @inline(__always) @discardableResult
    public func write(_ bytes: UnsafeRawBufferPointer) -> WriteOutcome {
        reactor._withUnsafeGuaranteedRef { $0.write(slot: id.index, bytes) }
    }

    /// The listening address this connection was accepted on (nil for ``Reactor/connect(to:from:state:)``
    /// and ``Reactor/adopt(fd:state:)``), for servers that speak different protocols on different ports.
    public var acceptedOn: SocketAddress? {
        reactor._withUnsafeGuaranteedRef { $0.listenerAddress(of: id.index) }
    }

    /// Sends the UTF-8 bytes of `text` (see ``write(_:)-(UnsafeRawBufferPointer)``).
    @discardableResult
    public func write(_ text: String) -> WriteOutcome {
        var text = text
        return text.withUTF8 { write(UnsafeRawBufferPointer($0)) }
    }

    /// Bytes written by the handler but not yet taken by the kernel.
    public var pendingOutputBytes: Int {
        reactor._withUnsafeGuaranteedRef { $0.slots[Int(id.index)].pointee.output?.count ?? 0 }
    }

    /// Runs the handler's ``ConnectionHandler/onTimer(_:connection:state:)`` for this connection
    /// after `delay`, and then every `interval` if given. The timer is bound to the connection:
    /// it is cancelled when the connection closes (before ``ConnectionHandler/onClose(_:state:reason:)``),
    /// so it never fires for a connection that is gone. Costs no allocation beyond the reactor's
    /// timer queue entry. Cancel it earlier with ``cancel(_:)``.
    @discardableResult
    public func schedule(after delay: Duration, repeating interval: Duration? = nil) -> TimerID {
        reactor._withUnsafeGuaranteedRef {
            TimerID(value: $0.addConnectionTimer(id.index, after: delay.nanoseconds, interval: interval?.nanoseconds, .handler))
        }
    }

    /// Cancels a timer of this connection (see ``schedule(after:repeating:)``); one that already
    /// fired or was cancelled is ignored.
    public func cancel(_ timer: TimerID) {
        reactor._withUnsafeGuaranteedRef { $0.cancel(timer) }
    }

    /// Counts this connection's close under `reason` if the peer ends it (its EOF, or a reset)
    /// rather than the handler, a timer or a stop: for a connection that turned out to be a
    /// balancer's health check (`check`), whose reset would otherwise count as a real `reset`.
    /// Costs one dictionary entry until the connection is gone, and nothing per message.
    /// Pass nil to count it as usual again.
    public func countPeerClose(as reason: CloseReason?) {
        reactor._withUnsafeGuaranteedRef { $0.peerCloseReasons[id.index] = reason }
    }

    /// What the callback may do beyond this connection: write to, close or resume other
    /// connections by id, set timers, stop the reactor (see ``ReactorContext``).
    @inlinable
    public var context: ReactorContext<Handler> { ReactorContext(reactor) }
}
