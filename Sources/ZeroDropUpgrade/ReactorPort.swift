import Dispatch
import Reactor
import Synchronization

/// A reactor of this process, for the upgrade thread to reach. Its methods are called only in
/// closures that run on the reactor's own thread (`ReactorHandle/execute(_:)`).
public struct ReactorPort<Handler: ConnectionHandler & SendableMetatype>: @unchecked Sendable {
    /// The reactor's index: its listeners and connections go to the new process's reactor of
    /// the same index (modulo the new count).
    public let index: Int
    let reactor: Reactor<Handler>
    var handle: ReactorHandle { reactor.handle }

    /// The reactor `reactor`, number `index`. Make it on the reactor's thread, before it runs.
    public init(index: Int, reactor: Reactor<Handler>) {
        self.index = index
        self.reactor = reactor
    }

    /// Runs `body` on the reactor's thread (between events, with what it leaves dirty settled
    /// after it) and waits for its result. Throws when the reactor takes no more closures (its
    /// `run()` returned, or its queue is full).
    func run<R>(_ body: @escaping (Reactor<Handler>) -> R) throws(UpgradeError) -> R {
        let result = ResultBox<R>()
        let call = Unchecked(value: (reactor, body))
        let accepted = handle.execute { (_: ReactorContext<Handler>) in
            result.set(call.value.1(call.value.0))
        }
        guard accepted else { throw UpgradeError("reactor \(index) takes no more work (stopping, or its queue is full)") }
        return result.wait()
    }
}

/// A value moved to another thread by hand: the caller sees to it that one thread uses it at a time.
struct Unchecked<T>: @unchecked Sendable { let value: T }

/// One value handed from a reactor's thread to a waiting one.
private final class ResultBox<R>: @unchecked Sendable {
    private let lock = Mutex(())
    private var value: R?
    private let done = DispatchSemaphore(value: 0)
    func set(_ v: R) { lock.withLock { _ in value = v }; done.signal() }
    func wait() -> R { done.wait(); return lock.withLock { _ in value! } }
}
