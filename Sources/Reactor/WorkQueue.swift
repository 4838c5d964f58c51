import Glibc

/// Closures other threads hand to a reactor with ``ReactorHandle/execute(_:)``: a bounded
/// multi-producer, single-consumer queue behind one pthread mutex, drained by the reactor's
/// thread when its eventfd wakes it (the wake-up `stop()` uses too).
///
/// A pthread mutex rather than `Synchronization.Mutex`: ThreadSanitizer intercepts pthread
/// mutexes, and cannot see the futex inside the other, so it would report every access as a race.
final class WorkQueue: @unchecked Sendable {
    // @unchecked: `pending` and `closed` are touched only with `mutex` held; `running` only by
    // the reactor's thread (in `drain`).
    typealias Work = @Sendable (AnyObject) -> Void

    /// The most closures waiting at once.
    let capacity: Int
    private var pending: [Work] = []
    private var closed = false
    /// The batch being run, swapped with `pending` so that neither array is reallocated once
    /// warm and the lock is not held while closures run.
    private var running: [Work] = []
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    init(capacity: Int) {
        self.capacity = capacity
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deinitialize(count: 1)
        mutex.deallocate()
    }

    private func locked<R>(_ body: () -> R) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }

    /// Appends `work`; false when the queue is full or closed (the reactor finished).
    func submit(_ work: @escaping Work) -> Bool {
        locked {
            guard !closed, pending.count < capacity else { return false }
            pending.append(work)
            return true
        }
    }

    /// Runs, on the reactor's thread, what was queued when the call began, in queue order, with
    /// `after` after each closure. Closures queued meanwhile wait for the next wake-up (their
    /// submit signalled the eventfd again), so a closure that submits another cannot starve the loop.
    func drain(_ reactor: AnyObject, after: () -> Void) {
        locked { swap(&pending, &running) }
        for work in running {
            work(reactor)
            after()
        }
        running.removeAll(keepingCapacity: true)
    }

    /// Refuses further closures (the reactor's `run()` is returning).
    func close() { locked { closed = true } }
}
