import CEpoll
import Glibc
import Logging
import SystemPackage

/// A single-threaded, level-triggered epoll event loop that accepts connections and drives a
/// ``ConnectionHandler``.
///
/// One loop iteration:
/// 1. `epoll_wait` fills a preallocated event array.
/// 2. Each event names a slot of the connection table and the generation of the connection it
///    was registered for; an event for a connection closed earlier in the same batch is dropped.
/// 3. Dispatch in a fixed order: error → writable (flush pending output) → readable (read into
///    the shared buffer, call the handler) → end of input.
/// 4. The handler's ``Action`` is applied. Every change to a connection's state puts it on one
///    dirty list, drained after each event, each timer and each closure from another thread:
///    settling a connection advances its phase, computes its epoll interest from its state, and
///    changes the registration only if it differs (see Lifecycle.swift).
/// 5. Timers (idle timeouts), accept back-off, wake-ups and signals are ordinary events.
///
/// A reactor belongs to the thread that calls ``run()``: create it, listen, and run it on that
/// thread. To use several cores, run one reactor per thread, each listening with `reusePort`.
/// Other threads talk to it only through its ``handle``.
public final class Reactor<Handler: ConnectionHandler> {
    /// The protocol logic, shared by all connections of this reactor.
    public let handler: Handler
    /// The settings this reactor was created with.
    public let configuration: ReactorConfiguration
    /// Stops the reactor or reads its statistics from other threads.
    public let handle: ReactorHandle

    @usableFromInline let sys: Syscalls
    @usableFromInline let epfd: CInt
    @usableFromInline let slots: SlotTable<Handler.ConnectionState>
    @usableFromInline let readBuffer: UnsafeMutableRawBufferPointer
    /// Mutable scalars of the hot path live behind a pointer, not in class properties, so reading
    /// them costs no dynamic exclusivity check.
    @usableFromInline let hot: UnsafeMutablePointer<HotState>
    @usableFromInline let counters: UnsafeMutablePointer<ReactorStatistics>

    @usableFromInline var events: UnsafeMutablePointer<epoll_event>
    @usableFromInline var eventCapacity: Int
    @usableFromInline var pool = OutputBufferPool()
    /// Behind a pointer (see `Books`): read at each accept.
    var listeners: [Listener] {
        get { books.pointee.listeners }
        _modify { yield &books.pointee.listeners }
    }
    /// Datagram sockets and their receive area (DatagramSocket.swift). Only the reactor's thread
    /// touches it, so the dynamic exclusivity check of a class property (about 300 instructions
    /// per datagram wakeup, callgrind) buys nothing.
    @exclusivity(unchecked) @usableFromInline var datagrams = DatagramSockets()
    /// Connections whose state changed since they were last settled (each once: see
    /// ``Bookkeeping/dirty``). Drained by `settleDirty`, never inside a handler callback.
    /// Behind a pointer, like `hot`: the loop checks it after every event, and a class property
    /// would cost a dynamic exclusivity check there.
    @usableFromInline let dirty: UnsafeMutablePointer<[Int32]>
    /// The reason of each connection being closed (the first one given), by slot, from the
    /// close request until the slot is freed, for reasons that are not one of the reactor's own
    /// (those are a code in the slot: see `setCloseReason`).
    @inlinable var closeReasons: [Int32: CloseReason] {
        get { books.pointee.closeReasons }
        _modify { yield &books.pointee.closeReasons }
    }
    /// The reason to report, by slot, when the peer ends the connection (EOF or reset): set by
    /// ``Connection/countPeerClose(as:)``, dropped when the slot is freed. Usually empty.
    @inlinable var peerCloseReasons: [Int32: CloseReason] {
        get { books.pointee.peerCloseReasons }
        _modify { yield &books.pointee.peerCloseReasons }
    }
    /// The reactor's per-connection bookkeeping that every accept and close touches, behind a
    /// pointer like `hot`: as stored class properties, each access cost a dynamic exclusivity
    /// check (about 78 instructions, 6 per connect / echo / close cycle, callgrind 2026-12-07).
    @usableFromInline let books: UnsafeMutablePointer<Books>

