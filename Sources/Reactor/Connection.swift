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

/// What happened to bytes given to ``Connection/write(_:)-(UnsafeRawBufferPointer)`` or ``Reactor/write(to:_:)-(_,UnsafeRawBufferPointer)``.
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
/// and use ``Reactor/write(to:_:)-(_,UnsafeRawBufferPointer)`` later.
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
    public var peer: SocketAddress {
        reactor._withUnsafeGuaranteedRef { $0.slots[Int(id.index)].pointee.peer }
    }

    /// Sends `bytes`, or queues what the kernel did not take. The bytes may be reused as soon
    /// as this returns. Writing to a closing connection drops the bytes.
    @inlinable @discardableResult
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

    /// The reactor this connection belongs to, for calls such as ``Reactor/write(to:_:)-(_,UnsafeRawBufferPointer)`` to
    /// other connections.
    public var loop: Reactor<Handler> { reactor.takeUnretainedValue() }
}

/// What an fd in the reactor's table is.
@usableFromInline
enum SlotKind: UInt8 {
    case free = 0, connection, listener, timer, wakeup, signal
}

@usableFromInline
struct SlotFlags: OptionSet, Sendable {
    // The constants are computed properties, not `static let`s: a `static let` is a lazily
    // initialised global, and every use of one on the hot path would call its accessor.
    @usableFromInline let rawValue: UInt16
    @inlinable init(rawValue: UInt16) { self.rawValue = rawValue }
    /// The handler returned `.pauseReading`.
    @inlinable static var pausedByHandler: SlotFlags { SlotFlags(rawValue: 1 << 0) }
    /// Pending output passed the high watermark.
    @inlinable static var pausedByBackpressure: SlotFlags { SlotFlags(rawValue: 1 << 1) }
    /// read() returned 0.
    @inlinable static var readEOF: SlotFlags { SlotFlags(rawValue: 1 << 2) }
    /// A close was requested: read nothing more, flush, then close.
    @inlinable static var closing: SlotFlags { SlotFlags(rawValue: 1 << 3) }
    /// Close without flushing (the socket is broken).
    @inlinable static var abort: SlotFlags { SlotFlags(rawValue: 1 << 4) }
    /// An outbound connect is in progress (waiting for EPOLLOUT).
    @inlinable static var connecting: SlotFlags { SlotFlags(rawValue: 1 << 5) }
    /// Waiting in `pendingSettle`.
    @inlinable static var queued: SlotFlags { SlotFlags(rawValue: 1 << 6) }
    /// shutdown(SHUT_WR) once the output buffer drains.
    @inlinable static var shutdownPending: SlotFlags { SlotFlags(rawValue: 1 << 7) }
    /// Output flushed and write side shut down; discarding input until the peer closes.
    @inlinable static var lingering: SlotFlags { SlotFlags(rawValue: 1 << 8) }
    /// Holds a place of the connection limit, given back when it closes. Connections from a
    /// listener exempt from the limit, from connect(to:) or adopt(fd:) hold none.
    @inlinable static var holdsLimitPlace: SlotFlags { SlotFlags(rawValue: 1 << 9) }
    /// A close deadline timer is armed for this connection.
    @inlinable static var deadlineArmed: SlotFlags { SlotFlags(rawValue: 1 << 10) }
    /// onClose already ran (at the start of the linger).
    @inlinable static var handlerClosed: SlotFlags { SlotFlags(rawValue: 1 << 11) }
    /// Handed over with adopt(fd:): maybe not a socket, maybe shared with other fds.
    @inlinable static var adopted: SlotFlags { SlotFlags(rawValue: 1 << 12) }
    /// Removed from the epoll set after a hang-up while paused; added back when reading resumes.
    @inlinable static var detached: SlotFlags { SlotFlags(rawValue: 1 << 13) }
    /// A send-deadline timer is armed (see ``ReactorConfiguration/sendTimeout``).
    @inlinable static var sendDeadlineArmed: SlotFlags { SlotFlags(rawValue: 1 << 14) }
}

/// One entry of a reactor's connection table.
///
/// Plain values only, except `output` (present only while output is pending) and `state`.
/// The table is one anonymous mapping, so pages of fds never opened cost no memory.
@usableFromInline
struct Slot<State> {
    /// The file descriptor in this slot.
    @usableFromInline var fd: CInt
    @usableFromInline var generation: UInt32
    @usableFromInline var kind: SlotKind
    @usableFromInline var flags: SlotFlags
    /// The epoll mask currently registered, so it is changed only when it must be.
    @usableFromInline var registered: UInt32
    /// Index in the reactor's listeners of the one that accepted this connection, or -1.
    @usableFromInline var listener: Int16
    /// Idle-timer bookkeeping (see Timers.swift).
    @usableFromInline var lastActive: UInt32
    @usableFromInline var wheelBucket: Int32
    @usableFromInline var wheelPrev: Int32
    @usableFromInline var wheelNext: Int32
    @usableFromInline var output: OutputBuffer?
    /// The first of this connection's timers (0: none); see Timers.swift.
    @usableFromInline var timerHead: UInt64 = 0
    /// When pending output last made progress (monotonic ns), for the send timeout.
    @usableFromInline var lastProgress: Int64 = 0
    @usableFromInline var closeReason: CloseReason?
    @usableFromInline var peer: SocketAddress
    @usableFromInline var state: State

    @usableFromInline
    init(fd: CInt, generation: UInt32, kind: SlotKind, flags: SlotFlags, registered: UInt32, listener: Int16, lastActive: UInt32,
         wheelBucket: Int32, wheelPrev: Int32, wheelNext: Int32, output: OutputBuffer?,
         closeReason: CloseReason?, peer: SocketAddress, state: State) {
        self.fd = fd
        self.generation = generation
        self.kind = kind
        self.flags = flags
        self.registered = registered
        self.listener = listener
        self.lastActive = lastActive
        self.wheelBucket = wheelBucket
        self.wheelPrev = wheelPrev
        self.wheelNext = wheelNext
        self.output = output
        self.closeReason = closeReason
        self.peer = peer
        self.state = state
    }
}

/// The table of slots: one anonymous mapping with room for the fd hard limit.
///
/// It never moves, so a pointer to a slot stays valid while callbacks run, and its pages are
/// touched only as slots are used, so resident memory follows the number of open connections.
@usableFromInline
struct SlotTable<State> {
    @usableFromInline let base: UnsafeMutablePointer<Slot<State>>
    @usableFromInline let capacity: Int
    let byteCount: Int

    init(capacity: Int) {
        let bytes = max(capacity, 1) * MemoryLayout<Slot<State>>.stride
        guard let raw = cepoll_mmap_anonymous(bytes) else {
            fatalError("cannot map a connection table of \(bytes) bytes")
        }
        // A fresh anonymous mapping is zero-filled: every slot reads as kind .free, generation 0.
        base = raw.bindMemory(to: Slot<State>.self, capacity: capacity)
        self.capacity = capacity
        byteCount = bytes
    }

    @usableFromInline
    subscript(i: Int) -> UnsafeMutablePointer<Slot<State>> {
        @inline(__always) get { base + i }
    }

    func unmap() { munmap(UnsafeMutableRawPointer(base), byteCount) }
}
