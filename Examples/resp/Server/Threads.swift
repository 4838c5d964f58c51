import Dispatch
import Glibc
import Reactor
import Synchronization

/// Tells the main thread whether a reactor thread started (its handle) or why it did not.
final class StartGate: Sendable {
    enum Outcome: Sendable { case success(ReactorHandle), failure(String) }
    private let outcome = Mutex<Outcome?>(nil)
    private let semaphore = DispatchSemaphore(value: 0)

    func succeed(_ handle: ReactorHandle) { outcome.withLock { $0 = .success(handle) }; semaphore.signal() }
    func fail(_ message: String) { outcome.withLock { $0 = .failure(message) }; semaphore.signal() }
    func wait() -> Outcome {
        semaphore.wait()
        return outcome.withLock { $0! }
    }
}

private final class ThreadBody {
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}

/// A plain pthread: a reactor needs a thread of its own, nothing more.
func spawnThread(_ body: @escaping @Sendable () -> Void) -> pthread_t {
    let box = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
    var thread = pthread_t()
    let rc = pthread_create(&thread, nil, { argument in
        let body = Unmanaged<ThreadBody>.fromOpaque(argument!).takeRetainedValue()
        body.body()
        return nil
    }, box)
    precondition(rc == 0, "pthread_create failed: \(rc)")
    return thread
}
