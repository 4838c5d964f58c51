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
/// 4. The handler's ``Action`` is applied: the epoll mask is updated only if it changed, and
///    closing connections are torn down once their output is flushed.
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
    var listeners: [Listener] = []
    /// Connections touched from outside their own dispatch (a write from another connection's
    /// callback, a timer): their epoll mask or close is settled after the current event.
    @usableFromInline var pendingSettle: [Int32] = []
    let timerFD: CInt
    var timers = TimerQueue()
    var armedDeadline: Int64 = 0
    var signalFD: CInt = -1
    var signalTargets: [ReactorHandle] = []
    var signalRouting = SignalRouting()
    var wheel: IdleWheel?
    var wheelStart: Int64 = 0
    var acceptPaused = false
    var lastAcceptErrorLog: Int64 = 0
    var suppressedAcceptErrors = 0
    @usableFromInline var runState = RunState.idle

    @usableFromInline enum RunState { case idle, running, stopping, finished }

    @usableFromInline
    struct HotState {
        /// The slot whose event is being dispatched (its settle happens at the end of dispatch).
        @usableFromInline var currentSlot: Int32 = -1
        /// The idle wheel's tick, stamped on connections at each read and write.
        @usableFromInline var tick: UInt32 = 0
        /// Slots below this index have been used at least once: the bound of a walk over all.
        @usableFromInline var slotsUsed: Int32 = 0
        /// The most recently freed slot, head of the free list (linked through `wheelNext`), or -1.
        @usableFromInline var freeSlot: Int32 = -1
    }

    /// Creates a reactor: an epoll instance, its wake-up eventfd, its read buffer and its
    /// connection table. Nothing is accepted until ``listen(on:backlog:reusePort:limited:)`` and ``run()``.
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
        counters = .allocate(capacity: 1)
        counters.initialize(to: ReactorStatistics())
        eventCapacity = Budget.initialEvents
        events = .allocate(capacity: eventCapacity)
        let timer = FileDescriptor(try Syscalls.timerfd())
        epfd = ep.take()
        timerFD = timer.take()
        register(special: handle.eventFD, kind: .wakeup)
        register(special: timerFD, kind: .timer)
        if let timeout = configuration.idleTimeout {
            precondition(timeout > 0 && timeout <= IdleWheel.maxTimeout, "idleTimeout must be 1...\(IdleWheel.maxTimeout) seconds")
            wheel = IdleWheel(timeout: timeout)
            wheelStart = cepoll_monotonic_ns()
            _ = addTimer(after: nanosecondsPerSecond, interval: nanosecondsPerSecond, .idleTick)
        }
    }

    deinit {
        for i in 0..<Int(hot.pointee.slotsUsed) where slots[i].pointee.kind == .connection {
            sys.close(slots[i].pointee.fd)
            slots[i].deinitialize(count: 1)
        }
        for listener in listeners { sys.close(listener.fd) }
        Glibc.close(timerFD)
        if signalFD >= 0 { Glibc.close(signalFD) }
        Glibc.close(epfd)
        slots.unmap()
        readBuffer.deallocate()
        hot.deallocate()
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

    // MARK: registration

    /// Takes a free slot: the most recently freed one, else the next never used.
    ///
    /// Slots are not indexed by fd: with several reactors in one process, fds interleave between
    /// them, and an fd-indexed table per reactor would touch a page per few fds of the whole
    /// process. A per-reactor dense index keeps each table as small as its own connections
    /// (measured: 182 B per idle connection with 2 fd-indexed reactors, 112 B with one).
    @inlinable
    func allocateSlot(fd: CInt) -> Int32? {
        let free = hot.pointee.freeSlot
        let i: Int32
        if free >= 0 {
            i = free
            hot.pointee.freeSlot = slots[Int(free)].pointee.wheelNext
        } else {
            i = hot.pointee.slotsUsed
            guard Int(i) < slots.capacity else { return nil }
            hot.pointee.slotsUsed = i + 1
        }
        slots[Int(i)].pointee.fd = fd
        return i
    }

    /// Gives a slot back. Its generation stays, so stale events and ids keep missing.
    @inlinable
    func releaseSlot(_ i: Int32) {
        let slot = slots[Int(i)]
        slot.pointee.kind = .free
        slot.pointee.wheelNext = hot.pointee.freeSlot
        hot.pointee.freeSlot = i
    }

    /// Registers a reactor-owned fd (listener, timerfd, eventfd, signalfd) for reading.
    /// Returns its slot.
    @usableFromInline @discardableResult
    func register(special fd: CInt, kind: SlotKind) -> Int32 {
        guard let i = allocateSlot(fd: fd) else { fatalError("no slot for fd \(fd): the fd hard limit is reached") }
        let slot = slots[Int(i)]
        slot.pointee.generation &+= 1
        slot.pointee.kind = kind
        slot.pointee.registered = CEPOLL_IN
        let data = ConnectionID(index: i, generation: slot.pointee.generation).epollData
        if let e = sys.epollCtl(epfd, EPOLL_CTL_ADD, fd, events: CEPOLL_IN, data: data) {
            fatalError("cannot register fd \(fd) with epoll: \(e)")
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
        while true {
            if case .stopping = runState, counters.pointee.open == 0 { break }
            // No timeout: every deadline is on the timerfd.
            let n = sys.epollWait(epfd, events, capacity: eventCapacity, timeoutMs: -1)
            counters.pointee.loopIterations &+= 1
            for i in 0..<n { dispatch(events + i) }
            if n == eventCapacity && eventCapacity < Budget.maxEvents { growEvents() }
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
        handle.publish(counters.pointee)
    }

    @usableFromInline
    func growEvents() {
        events.deallocate()
        eventCapacity *= 2
        events = .allocate(capacity: eventCapacity)
    }

    @inlinable
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
        case .connection:
            hot.pointee.currentSlot = id.index
            connectionReady(id.index, mask)
            hot.pointee.currentSlot = -1
            settle(id.index)
            if !pendingSettle.isEmpty { settlePending() }
        case .listener:
            acceptReady(id.index)
        case .timer:
            timerFired()
        case .wakeup:
            wokenUp()
        case .signal:
            signalArrived()
        case .free:
            break
        }
    }

    /// Error → writable → readable → end of input, for one connection.
    @inlinable
    func connectionReady(_ i: Int32, _ mask: UInt32) {
        let slot = slots[Int(i)]
        if mask & CEPOLL_ERR != 0 {
            // The socket failed (usually an RST). Pending output can no longer be delivered.
            requestClose(i, .failure(Syscalls.socketError(slot.pointee.fd)), abort: true)
            return
        }
        if slot.pointee.flags.contains(.connecting) {
            connectFinished(i)
            return
        }
        if slot.pointee.flags.contains(.lingering) {
            lingerRead(i)
            return
        }
        if mask & CEPOLL_OUT != 0 && slot.pointee.output != nil {
            flush(i)
        }
        if mask & (CEPOLL_IN | CEPOLL_HUP) != 0 {
            if wantsRead(slot) {
                readReady(i)
            } else if mask & CEPOLL_HUP != 0 && mask & CEPOLL_IN == 0 {
                // A hang-up while we are not reading. EPOLLHUP is reported whatever the mask, so
                // level triggering would repeat it forever.
                if slot.pointee.flags.subtracting([.pausedByHandler, .queued, .adopted, .holdsLimitPlace]).isEmpty {
                    // Paused by the handler only (a pipe whose writer left): what is still
                    // buffered must be read when it resumes, so step out of the epoll set until then.
                    detach(i)
                } else {
                    // Both directions are shut: nothing more can be delivered.
                    requestClose(i, .reset, abort: true)
                }
            }
        }
    }

    @inlinable
    func wantsRead(_ slot: UnsafeMutablePointer<Slot<Handler.ConnectionState>>) -> Bool {
        slot.pointee.flags.isDisjoint(with: [.pausedByHandler, .pausedByBackpressure, .readEOF, .closing, .connecting])
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
            switch sys.read(fd, into: readBuffer) {
            case .bytes(let n):
                counters.pointee.bytesIn &+= n
                slot.pointee.lastActive = hot.pointee.tick
                let action = handler.onRead(UnsafeRawBufferPointer(rebasing: readBuffer[..<n]),
                                            connection: Connection(reactor: self, id: id),
                                            state: &slot.pointee.state)
                apply(action, i)
                guard n == readBuffer.count, wantsRead(slot) else { return }
                if let out = slot.pointee.output, out.count > configuration.highWatermark { return }
            case .eof:
                slot.pointee.flags.insert(.readEOF)
                let action = handler.onReadEOF(Connection(reactor: self, id: id), state: &slot.pointee.state)
                apply(action, i)
                return
            case .wouldBlock:
                return
            case .failed(let e):
                requestClose(i, .failure(e), abort: true)
                return
            }
        }
    }

    @inlinable
    func apply(_ action: Action, _ i: Int32) {
        switch action {
        case .continue: break
        case .pauseReading: slots[Int(i)].pointee.flags.insert(.pausedByHandler)
        case .close(let reason): requestClose(i, reason, abort: false)
        }
    }

    // MARK: writing

    /// The write path of ``Connection/write(_:)-(UnsafeRawBufferPointer)``: straight to the socket when nothing is
    /// pending; what the kernel does not take is copied to the connection's output buffer.
    /// Whatever changes the connection's epoll mask marks it for settling here, so callers need not.
    @inlinable
    func write(slot i: Int32, _ bytes: UnsafeRawBufferPointer) -> WriteOutcome {
        let slot = slots[Int(i)]
        if slot.pointee.flags.contains(.closing) { return .closed }
        if bytes.isEmpty { return .sent }
        slot.pointee.lastActive = hot.pointee.tick
        if let out = slot.pointee.output {
            // Order: earlier bytes are still queued, so these go behind them.
            out.append(bytes)
            // Past the high watermark the connection must stop reading: settle it.
            if out.count > configuration.highWatermark { markForSettle(i) }
            return .queued(pending: out.count)
        }
        var sent = 0
        // A socket still connecting cannot send: everything is queued for EPOLLOUT.
        if !slot.pointee.flags.contains(.connecting) {
            switch sys.write(slot.pointee.fd, bytes) {
            case .bytes(let n):
                counters.pointee.bytesOut &+= n
                if n == bytes.count { return .sent }
                sent = n
            case .wouldBlock, .eof:
                break
            case .failed(let e):
                requestClose(i, .failure(e), abort: true)
                return .closed
            }
        }
        let out = pool.take()
        out.append(UnsafeRawBufferPointer(rebasing: bytes[sent...]))
        slot.pointee.output = out
        if configuration.sendTimeout != nil { startSendClock(i) }
        markForSettle(i)
        return .queued(pending: out.count)
    }

    /// Output just became pending: the send timeout counts from now, and a deadline is armed
    /// unless one already is (it re-arms itself from the last progress when it fires).
    @usableFromInline
    func startSendClock(_ i: Int32) {
        let slot = slots[Int(i)]
        slot.pointee.lastProgress = cepoll_monotonic_ns()
        guard let timeout = configuration.sendTimeout, !slot.pointee.flags.contains(.sendDeadlineArmed) else { return }
        slot.pointee.flags.insert(.sendDeadlineArmed)
        _ = addConnectionTimer(i, after: timeout.nanoseconds, interval: nil, .sendDeadline)
    }

    /// The send deadline fired: cut the connection if its output is still pending and made no
    /// progress for the whole timeout, else arm again for the new deadline.
    func sendDeadline(_ i: Int32, now: Int64) {
        let slot = slots[Int(i)]
        slot.pointee.flags.remove(.sendDeadlineArmed)
        guard let timeout = configuration.sendTimeout?.nanoseconds, slot.pointee.output != nil else { return }
        let due = slot.pointee.lastProgress + timeout
        if due <= now {
            configuration.logger.debug("connection \(ConnectionID(index: i, generation: slot.pointee.generation, fd: slot.pointee.fd)): no output progress for \(timeout / 1_000_000) ms (send-timeout)")
            requestClose(i, .sendTimeout, abort: true)
            settle(i)
            return
        }
        slot.pointee.flags.insert(.sendDeadlineArmed)
        _ = addConnectionTimer(i, after: due - now, interval: nil, .sendDeadline)
    }

    /// EPOLLOUT: send what is pending. When the buffer drains it goes back to the pool and
    /// EPOLLOUT is disarmed (in `settle`).
    @inlinable
    func flush(_ i: Int32) {
        let slot = slots[Int(i)]
        guard let out = slot.pointee.output else { return }
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

    // MARK: settling: epoll mask, backpressure, closing

    @inlinable
    func markForSettle(_ i: Int32) {
        guard i != hot.pointee.currentSlot else { return }
        let slot = slots[Int(i)]
        guard !slot.pointee.flags.contains(.queued) else { return }
        slot.pointee.flags.insert(.queued)
        pendingSettle.append(i)
    }

    @inlinable
    func settlePending() {
        while let i = pendingSettle.popLast() {
            slots[Int(i)].pointee.flags.remove(.queued)
            settle(i)
        }
    }

    /// Brings one connection's epoll registration in line with its state, or finishes its close.
    @inlinable
    func settle(_ i: Int32) {
        let slot = slots[Int(i)]
        let flags = slot.pointee.flags
        // The common case after a message: nothing pending, nothing paused, reading as registered.
        if flags.isEmpty && slot.pointee.output == nil && slot.pointee.registered == CEPOLL_IN { return }
        guard slot.pointee.kind == .connection else { return }
        if flags.contains(.closing) {
            if flags.contains(.abort) || slot.pointee.output == nil {
                // No linger after EOF (the peer already closed), or for adopted fds (pipes and
                // terminals have no half-close and no reset to avoid).
                if flags.contains(.abort) || flags.contains(.readEOF) || flags.contains(.adopted) {
                    finishClose(i)
                    return
                }
                if !flags.contains(.lingering) { startLinger(i) }
            } else if !flags.contains(.deadlineArmed) {
                armCloseDeadline(i)
            }
        }
        // Watermark backpressure: stop reading above the high mark, resume below the low mark.
        let pending = slot.pointee.output?.count ?? 0
        if pending > configuration.highWatermark {
            slot.pointee.flags.insert(.pausedByBackpressure)
        } else if pending < configuration.lowWatermark {
            slot.pointee.flags.remove(.pausedByBackpressure)
        }
        if flags.contains(.shutdownPending) && slot.pointee.output == nil {
            slot.pointee.flags.remove(.shutdownPending)
            sys.shutdownWrite(slot.pointee.fd)
        }
        var mask: UInt32 = 0
        if wantsRead(slot) || slot.pointee.flags.contains(.lingering) { mask |= CEPOLL_IN }
        if slot.pointee.output != nil || flags.contains(.connecting) { mask |= CEPOLL_OUT }
        if flags.contains(.detached) {
            guard mask & CEPOLL_IN != 0 else { return }
            // Reading resumes after a hang-up: back into the epoll set, which reports what is left.
            slot.pointee.flags.remove(.detached)
            slot.pointee.registered = mask
            let data = ConnectionID(index: i, generation: slot.pointee.generation).epollData
            if let e = sys.epollCtl(epfd, EPOLL_CTL_ADD, slot.pointee.fd, events: mask, data: data) {
                requestClose(i, .error(e), abort: true)
                finishClose(i)
            }
            return
        }
        if mask != slot.pointee.registered {
            slot.pointee.registered = mask
            let data = ConnectionID(index: i, generation: slot.pointee.generation).epollData
            if let e = sys.epollCtl(epfd, EPOLL_CTL_MOD, slot.pointee.fd, events: mask, data: data) {
                requestClose(i, .error(e), abort: true)
                finishClose(i)
            }
        }
    }

    // MARK: opening and closing

    /// A connection was accepted.
    @inlinable
    func open(_ fd: CInt, peer: SocketAddress?, listener: Int) {
        counters.pointee.accepted &+= 1
        let limited = listenerIsLimited(listener)
        if limited, let limit = configuration.connectionLimit, !limit.acquire() {
            counters.pointee.rejectedByLimit &+= 1
            counters.pointee.closed[CloseReason.limit.name, default: 0] += 1
            configuration.logger.info("connection from \(peer?.description ?? "?") refused: limit of \(limit.maximum) connections reached (reason limit)")
            sys.close(fd)
            return
        }
        let holdsPlace = limited && configuration.connectionLimit != nil
        let id: ConnectionID
        do {
            id = try install(fd, peer: peer, state: handler.makeState(), connecting: false)
        } catch {
            if holdsPlace { configuration.connectionLimit?.release() }
            configuration.logger.warning("connection from \(peer?.description ?? "?") dropped: \(error)")
            return
        }
        slots[Int(id.index)].pointee.listener = Int16(truncatingIfNeeded: listener)
        if holdsPlace { slots[Int(id.index)].pointee.flags.insert(.holdsLimitPlace) }
        opened(id)
    }

    /// Puts a new connection in the table and registers it with epoll: for reading, or for
    /// writability while a connect is in progress. Throws, with the fd closed, if there is no
    /// slot or epoll refused it (ENOMEM, or ENOSPC past fs.epoll.max_user_watches); the handler
    /// then hears nothing of it (no onOpen, so no onClose either).
    @inlinable
    func install(_ fd: CInt, peer: SocketAddress?, state: Handler.ConnectionState, connecting: Bool) throws(SyscallError) -> ConnectionID {
        guard let i = allocateSlot(fd: fd) else {
            sys.close(fd)
            throw SyscallError(call: "no free connection slot (the fd hard limit is \(slots.capacity))", errno: .tooManyOpenFiles)
        }
        let slot = slots[Int(i)]
        let generation = slot.pointee.generation &+ 1
        let mask = connecting ? CEPOLL_OUT : CEPOLL_IN
        slot.initialize(to: Slot(
            fd: fd, generation: generation, kind: .connection, flags: connecting ? [.connecting] : [], registered: mask, listener: -1,
            lastActive: hot.pointee.tick, wheelBucket: -1, wheelPrev: -1, wheelNext: -1,
            output: nil, closeReason: nil, peer: peer ?? SocketAddress(storage: .unix("")),
            state: state))
        counters.pointee.open &+= 1
        let id = ConnectionID(index: i, generation: generation, fd: fd)
        if let e = sys.epollCtl(epfd, EPOLL_CTL_ADD, fd, events: mask, data: id.epollData) {
            slot.pointee.registered = 0
            slot.pointee.closeReason = .error(e)
            slot.pointee.flags.insert([.closing, .abort, .handlerClosed])
            finishClose(i)
            throw SyscallError(call: "epoll_ctl", errno: e)
        }
        wheelInsert(i)
        return id
    }

    /// The connection is established: tell the handler.
    @inlinable
    func opened(_ id: ConnectionID) {
        let slot = slots[Int(id.index)]
        let saved = hot.pointee.currentSlot
        hot.pointee.currentSlot = id.index
        let action = handler.onOpen(Connection(reactor: self, id: id), state: &slot.pointee.state)
        apply(action, id.index)
        hot.pointee.currentSlot = saved
        if saved != id.index { settle(id.index) }
    }

    /// Marks a connection for closing. Graceful (`abort == false`): stop reading, flush pending
    /// output, then close. Abortive: close at the next settle, dropping pending output.
    /// The first reason given is the one reported.
    @inlinable
    func requestClose(_ i: Int32, _ reason: CloseReason, abort: Bool) {
        let slot = slots[Int(i)]
        guard slot.pointee.kind == .connection else { return }
        if !slot.pointee.flags.contains(.closing) {
            slot.pointee.flags.insert(.closing)
            slot.pointee.closeReason = reason
        }
        if abort { slot.pointee.flags.insert(.abort) }
        markForSettle(i)
    }

    /// Tears a connection down: the handler's onClose, close(2), and the slot freed.
    /// close(2) also removes the fd from the epoll set (the reactor never duplicates fds).
    @inlinable
    func finishClose(_ i: Int32) {
        let slot = slots[Int(i)]
        let reason = slot.pointee.closeReason ?? .eof
        if !slot.pointee.flags.contains(.handlerClosed) {
            let id = ConnectionID(index: i, generation: slot.pointee.generation, fd: slot.pointee.fd)
            handler.onClose(Connection(reactor: self, id: id), state: &slot.pointee.state, reason: reason)
        }
        if slot.pointee.wheelBucket >= 0 { wheelRemove(i) }
        if slot.pointee.timerHead != 0 { cancelConnectionTimers(i) }
        if slot.pointee.flags.contains(.adopted) && !slot.pointee.flags.contains(.detached) {
            // An adopted fd may share its file description with other fds (a dup'd stdin, a
            // terminal on 0, 1 and 2); then close(2) does not take it out of the epoll set.
            _ = sys.epollCtl(epfd, EPOLL_CTL_DEL, slot.pointee.fd, events: 0, data: 0)
        }
        sys.close(slot.pointee.fd)
        if let out = slot.pointee.output {
            slot.pointee.output = nil
            pool.give(out)
        }
        counters.pointee.open &-= 1
        counters.pointee.closed[reason.name, default: 0] += 1
        if slot.pointee.flags.contains(.holdsLimitPlace) { configuration.connectionLimit?.release() }
        let generation = slot.pointee.generation
        slot.deinitialize(count: 1)
        slot.pointee.generation = generation
        releaseSlot(i)
    }

    /// Output is flushed but the peer may still send: shut down our side (the peer sees EOF after
    /// the last byte) and discard input until the peer closes too, or `lingerNs` passes.
    /// Closing at once could turn into an RST that destroys replies still in the send queue.
    /// The handler is done with the connection here, so its onClose runs now, not after the linger.
    @usableFromInline
    func startLinger(_ i: Int32) {
        let slot = slots[Int(i)]
        slot.pointee.flags.insert([.lingering, .handlerClosed])
        if slot.pointee.timerHead != 0 { cancelConnectionTimers(i) }
        let id = ConnectionID(index: i, generation: slot.pointee.generation, fd: slot.pointee.fd)
        handler.onClose(Connection(reactor: self, id: id), state: &slot.pointee.state,
                        reason: slot.pointee.closeReason ?? .eof)
        sys.shutdownWrite(slot.pointee.fd)
        _ = addTimer(after: Budget.lingerNs, interval: nil, .closeDeadline(id))
    }

    @usableFromInline
    func lingerRead(_ i: Int32) {
        let slot = slots[Int(i)]
        for _ in 0..<Budget.readsPerEvent {
            switch sys.read(slot.pointee.fd, into: readBuffer) {
            case .bytes: continue
            case .wouldBlock: return
            case .eof, .failed:
                slot.pointee.flags.insert(.abort)
                return
            }
        }
    }

    /// Output is pending on a closing connection: give the peer `closeTimeout` to take it.
    @usableFromInline
    func armCloseDeadline(_ i: Int32) {
        let slot = slots[Int(i)]
        slot.pointee.flags.insert(.deadlineArmed)
        _ = addTimer(after: configuration.closeTimeout.nanoseconds, interval: nil,
                     .closeDeadline(ConnectionID(index: i, generation: slot.pointee.generation)))
    }

    /// Takes a connection out of the epoll set (see `connectionReady`).
    @usableFromInline
    func detach(_ i: Int32) {
        let slot = slots[Int(i)]
        _ = sys.epollCtl(epfd, EPOLL_CTL_DEL, slot.pointee.fd, events: 0, data: 0)
        slot.pointee.flags.insert(.detached)
        slot.pointee.registered = 0
    }

    /// A closing connection ran out of time to flush or to linger: cut it, keeping its reason.
    @usableFromInline
    func closeDeadline(_ id: ConnectionID) {
        guard isLive(id), slots[Int(id.index)].pointee.flags.contains(.closing) else { return }
        slots[Int(id.index)].pointee.flags.insert(.abort)
        settle(id.index)
    }

    // MARK: the public connection API

    /// Writes to a connection from anywhere on the reactor's thread, for example to another
    /// connection from inside a callback (a broadcast). Returns ``WriteOutcome/closed`` when the
    /// connection is gone, so stale ids are harmless.
    @discardableResult
    @inlinable
    public func write(to id: ConnectionID, _ bytes: UnsafeRawBufferPointer) -> WriteOutcome {
        guard isLive(id) else { return .closed }
        return write(slot: id.index, bytes)
    }

    /// Writes the UTF-8 bytes of `text` to a connection (see ``write(to:_:)-(_,UnsafeRawBufferPointer)``).
    @discardableResult
    public func write(to id: ConnectionID, _ text: String) -> WriteOutcome {
        var text = text
        return text.withUTF8 { write(to: id, UnsafeRawBufferPointer($0)) }
    }

    /// Runs `body` with a connection and its state, from outside that connection's own callbacks
    /// (a timer, a broadcast from another connection). Returns nil if the connection is gone.
    ///
    /// Inside a callback, use the connection and state the callback was given: reaching the same
    /// connection through this method there is a programming error.
    public func withConnection<R>(_ id: ConnectionID,
                                  _ body: (borrowing Connection<Handler>, inout Handler.ConnectionState) -> R) -> R? {
        guard isLive(id), !slots[Int(id.index)].pointee.flags.contains(.handlerClosed) else { return nil }
        precondition(id.index != hot.pointee.currentSlot, "withConnection called from the connection's own callback")
        let slot = slots[Int(id.index)]
        let saved = hot.pointee.currentSlot
        hot.pointee.currentSlot = id.index
        let result = body(Connection(reactor: self, id: id), &slot.pointee.state)
        hot.pointee.currentSlot = saved
        settle(id.index)
        return result
    }

    /// Bytes queued for a connection and not yet taken by the kernel (0 for a closed one).
    public func pendingOutputBytes(_ id: ConnectionID) -> Int {
        guard isLive(id) else { return 0 }
        return slots[Int(id.index)].pointee.output?.count ?? 0
    }

    /// Closes a connection. By default its pending output is written first (the peer gets every
    /// byte, then EOF); with `discardingOutput` it is closed at once, which is how to drop a peer
    /// that does not read. Does nothing if the connection is gone.
    public func close(_ id: ConnectionID, reason: CloseReason, discardingOutput: Bool = false) {
        guard isLive(id) else { return }
        requestClose(id.index, reason, abort: discardingOutput)
    }

    /// Shuts down the writing side of a connection once its pending output is written: the peer
    /// sees EOF, and the connection keeps reading until the peer closes too.
    public func shutdownWrite(_ id: ConnectionID) {
        guard isLive(id) else { return }
        slots[Int(id.index)].pointee.flags.insert(.shutdownPending)
        markForSettle(id.index)
    }

    /// Reads again from a connection paused with ``Action/pauseReading``.
    public func resumeReading(_ id: ConnectionID) {
        guard isLive(id) else { return }
        slots[Int(id.index)].pointee.flags.remove(.pausedByHandler)
        markForSettle(id.index)
    }

    @usableFromInline
    func listenerAddress(of i: Int32) -> SocketAddress? {
        let index = Int(slots[Int(i)].pointee.listener)
        return listeners.indices.contains(index) ? listeners[index].address : nil
    }

    /// True while `id` names an open connection of this reactor.
    @inlinable
    public func isLive(_ id: ConnectionID) -> Bool {
        guard id.index >= 0, id.index < hot.pointee.slotsUsed else { return false }
        let slot = slots[Int(id.index)]
        return slot.pointee.kind == .connection && slot.pointee.generation == id.generation
    }

    // MARK: stopping

    @usableFromInline
    func wokenUp() {
        Syscalls.drain(handle.eventFD, size: 8)
        if handle.stopRequested.load(ordering: .acquiring) { beginStop() }
        if handle.forceRequested.load(ordering: .acquiring) { abortAll() }
        runHandOverJobs()  // HandOver.swift: jobs queued with executeForHandOver
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
        _ = addTimer(after: configuration.shutdownGrace.nanoseconds, interval: nil, .shutdownDeadline)
        closeListeners()
        for i in 0..<hot.pointee.slotsUsed where slots[Int(i)].pointee.kind == .connection {
            let slot = slots[Int(i)]
            hot.pointee.currentSlot = i
            if wantsRead(slot) { readReady(i) }
            if !slot.pointee.flags.contains(.closing) {
                let id = ConnectionID(index: i, generation: slot.pointee.generation, fd: slot.pointee.fd)
                handler.onStop(Connection(reactor: self, id: id), state: &slot.pointee.state)
            }
            requestClose(i, .shutdown, abort: false)
            hot.pointee.currentSlot = -1
            settle(i)
        }
        settlePending()
    }

    /// The grace period is over: close what is left without waiting for slow peers.
    @usableFromInline
    func abortAll() {
        for i in 0..<hot.pointee.slotsUsed where slots[Int(i)].pointee.kind == .connection {
            requestClose(i, .shutdown, abort: true)
            finishClose(i)
        }
        pendingSettle.removeAll()
    }
}
