// A value behind a pthread mutex, shared between a test and a reactor thread.
//
// Not Synchronization.Mutex: on Linux that is a futex inside the (uninstrumented) runtime, so
// ThreadSanitizer cannot see it and reports every access it protects as a data race. TSan
// intercepts pthread mutexes, so with this lock scripts/sanitizers.sh --tsan reports only real
// races.

import Glibc

/// A value that one pthread mutex guards.
public final class Locked<Value>: @unchecked Sendable {
    // @unchecked: `value` is only touched with `mutex` held.
    private var value: Value
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    /// Guards `value`.
    public init(_ value: Value) {
        self.value = value
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deinitialize(count: 1)
        mutex.deallocate()
    }

    /// Runs `body` with the value, the mutex held.
    public func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
