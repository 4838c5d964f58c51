import Dispatch
import Glibc
import Synchronization

/// Starting reactors on threads of their own, for servers that run one reactor per core (see
/// the threading model in the documentation): a plain thread per reactor, and a gate through
/// which a reactor thread tells the thread that started it whether it is listening.
///
/// ```swift
/// let gate = ReactorStartGate()
/// guard let thread = ReactorThread.spawn({
///     do {
///         let reactor = try Reactor(handler: MyHandler())
///         _ = try reactor.listen(on: address, reusePort: true)
///         gate.succeed(reactor.handle)
///         reactor.run()
///     } catch { gate.fail("\(error)") }
/// }) else { fatalError("no thread") }
/// if case .success(let handle) = gate.wait() { others.append(handle) }
/// ```
public enum ReactorThread {
    private final class Body {
        let run: @Sendable () -> Void
        init(_ run: @escaping @Sendable () -> Void) { self.run = run }
    }

    /// Runs `body` on a new thread: a plain pthread with the default stack, because a reactor
    /// needs a thread of its own and nothing more. Nil if the system refused one (EAGAIN at the
    /// thread limit). Join it with `pthread_join` once the reactor's `run()` can return.
    public static func spawn(_ body: @escaping @Sendable () -> Void) -> pthread_t? {
        let box = Unmanaged.passRetained(Body(body)).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { argument in
            let body = Unmanaged<Body>.fromOpaque(argument!).takeRetainedValue()
            body.run()
            return nil
        }, box)
        guard rc == 0 else {
            Unmanaged<Body>.fromOpaque(box).release()
            return nil
        }
        return thread
    }
}

/// A reactor thread tells the thread that started it whether it is listening (its handle) or
/// why it is not, once; ``wait()`` blocks until it has.
public final class ReactorStartGate: Sendable {
    /// What the reactor thread reported.
    public enum Outcome: Sendable {
        /// It listens; the handle stops it or reads its statistics.
        case success(ReactorHandle)
        /// It could not start, for this reason (a line for the user).
        case failure(String)
    }

    private let outcome = Mutex<Outcome?>(nil)
    private let semaphore = DispatchSemaphore(value: 0)

    /// A gate nothing has passed yet: ``wait()`` blocks until ``succeed(_:)`` or ``fail(_:)``.
    public init() {}

    /// The reactor listens: `handle` stops it or reads its statistics.
    public func succeed(_ handle: ReactorHandle) {
        outcome.withLock { $0 = .success(handle) }
        semaphore.signal()
    }

    /// The reactor could not start, for this reason.
    public func fail(_ message: String) {
        outcome.withLock { $0 = .failure(message) }
        semaphore.signal()
    }

    /// Waits for ``succeed(_:)`` or ``fail(_:)``.
    public func wait() -> Outcome {
        semaphore.wait()
        return outcome.withLock { $0! }
    }
}
