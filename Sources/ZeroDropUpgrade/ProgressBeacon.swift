import Dispatch
import Glibc
import Reactor
import Synchronization

/// `progress` reports (``UpgradeWire``), from the new process while it receives and restores,
/// and from the old one while the server writes its process state. The new process's: a
/// thread of its own sends one every `interval`, but only when the hand-over advanced since the
/// last one (``advance()``: a message fed, a connection state read) or while the server's
/// process-state closure runs (``restoring``: the library cannot see inside it, so there the
/// report says the process is alive, and ``Upgrader/handOverLimit`` bounds a restore that
/// never ends). A new process stuck anywhere else goes silent, and the old one gives up.
final class ProgressBeacon: @unchecked Sendable {
    private let channel: HandOverChannel
    private let interval: Duration
    private let work = Atomic<Int>(0)
    /// The server's process-state closure runs.
    let restoring = Atomic<Bool>(false)
    private let stopped = DispatchSemaphore(value: 0)
    private let done = DispatchSemaphore(value: 0)
    private var thread: pthread_t?

    /// Starts reporting on `channel` every `interval` (nil, and nothing is sent, when the thread
    /// cannot start: the old process then waits on silence as before).
    init(channel: HandOverChannel, interval: Duration) {
        self.channel = channel
        self.interval = interval
        thread = ReactorThread.spawn { [self] in loop() }
    }

    /// The hand-over advanced (cheap: one atomic add).
    func advance() { work.add(1, ordering: .relaxed) }

    /// Stops the reports and waits for the thread (before `ready` or `refuse` is sent).
    func stop() {
        guard let thread else { return }
        stopped.signal()
        pthread_join(thread, nil)
        self.thread = nil
    }

    private func loop() {
        var seen = 0
        var sent = 0
        let wait = Int(interval / .microseconds(1))
        while stopped.wait(timeout: .now() + .microseconds(wait)) == .timedOut {
            let now = work.load(ordering: .relaxed)
            guard now != seen || restoring.load(ordering: .relaxed) else { continue }
            seen = now
            let message = UpgradeWriter(.progress, count: sent)
            // A failed send (the old process gone or not reading for the send timeout) ends
            // the reports; the main thread sees the socket's state itself.
            guard (try? channel.send(message.bytes)) != nil else { return }
            sent += 1
        }
    }
}