    @usableFromInline
    struct Books {
        @usableFromInline var closeReasons: [Int32: CloseReason] = [:]
        @usableFromInline var peerCloseReasons: [Int32: CloseReason] = [:]
        var listeners: [Listener] = []
        var wheel: IdleWheel?
    }
    let timerFD: CInt
    var timers = TimerQueue()
    var armedDeadline: Int64 = 0
    var signalFD: CInt = -1
    var signalTargets: [ReactorHandle] = []
    var signalRouting = SignalRouting()
    var wheel: IdleWheel? {
        get { books.pointee.wheel }
        _modify { yield &books.pointee.wheel }
    }
    var wheelStart: Int64 = 0
    var acceptPaused = false
    var lastAcceptErrorLog: Int64 = 0
    var suppressedAcceptErrors = 0
    @usableFromInline var runState = RunState.idle

    @usableFromInline enum RunState { case idle, running, stopping, finished }

    @usableFromInline
    struct HotState {
        /// The idle wheel's tick, stamped on connections at each read and write.
        @usableFromInline var tick: UInt32 = 0
        /// `runState` is `.stopping`: what the loop checks each turn (a class property would cost
        /// a dynamic exclusivity check there, 76 instructions per turn by callgrind).
        @usableFromInline var stopping = false
        /// The kernel echo's pipe (KernelEcho.swift): made at the first bulk read a handler lets
        /// the kernel echo, empty between calls. -1 until then.
        @usableFromInline var pipeRead: CInt = -1
        @usableFromInline var pipeWrite: CInt = -1
        /// No kernel echo in this reactor: off in the configuration, or the pipe or a splice
        /// failed in a way that will not change.
        @usableFromInline var kernelEchoUnavailable = false
        /// The last loop turn whose epoll_wait had room to spare, so every ready fd was reported
        /// (`ReactorStatistics.loopIterations`). A full wait may leave a ready listener out: epoll
        /// hands out more ready fds than fit in rotation. The accept batch (`Reactor.acceptReady`)
        /// counts a streak of full batches across such turns.
        @usableFromInline var lastRoomyTurn = 0
    }

    /// Creates a reactor: an epoll instance, its wake-up eventfd, its read buffer and its
    /// connection table. Nothing is accepted until ``listen(on:backlog:reusePort:limited:unixMode:)`` and ``run()``.
    public convenience init(handler: Handler, configuration: ReactorConfiguration = ReactorConfiguration()) throws(SyscallError) {
        try self.init(handler: handler, configuration: configuration, interposer: nil)
    }

