import Synchronization

/// A cap on open connections, shared by any number of reactors (one process-wide count).
///
/// Taking a place is one atomic operation per accepted connection, never per message.
public final class ConnectionLimit: Sendable {
    /// The most connections open at once.
    public let maximum: Int
    private let current = Atomic<Int>(0)

    /// A limit of `maximum` open connections.
    public init(maximum: Int) {
        precondition(maximum > 0, "a connection limit must be positive")
        self.maximum = maximum
    }

    /// Connections holding a place now.
    public var count: Int { current.load(ordering: .relaxed) }

    /// Takes a place for a new connection; false when the limit is reached.
@usableFromInline
    func acquire() -> Bool {
        var value = current.load(ordering: .relaxed)
        while value < maximum {
            let (exchanged, original) = current.compareExchange(
                expected: value, desired: value + 1, ordering: .relaxed)
            if exchanged { return true }
            value = original
        }
        return false
    }

    /// Takes a place even past the maximum: for a connection that exists already (handed over
    /// from another process, see HandOver.swift).
    func forceAcquire() { current.add(1, ordering: .relaxed) }

@usableFromInline
    func release() { current.subtract(1, ordering: .relaxed) }
}
