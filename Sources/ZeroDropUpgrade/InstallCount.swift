import Synchronization

/// Connections installed by the reactor threads of a new process, summed for the confirmation
/// (``TakeOver/confirm(installed:logger:beforeReady:)``).
public final class InstallCount: Sendable {
    private let count = Mutex(0)
    /// A count at 0.
    public init() {}
    /// Adds the connections one reactor installed.
    public func add(_ n: Int) { count.withLock { $0 += n } }
    /// The sum so far.
    public var value: Int { count.withLock { $0 } }
}
