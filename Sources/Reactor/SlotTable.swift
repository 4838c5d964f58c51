import CEpoll
import Glibc

// The reactor's table of connections and its own fds: one anonymous mapping of plain structs,
// indexed by a dense slot number (not by fd), with a free list that reuses the most recently
// freed slot first.
//
// Why not index by fd: with several reactors in one process, fds interleave between them, and
// an fd-indexed table per reactor would touch a page per few fds of the whole process. A dense
// per-reactor index keeps each table as small as its own connections.

/// What an entry of the reactor's table is.
@usableFromInline
enum SlotKind: UInt8 {
    case free = 0, connection, listener, timer, wakeup, signal, datagram
}

/// One entry of a reactor's table.
///
/// Plain values only, except `output` (present only while output is pending) and `state`. A
/// closing connection's reason is here only as a one-byte code (`closing`) when it is one of the
/// reactor's own; any other is in the reactor's `closeReasons`: only closing connections have
/// one, and 40 bytes in every slot would be a third of an idle connection's memory.
@usableFromInline
struct Slot<State> {
    /// The file descriptor in this slot.
    @usableFromInline var fd: CInt
    /// Bumped each time the slot is taken, so events and ids of an earlier owner miss.
    @usableFromInline var generation: UInt32
    @usableFromInline var kind: SlotKind
    /// The connection's state: phase, origin, read gate and conditions (see Lifecycle.swift).
    /// Written only through its transitions.
    @usableFromInline var life: Lifecycle
    /// What the reactor has done about the connection (dirty list, deadlines, limit place),
    /// kept apart from its state. One byte in what was padding: the slot is no larger.
    @usableFromInline var book: Bookkeeping
    /// The reason this connection is closing with, when it is one of the reactor's own
    /// (`.other`: look in the reactor's `closeReasons`; `.none`: no close requested). In what was
    /// padding, like `book`; only `setCloseReason` and `takeCloseReason` touch it.
    @usableFromInline var closing: CloseReasonCode
    /// The epoll interest currently registered (or `outOfEpollSet`), so it changes only when it must.
    @usableFromInline var registered: UInt32
    /// Index in the reactor's listeners of the one that accepted this connection, or -1.
    @usableFromInline var listener: Int16
    /// Idle-timer bookkeeping (see Timers.swift). `wheelNext` also links the free list. A
    /// listener's slot keeps its accept batch in `lastActive` (Listener.swift, `Slot.acceptBatch`).
    @usableFromInline var lastActive: UInt32
    @usableFromInline var wheelBucket: Int32
    @usableFromInline var wheelPrev: Int32
    @usableFromInline var wheelNext: Int32
    @usableFromInline var output: OutputBuffer?
    /// The first of this connection's timers (0: none); see Timers.swift.
    @usableFromInline var timerHead: UInt64 = 0
    /// When pending output last made progress (monotonic ns), for the send timeout. A listener's
    /// slot keeps the turn of its last full accept batch here (`Slot.lastFullAcceptTurn`).
    @usableFromInline var lastProgress: Int64 = 0
    @usableFromInline var peer: SocketAddress
    @usableFromInline var state: State

    /// Inlinable: called from the specialised `install`, a generic init out of line looked up
    /// `Slot<State>`'s metadata at every accept (about 390 user instructions, callgrind 2026-12-07).
    @inlinable
    init(fd: CInt, generation: UInt32, life: Lifecycle, registered: UInt32, lastActive: UInt32,
         peer: SocketAddress, state: State) {
        self.fd = fd
        self.generation = generation
        self.kind = .connection
        self.life = life
        self.book = []
        self.closing = .none
        self.registered = registered
        self.listener = -1
        self.lastActive = lastActive
        self.wheelBucket = -1
        self.wheelPrev = -1
        self.wheelNext = -1
        self.output = nil
        self.peer = peer
        self.state = state
    }
}

/// How much of the table is in use.
@usableFromInline
struct SlotUse {
    /// Slots below this index have been used at least once: the bound of a walk over all.
    @usableFromInline var used: Int32 = 0
    /// The most recently freed slot, head of the free list (linked through `wheelNext`), or -1.
    @usableFromInline var free: Int32 = -1
}

/// The table of slots: one anonymous mapping with room for the fd hard limit.
///
/// It never moves, so a pointer to a slot stays valid while callbacks run, and its pages are
/// touched only as slots are used, so resident memory follows the number of open connections.
@usableFromInline
struct SlotTable<State> {
    @usableFromInline let base: UnsafeMutablePointer<Slot<State>>
    @usableFromInline let capacity: Int
    /// Behind a pointer, not a `var`, so that reading it costs no exclusivity check.
    @usableFromInline let use: UnsafeMutablePointer<SlotUse>
    let byteCount: Int

    init(capacity: Int) {
        let bytes = max(capacity, 1) * MemoryLayout<Slot<State>>.stride
        guard let raw = Syscalls.mapAnonymous(bytes) else {
            fatalError("cannot map a connection table of \(bytes) bytes")
        }
        // A fresh anonymous mapping is zero-filled: every slot reads as kind .free, generation 0.
        base = raw.bindMemory(to: Slot<State>.self, capacity: capacity)
        self.capacity = capacity
        byteCount = bytes
        use = .allocate(capacity: 1)
        use.initialize(to: SlotUse())
    }

    @usableFromInline
    subscript(i: Int) -> UnsafeMutablePointer<Slot<State>> {
        @inline(__always) get { base + i }
    }

    /// Slots below this index have been used at least once.
    @inlinable var used: Int32 { use.pointee.used }

    /// Takes a free slot for `fd`: the most recently freed one, else the next never used; nil
    /// when the table is full.
    @inlinable
    func allocate(fd: CInt) -> Int32? {
        let free = use.pointee.free
        let i: Int32
        if free >= 0 {
            i = free
            use.pointee.free = self[Int(free)].pointee.wheelNext
        } else {
            i = use.pointee.used
            guard Int(i) < capacity else { return nil }
            use.pointee.used = i + 1
        }
        self[Int(i)].pointee.fd = fd
        return i
    }

    /// Gives a slot back. Its generation stays, so stale events and ids keep missing.
    @inlinable
    func release(_ i: Int32) {
        let slot = self[Int(i)]
        slot.pointee.kind = .free
        slot.pointee.wheelNext = use.pointee.free
        use.pointee.free = i
    }

    /// Whether `id` names a live connection in this table.
    @inlinable
    func isLive(_ id: ConnectionID) -> Bool {
        guard id.index >= 0, id.index < use.pointee.used else { return false }
        let slot = self[Int(id.index)]
        return slot.pointee.kind == .connection && slot.pointee.generation == id.generation
    }

    func unmap() {
        Syscalls.unmap(UnsafeMutableRawPointer(base), byteCount)
        use.deallocate()
    }
}
