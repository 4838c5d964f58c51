/// What code running on a reactor's thread may do with the reactor: reach connections by id,
/// set timers, connect, stop. Not `run`, `listen` or the reactor's setup.
///
/// Callbacks get it as ``Connection/context``, and closures from other threads as the argument
/// of ``ReactorHandle/execute(_:)``. It is a small copyable value, so closures (a parser's line
/// callback, a timer) may capture it; use it only on the reactor's thread, while the reactor
/// exists (it holds no reference that keeps the reactor alive).
///
/// ```swift
/// func onRead(_ bytes: UnsafeRawBufferPointer, connection: borrowing Connection<Self>, state: inout Void) -> Action {
///     for id in room.members where id != connection.id { connection.context.write(to: id, bytes) }
///     return .continue
/// }
/// ```
public struct ReactorContext<Handler: ConnectionHandler> {
    @usableFromInline let reactor: Unmanaged<Reactor<Handler>>

    @inlinable init(_ reactor: Unmanaged<Reactor<Handler>>) { self.reactor = reactor }

    @inlinable init(_ reactor: Reactor<Handler>) { self.reactor = .passUnretained(reactor) }

    /// Writes to a connection: straight to the socket, or queued (see
    /// ``Connection/write(_:)-(UnsafeRawBufferPointer)``). ``WriteOutcome/closed`` when it is gone.
    @inlinable @discardableResult
    public func write(to id: ConnectionID, _ bytes: UnsafeRawBufferPointer) -> WriteOutcome {
        reactor._withUnsafeGuaranteedRef { $0.write(to: id, bytes) }
    }

    /// Writes the UTF-8 bytes of `text` to a connection.
    @discardableResult
    public func write(to id: ConnectionID, _ text: String) -> WriteOutcome {
        reactor._withUnsafeGuaranteedRef { $0.write(to: id, text) }
    }

    /// Writes several buffers to a connection in one gathered write (see ``Connection/write(contentsOf:)``).
    @inlinable @discardableResult
    public func write<Buffers: Collection>(to id: ConnectionID, contentsOf buffers: Buffers) -> WriteOutcome
        where Buffers.Element == UnsafeRawBufferPointer {
        reactor._withUnsafeGuaranteedRef { $0.write(to: id, contentsOf: buffers) }
    }

    /// Closes a connection: after flushing its output, or at once with `discardingOutput`
    /// (see ``ReactorContext/close(_:reason:discardingOutput:)``). Does nothing if it is gone.
    public func close(_ id: ConnectionID, reason: CloseReason, discardingOutput: Bool = false) {
        reactor._withUnsafeGuaranteedRef { $0.close(id, reason: reason, discardingOutput: discardingOutput) }
    }

    /// Shuts down a connection's writing side once its output is flushed; it goes on reading
    /// (see ``ReactorContext/shutdownWrite(_:)``).
    public func shutdownWrite(_ id: ConnectionID) {
        reactor._withUnsafeGuaranteedRef { $0.shutdownWrite(id) }
    }

    /// Reads again from a connection paused with ``Action/pauseReading``.
    public func resumeReading(_ id: ConnectionID) {
        reactor._withUnsafeGuaranteedRef { $0.resumeReading(id) }
    }

    /// Bytes queued for a connection and not yet taken by the kernel (0 for a closed one).
    public func pendingOutputBytes(_ id: ConnectionID) -> Int {
        reactor._withUnsafeGuaranteedRef { $0.pendingOutputBytes(id) }
    }

    /// True while `id` names a connection of this reactor that is not yet closed (it may be
    /// connecting, open, closing or lingering).
    public func isLive(_ id: ConnectionID) -> Bool {
        reactor._withUnsafeGuaranteedRef { $0.isLive(id) }
    }

    /// Runs `body` on the reactor's thread after `delay`, and then every `interval` if given
    /// (see ``Reactor/schedule(after:repeating:_:)``). For a timer that belongs to one
    /// connection, prefer ``Connection/schedule(after:repeating:)``.
    @discardableResult
    public func schedule(after delay: Duration, repeating interval: Duration? = nil, _ body: @escaping () -> Void) -> TimerID {
        reactor._withUnsafeGuaranteedRef { $0.schedule(after: delay, repeating: interval, body) }
    }

    /// Cancels a timer; one that already ran or was cancelled is ignored.
    public func cancel(_ timer: TimerID) {
        reactor._withUnsafeGuaranteedRef { $0.cancel(timer) }
    }

    /// Starts an outbound connection driven by the same handler (see ``Reactor/connect(to:from:state:)``).
    @discardableResult
    public func connect(to address: SocketAddress, from source: SocketAddress? = nil,
                        state: Handler.ConnectionState? = nil) throws(SyscallError) -> ConnectionID {
        try reactor.takeUnretainedValue().connect(to: address, from: source, state: state)
    }

    /// The reactor's handle: ``ReactorHandle/stop()`` it, or hand it to other threads.
    public var handle: ReactorHandle { reactor._withUnsafeGuaranteedRef { $0.handle } }

    /// The reactor's counters.
    public var statistics: ReactorStatistics { reactor._withUnsafeGuaranteedRef { $0.statistics } }

    /// True once a stop was requested.
    public var isStopping: Bool { reactor._withUnsafeGuaranteedRef { $0.isStopping } }

    /// The handler shared by the reactor's connections.
    public var handler: Handler { reactor._withUnsafeGuaranteedRef { $0.handler } }
}
