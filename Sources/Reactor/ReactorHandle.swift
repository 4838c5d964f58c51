import Synchronization

/// A thread-safe handle to a reactor: stop it or read its statistics from any thread.
///
/// The handle owns the reactor's wake-up eventfd, so the fd stays valid for as long as anyone
/// holds the handle, even after the reactor is gone.
public final class ReactorHandle: Sendable {
    let eventFD: CInt
    let stopRequested = Atomic<Bool>(false)
    let forceRequested = Atomic<Bool>(false)
    private let published = Mutex(ReactorStatistics())
    let work = WorkQueue(capacity: Budget.queuedClosures)

    init() throws(SyscallError) {
        eventFD = try Syscalls.eventfd()
    }

    deinit { Syscalls.closeQuietly(eventFD) }

    /// Asks the reactor to stop: it stops accepting, flushes what its connections have pending,
    /// closes them (the peers see EOF), and `run()` returns. Safe from any thread, any number of times.
    public func stop() {
        stopRequested.store(true, ordering: .releasing)
        Syscalls.signalEventfd(eventFD)
    }

    /// Asks the reactor to stop at once, without waiting for slow peers to take pending output.
    public func stopNow() {
        forceRequested.store(true, ordering: .releasing)
        stop()
    }

    /// The reactor's counters as it last published them (it does so about once a second, at every
    /// ``requestStatistics()``, and when it stops).
    public var latestStatistics: ReactorStatistics { published.withLock { $0 } }

    /// Runs `body` on the reactor's thread, soon, with the reactor's ``ReactorContext``: the way
    /// other threads reach connections (``ReactorContext/write(to:_:)-(_,UnsafeRawBufferPointer)``,
    /// ``ReactorContext/close(_:reason:discardingOutput:)``).
    ///
    /// ```swift
    /// _ = handle.execute { (reactor: ReactorContext<Chat>) in reactor.write(to: id, "* server restarting\n") }
    /// ```
    ///
    /// Ordering: closures submitted by one thread run in the order that thread submitted them
    /// (FIFO per submitting thread); closures of different threads interleave in the order they
    /// reached the queue. Each runs between events, never inside a handler callback, and the
    /// connections it writes to or closes are settled right after it.
    ///
    /// The queue is bounded (``executeCapacity``) so that a producer far ahead of the loop is told
    /// instead of growing memory. A closure accepted (true) runs exactly once, before `run()`
    /// returns. Returns false, and drops `body`, when the queue is full or `run()` has returned.
    /// `H` must be the reactor's handler type (a mismatch stops the process with a message).
    public func execute<H: ConnectionHandler & SendableMetatype>(_ body: @escaping @Sendable (ReactorContext<H>) -> Void) -> Bool {
        let accepted = work.submit { object in
            guard let reactor = object as? Reactor<H> else {
                preconditionFailure("ReactorHandle.execute: the closure takes a ReactorContext<\(H.self)>, but this handle's reactor is a \(type(of: object))")
            }
            body(ReactorContext(reactor))
        }
        if accepted { Syscalls.signalEventfd(eventFD) }
        return accepted
    }

    /// The most closures ``execute(_:)`` holds for the reactor at once.
    public var executeCapacity: Int { work.capacity }

    /// Asks the reactor to publish fresh statistics soon (it wakes up to do so).
    public func requestStatistics() { Syscalls.signalEventfd(eventFD) }

@usableFromInline
    func publish(_ statistics: ReactorStatistics) { published.withLock { $0 = statistics } }
}
