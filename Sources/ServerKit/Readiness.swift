import Synchronization

/// Whether this process wants new clients: what `GET /readyz` on the metrics listener answers.
///
/// Ready from the start; not ready, for good, from the moment the first stop signal (SIGTERM,
/// SIGINT, SIGQUIT) arrives, while the connections drain. That includes a stop that an upgrade
/// defers (Upgrader.stopRequested): the stop is coming whichever process ends up holding the
/// connections, and a balancer should stop sending new clients at once. A process that took over
/// through an upgrade starts ready; a stop forwarded to it makes it not ready in turn.
///
/// Set on reactor 0's thread (the signal handler) and read there too (the metrics endpoint lives on
/// reactor 0), so the atomic is not needed today; it keeps the type safe to read from anywhere.
public final class Readiness: Sendable {
    private let stopping = Atomic<Bool>(false)

    /// Ready, until ``stopRequested()``.
    public init() {}

    /// False once a stop signal arrived.
    public var isReady: Bool { !stopping.load(ordering: .acquiring) }

    /// A stop signal arrived: `/readyz` answers 503 from now on.
    public func stopRequested() { stopping.store(true, ordering: .releasing) }
}
