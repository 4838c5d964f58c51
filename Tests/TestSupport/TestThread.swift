// A thread for a test, joined with a deadline.

import Dispatch
import Foundation

/// Runs `body` on a new thread; `join` waits for it with a deadline.
public final class TestThread: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)

    /// Starts `body` on a new thread.
    public init(_ body: @escaping @Sendable () -> Void) {
        let done = self.done
        let thread = Thread {
            body()
            done.signal()
        }
        thread.start()
    }

    /// True if the thread finished within `timeout` seconds.
    public func join(timeout: Double) -> Bool {
        done.wait(timeout: .now() + timeout) == .success
    }
}