    init(handler: Handler, configuration: ReactorConfiguration, interposer: SyscallInterposer?) throws(SyscallError) {
        precondition(configuration.lowWatermark <= configuration.highWatermark, "lowWatermark must not exceed highWatermark")
        precondition(configuration.readBufferSize > 0, "readBufferSize must be positive")
        self.handler = handler
        self.configuration = configuration
        sys = Syscalls(interposer: interposer)
        let ep = FileDescriptor(try Syscalls.epollCreate())
        handle = try ReactorHandle()
        // Room for every fd this process may ever open; pages are touched only when used, and
        // slots are reused most-recently-freed first, so they stay dense.
        slots = SlotTable(capacity: Syscalls.fdHardLimit())
        readBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: configuration.readBufferSize, alignment: 64)
        hot = .allocate(capacity: 1)
        hot.initialize(to: HotState())
        hot.pointee.kernelEchoUnavailable = !configuration.kernelEcho
        dirty = .allocate(capacity: 1)
        dirty.initialize(to: [])
        books = .allocate(capacity: 1)
        books.initialize(to: Books())
        counters = .allocate(capacity: 1)
        counters.initialize(to: ReactorStatistics())
        eventCapacity = Budget.initialEvents
        events = .allocate(capacity: eventCapacity)
        let timer = FileDescriptor(try Syscalls.timerfd())
        epfd = ep.take()
        timerFD = timer.take()
        // From here on deinit closes epfd and timerFD.
        try register(special: handle.eventFD, kind: .wakeup)
        try register(special: timerFD, kind: .timer)
        if let timeout = configuration.idleTimeout {
            precondition(timeout > 0 && timeout <= IdleWheel.maxTimeout, "idleTimeout must be 1...\(IdleWheel.maxTimeout) seconds")
            wheel = IdleWheel(timeout: timeout)
            wheelStart = cepoll_monotonic_ns()
            _ = addTimer(after: nanosecondsPerSecond, interval: nanosecondsPerSecond, .idleTick)
        }
    }

    deinit {
        // Every fd the reactor owns closes through sys.close, the one path a test can watch.
        for i in 0..<Int(slots.used) where slots[i].pointee.kind == .connection {
            sys.close(slots[i].pointee.fd)
            slots[i].deinitialize(count: 1)
        }
        for listener in listeners { sys.close(listener.fd) }
        for socket in datagrams.sockets { sys.close(socket.fd) }
        sys.close(timerFD)
        if signalFD >= 0 { sys.close(signalFD) }
        closeKernelEchoPipe()
        sys.close(epfd)
        slots.unmap()
        readBuffer.deallocate()
        hot.deallocate()
        dirty.deinitialize(count: 1)
        dirty.deallocate()
        books.deinitialize(count: 1)
        books.deallocate()
        counters.deinitialize(count: 1)
        counters.deallocate()
        events.deallocate()
    }

    /// The counters, read on the reactor's own thread.
    public var statistics: ReactorStatistics { counters.pointee }

    /// True once a stop was requested.
    public var isStopping: Bool {
        switch runState {
        case .stopping, .finished: return true
        case .idle, .running: return false
        }
    }

    /// What callbacks get as ``Connection/context``: this reactor, narrowed to what code on its
    /// thread may do; the one way to reach a connection by id (write, close, resume, …).
    public var context: ReactorContext<Handler> { ReactorContext(self) }

    // MARK: registration

    /// Registers a reactor-owned fd (listener, timerfd, eventfd, signalfd) for reading.
    /// Returns its slot. Throws, with the slot given back and the fd still the caller's, when
    /// no slot is left or epoll refuses the fd (ENOMEM, ENOSPC).
    @usableFromInline @discardableResult
    func register(special fd: CInt, kind: SlotKind) throws(SyscallError) -> Int32 {
        guard let i = slots.allocate(fd: fd) else {
            throw SyscallError(call: "no free slot for fd \(fd) (the fd hard limit is \(slots.capacity))", errno: .tooManyOpenFiles)
        }
        let slot = slots[Int(i)]
        slot.pointee.generation &+= 1
        slot.pointee.kind = kind
        slot.pointee.registered = CEPOLL_IN
        // A slot may be reused: a listener starts accepting one at a time (Slot.acceptBatch).
        slot.pointee.lastActive = 0
        slot.pointee.lastProgress = 0
        let data = ConnectionID(index: i, generation: slot.pointee.generation).epollData
        if let e = sys.epollCtl(epfd, EPOLL_CTL_ADD, fd, events: CEPOLL_IN, data: data) {
            slots.release(i)
            throw SyscallError(call: "epoll_ctl(EPOLL_CTL_ADD, fd \(fd))", errno: e)
        }
        return i
    }

    // MARK: the loop

    /// Runs the loop on the calling thread until a stop (``ReactorHandle/stop()``, or a signal
    /// given to ``stop(onSignals:alsoStopping:)``) has closed every connection, or the shutdown
    /// grace period has passed. Call it once.
    @inlinable
    public func run() {
        startRunning()
        // Locals, not the class properties, each turn: no exclusivity check per turn.
        var events = self.events
        var capacity = eventCapacity
        while true {
            if _slowPath(hot.pointee.stopping), counters.pointee.open == 0 { break }
            // No timeout: every deadline is on the timerfd.
            let n = sys.epollWait(epfd, events, capacity: capacity, timeoutMs: -1)
            counters.pointee.loopIterations &+= 1
            for i in 0..<n { dispatch(events + i) }
            if _slowPath(n == capacity) {
                if capacity < Budget.maxEvents {
                    growEvents()
                    events = self.events
                    capacity = eventCapacity
                }
            } else {
                hot.pointee.lastRoomyTurn = counters.pointee.loopIterations
            }
        }
        finishRunning()
    }

    @usableFromInline
    func startRunning() {
        guard case .idle = runState else { preconditionFailure("Reactor.run() called twice") }
        runState = .running
        _ = addTimer(after: Budget.publishIntervalNs, interval: Budget.publishIntervalNs, .publishStatistics)
    }

    @usableFromInline
    func finishRunning() {
        runState = .finished
        closeListeners()
        // Closures accepted by execute run exactly once: the last ones now, and no more after.
        handle.work.close()
        handle.work.drain(self) { settleDirty() }
        handle.publish(counters.pointee)
    }

    @usableFromInline
    func growEvents() {
        events.deallocate()
        eventCapacity *= 2
        events = .allocate(capacity: eventCapacity)
    }

    /// One event: look up its slot, drop it if stale, dispatch it, then settle what it changed.
    @inlinable @inline(__always)
    func dispatch(_ event: UnsafePointer<epoll_event>) {
        let id = ConnectionID(epollData: cepoll_event_data(event))
        let mask = cepoll_event_mask(event)
        let slot = slots[Int(id.index)]
        guard slot.pointee.generation == id.generation, slot.pointee.kind != .free else {
            // Closed (and maybe reused) earlier in this batch: the event is not for what is there now.
            counters.pointee.staleEvents &+= 1
            return
        }
        switch slot.pointee.kind {
        case .connection: connectionReady(id.index, mask)
        case .listener: acceptReady(id.index)
        case .timer: timerFired()
        case .wakeup: wokenUp()
        case .signal: signalArrived()
        case .datagram: datagramReady(id.index, mask)
        case .free: break
        }
        // The one point where connections are settled after an event (timers and closures from
        // other threads settle after each of theirs, too).
        if !dirty.pointee.isEmpty { settleDirty() }
    }

    /// Error → writable → readable → end of input, for one connection.
    @inlinable @inline(__always)
    func connectionReady(_ i: Int32, _ mask: UInt32) {
        let slot = slots[Int(i)]
        if mask & CEPOLL_ERR != 0 {
            // The socket failed (usually an RST). Pending output can no longer be delivered, but
            // what arrived before the error is still the peer's last word: the handler reads it
            // first (as libuv does), and the read that reaches the error closes the connection.
            // (A balancer's health check sends its PROXY header and resets at once.)
            if mask & CEPOLL_IN != 0 && slot.pointee.life.isReading {
                readReady(i)
            }
            requestClose(i, .failure(Syscalls.socketError(slot.pointee.fd)), abort: true)
            return
        }
        switch slot.pointee.life.phase {
        case .open, .closing: break
        case .connecting: connectFinished(i); return
        case .lingering: lingerRead(i); return
        case .closed: return
        }
        if mask & CEPOLL_OUT != 0 && slot.pointee.output != nil {
            flush(i)
        }
        if mask & (CEPOLL_IN | CEPOLL_HUP) != 0 {
            if slot.pointee.life.isReading {
                readReady(i)
            } else if mask & CEPOLL_HUP != 0 && mask & CEPOLL_IN == 0 {
                // A hang-up while we are not reading. EPOLLHUP is reported whatever the mask, so
                // level triggering would repeat it forever: leave the epoll set, or close.
                if slot.pointee.life.hangUp() {
                    requestClose(i, .reset, abort: true)
                } else {
                    markDirty(i)
                }
            }
        }
    }

    /// Reads into the shared buffer and hands the bytes to the handler, up to `readsPerEvent`
    /// times, and only again when a read filled the whole buffer (level triggering reports
    /// whatever is left).
    @inlinable
    func readReady(_ i: Int32) {
        let slot = slots[Int(i)]
        let fd = slot.pointee.fd
        let id = ConnectionID(index: i, generation: slot.pointee.generation, fd: fd)
        for _ in 0..<Budget.readsPerEvent {
            // A streaming connection whose handler echoes unchanged: in the kernel (KernelEcho.swift),
            // unless output is pending or the reactor cannot splice (nil: read as usual).
            if _slowPath(slot.pointee.book.contains(.kernelEcho)), let again = echoedInKernel(i, id) {
                if again { continue }
                return
            }
            switch sys.read(fd, into: readBuffer) {
            case .bytes(let n):
                counters.pointee.bytesIn &+= n
                slot.pointee.lastActive = hot.pointee.tick
                let action = handler.onRead(UnsafeRawBufferPointer(rebasing: readBuffer[..<n]),
                                            connection: Connection(reactor: self, id: id),
                                            state: &slot.pointee.state)
                apply(action, i)
                guard n == readBuffer.count, slot.pointee.life.isReading else { return }
                if let out = slot.pointee.output, out.count > configuration.highWatermark { return }
                // A read that filled the buffer: a stream. Its handler may let the kernel echo it.
                if slot.pointee.output == nil { mayEchoInKernel(i) }
            case .eof:
                readEnded(i, id)
                return
            case .wouldBlock:
                return
            case .failed(let e):
                requestClose(i, .failure(e), abort: true)
                return
            }
        }
    }

    /// The peer shut down its side: the handler hears it, and the connection is settled.
    @inlinable
    func readEnded(_ i: Int32, _ id: ConnectionID) {
        let slot = slots[Int(i)]
        slot.pointee.life.readEOF()
        markDirty(i)
        let action = handler.onReadEOF(Connection(reactor: self, id: id), state: &slot.pointee.state)
        apply(action, i)
    }

    @inlinable
    func apply(_ action: Action, _ i: Int32) {
        switch action {
        case .continue:
            break
        case .pauseReading:
            slots[Int(i)].pointee.life.pauseReading()
            markDirty(i)
        case .close(let reason):
            requestClose(i, reason, abort: false)
        case .refuse(let reason):
            requestClose(i, reason, abort: true)
        }
    }

    // MARK: writing

    /// The write path of ``Connection/write(_:)-(UnsafeRawBufferPointer)``: straight to the socket when nothing is
    /// pending; what the kernel does not take is copied to the connection's output buffer.
    /// Whatever changes the connection's epoll interest marks it dirty here, so callers need not.
    @inlinable @inline(__always)
    func write(slot i: Int32, _ bytes: UnsafeRawBufferPointer) -> WriteOutcome {
        let slot = slots[Int(i)]
        // The common case, inlined into the handler: open, nothing queued, and the kernel takes
        // every byte. Anything else (a short write, a queue, a failure) goes out of line.
        if _fastPath(slot.pointee.life.phase == .open && slot.pointee.output == nil && !bytes.isEmpty) {
            slot.pointee.lastActive = hot.pointee.tick
            let result = sys.write(slot.pointee.fd, bytes)
            if case .bytes(let n) = result, _fastPath(n == bytes.count) {
                counters.pointee.bytesOut &+= n
                return .sent
            }
            return wrote(slot: i, bytes, result)
        }
        return writeQueuing(slot: i, bytes)
    }

    /// The rest of a direct write that the kernel did not take whole: count what it took, queue
    /// the remainder (or report the connection closed after a failure).
    @inlinable @inline(never)
    func wrote(slot i: Int32, _ bytes: UnsafeRawBufferPointer, _ result: IOResult) -> WriteOutcome {
        guard let n = taken(result, i) else { return .closed }
        let out = pool.take()
        out.append(UnsafeRawBufferPointer(rebasing: bytes[n...]))
        return queue(out, i)
    }

    /// ``write(slot:_:)`` for every case: behind queued bytes, while connecting, closed, empty.
    @inlinable @inline(never)
    func writeQueuing(slot i: Int32, _ bytes: UnsafeRawBufferPointer) -> WriteOutcome {
        let slot = slots[Int(i)]
        guard slot.pointee.life.acceptsWrites else { return .closed }
        if bytes.isEmpty { return .sent }
        slot.pointee.lastActive = hot.pointee.tick
        if let out = slot.pointee.output {
            // Order: earlier bytes are still queued, so these go behind them.
            out.append(bytes)
            // Past the high watermark the connection must stop reading: settle it.
            if out.count > configuration.highWatermark { markDirty(i) }
            return .queued(pending: out.count)
        }
        var sent = 0
        // A socket still connecting cannot send: everything is queued for EPOLLOUT.
        if slot.pointee.life.phase != .connecting {
            guard let n = taken(sys.write(slot.pointee.fd, bytes), i) else { return .closed }
            if n == bytes.count { return .sent }
            sent = n
        }
        let out = pool.take()
        out.append(UnsafeRawBufferPointer(rebasing: bytes[sent...]))
        return queue(out, i)
    }

    /// Counts what one write to connection `i` sent: the bytes the kernel took (0 when it took
    /// none), or nil when the write failed and the connection is now closing at once.
    @inlinable
    func taken(_ result: IOResult, _ i: Int32) -> Int? {
        switch result {
        case .bytes(let n):
            counters.pointee.bytesOut &+= n
            return n
        case .wouldBlock, .eof:
            return 0
        case .failed(let e):
            requestClose(i, .failure(e), abort: true)
            return nil
        }
    }

    /// Makes `out` the pending output of connection `i`, which had none: EPOLLOUT and the send
    /// clock start.
    @inlinable
    func queue(_ out: OutputBuffer, _ i: Int32) -> WriteOutcome {
        slots[Int(i)].pointee.output = out
        if configuration.sendTimeout != nil { startSendClock(i) }
        markDirty(i)
        return .queued(pending: out.count)
    }

    /// Output just became pending: the send timeout counts from now, and a deadline is armed
    /// unless one already is (it re-arms itself from the last progress when it fires).
    @usableFromInline
    func startSendClock(_ i: Int32) {
        let slot = slots[Int(i)]
        slot.pointee.lastProgress = cepoll_monotonic_ns()
        guard let timeout = configuration.sendTimeout, !slot.pointee.book.contains(.sendDeadlineArmed) else { return }
        slot.pointee.book.insert(.sendDeadlineArmed)
        _ = addConnectionTimer(i, after: timeout.nanoseconds, interval: nil, .sendDeadline)
    }

    /// The send deadline fired: cut the connection if its output is still pending and made no
    /// progress for the whole timeout, else arm again for the new deadline.
    func sendDeadline(_ i: Int32, now: Int64) {
        let slot = slots[Int(i)]
        slot.pointee.book.remove(.sendDeadlineArmed)
        guard let timeout = configuration.sendTimeout?.nanoseconds, slot.pointee.output != nil else { return }
        let due = slot.pointee.lastProgress + timeout
        if due <= now {
            configuration.logger.debug("connection \(slot.pointee.peer) (\(ConnectionID(index: i, generation: slot.pointee.generation, fd: slot.pointee.fd))): no output progress for \(timeout / 1_000_000) ms (send-timeout)")
            cutDiscarding(i, .sendTimeout)
            return
        }
        slot.pointee.book.insert(.sendDeadlineArmed)
        _ = addConnectionTimer(i, after: due - now, interval: nil, .sendDeadline)
    }

    /// EPOLLOUT: send what is pending. When the buffer drains it goes back to the pool. Either
    /// way the connection is settled: EPOLLOUT off once drained, backpressure, a pending close.
    @inlinable
    func flush(_ i: Int32) {
        let slot = slots[Int(i)]
        guard let out = slot.pointee.output else { return }
        markDirty(i)
        while !out.isEmpty {
            let unsent = out.unsent
            switch sys.write(slot.pointee.fd, unsent) {
            case .bytes(let n):
                counters.pointee.bytesOut &+= n
                slot.pointee.lastActive = hot.pointee.tick
                if configuration.sendTimeout != nil && n > 0 { slot.pointee.lastProgress = cepoll_monotonic_ns() }
                out.consume(n)
                if n < unsent.count { return }  // the socket buffer is full: wait for EPOLLOUT
            case .wouldBlock, .eof:
                return
            case .failed(let e):
                requestClose(i, .failure(e), abort: true)
                return
            }
        }
        slot.pointee.output = nil
        pool.give(out)
    }

    // MARK: accepting

    /// A connection was accepted.
    @inlinable
    func open(_ fd: CInt, peer: SocketAddress?, listener: Int) {
        counters.pointee.accepted &+= 1
        let limited = listenerIsLimited(listener)
        if limited, let limit = configuration.connectionLimit, !limit.acquire() {
            counters.pointee.rejectedByLimit &+= 1
            counters.pointee.closes.limit &+= 1
            configuration.logger.info("connection from \(peer?.description ?? "?") refused: limit of \(limit.maximum) connections reached (reason limit)")
            sys.close(fd)
            return
        }
        let holdsPlace = limited && configuration.connectionLimit != nil
        let id: ConnectionID
        do {
            id = try install(fd, peer: peer, state: handler.makeState(), origin: .accepted)
        } catch {
            if holdsPlace { configuration.connectionLimit?.release() }
            configuration.logger.warning("connection from \(peer?.description ?? "?") dropped: \(error)")
            return
        }
        slots[Int(id.index)].pointee.listener = Int16(truncatingIfNeeded: listener)
        if holdsPlace { slots[Int(id.index)].pointee.book.insert(.holdsLimitPlace) }
        opened(id)
    }

    /// The connection is established: tell the handler.
    @inlinable
    func opened(_ id: ConnectionID) {
        let slot = slots[Int(id.index)]
        let action = handler.onOpen(Connection(reactor: self, id: id), state: &slot.pointee.state)
        apply(action, id.index)
    }

    // MARK: connections by id (public through ReactorContext, the one way to reach them)

    /// Writes to a connection from anywhere on the reactor's thread, for example to another
    /// connection from inside a callback (a broadcast). Returns ``WriteOutcome/closed`` when the
    /// connection is gone, so stale ids are harmless.
    @discardableResult
    @inlinable
    func write(to id: ConnectionID, _ bytes: UnsafeRawBufferPointer) -> WriteOutcome {
        guard slots.isLive(id) else { return .closed }
        return write(slot: id.index, bytes)
    }

    /// Writes the UTF-8 bytes of `text` to a connection (see ``write(to:_:)-(_,UnsafeRawBufferPointer)``).
    @discardableResult
    func write(to id: ConnectionID, _ text: String) -> WriteOutcome {
        var text = text
        return text.withUTF8 { write(to: id, UnsafeRawBufferPointer($0)) }
    }

    /// Bytes queued for a connection and not yet taken by the kernel (0 for a closed one).
    func pendingOutputBytes(_ id: ConnectionID) -> Int {
        guard slots.isLive(id) else { return 0 }
        return slots[Int(id.index)].pointee.output?.count ?? 0
    }

    /// Closes a connection. By default its pending output is written first (the peer gets every
    /// byte, then EOF); with `discardingOutput` it is closed at once, which is how to drop a peer
    /// that does not read: reset (SO_LINGER 0) when output was pending, so the peer reads
    /// ECONNRESET rather than a clean EOF after a shortened stream. A connection still
    /// connecting is abandoned (its queued bytes were never sent). Does nothing if the
    /// connection is gone.
    func close(_ id: ConnectionID, reason: CloseReason, discardingOutput: Bool = false) {
        guard slots.isLive(id) else { return }
        requestClose(id.index, reason, abort: discardingOutput)
    }

    /// Shuts down the writing side of a connection once its pending output is written: the
    /// peer sees EOF after the last byte, and the connection goes on reading until the peer
    /// closes too (a client telling a server it has sent everything). Does nothing if it is gone.
    func shutdownWrite(_ id: ConnectionID) {
        guard slots.isLive(id) else { return }
        slots[Int(id.index)].pointee.life.requestShutdownWrite()
        markDirty(id.index)
    }

    /// Reads again from a connection paused with ``Action/pauseReading``.
    func resumeReading(_ id: ConnectionID) {
        guard slots.isLive(id) else { return }
        slots[Int(id.index)].pointee.life.resumeReading()
        markDirty(id.index)
    }

    @usableFromInline
    func listenerAddress(of i: Int32) -> SocketAddress? {
        let index = Int(slots[Int(i)].pointee.listener)
        return listeners.indices.contains(index) ? listeners[index].address : nil
    }

    /// True while `id` names a connection of this reactor that is not yet closed (connecting,
    /// open, closing or lingering).
    @inlinable
    func isLive(_ id: ConnectionID) -> Bool { slots.isLive(id) }

    // MARK: stopping

    @usableFromInline
    func wokenUp() {
        Syscalls.drain(handle.eventFD, size: 8)
        if handle.stopRequested.load(ordering: .acquiring) { beginStop() }
        if handle.forceRequested.load(ordering: .acquiring) { abortAll() }
        handle.work.drain(self) { settleDirty() }
        handle.publish(counters.pointee)
    }

    /// Stop accepting, give every connection one last read of what its peer already sent and its
    /// handler's ``ConnectionHandler/onStop(_:state:)``, then close each once its output is
    /// flushed (the peers see EOF).
    @usableFromInline
    func beginStop() {
        switch runState {
        case .idle, .running: break
        case .stopping, .finished: return
        }
        runState = .stopping
        hot.pointee.stopping = true
        _ = addTimer(after: configuration.shutdownGrace.nanoseconds, interval: nil, .shutdownDeadline)
        closeListeners()
        for i in 0..<slots.used where slots[Int(i)].pointee.kind == .connection {
            let slot = slots[Int(i)]
            if slot.pointee.life.isReading { readReady(i) }
            if slot.pointee.life.phase == .open {
                let id = ConnectionID(index: i, generation: slot.pointee.generation, fd: slot.pointee.fd)
                handler.onStop(Connection(reactor: self, id: id), state: &slot.pointee.state)
            }
            requestClose(i, .shutdown, abort: false)
        }
        settleDirty()
    }

    /// The grace period is over: close what is left without waiting for slow peers.
    @usableFromInline
    func abortAll() {
        for i in 0..<slots.used where slots[Int(i)].pointee.kind == .connection {
            requestClose(i, .shutdown, abort: true)
        }
        settleDirty()
    }
}
