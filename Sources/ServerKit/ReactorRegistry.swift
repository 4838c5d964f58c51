import Reactor
import Synchronization

/// The reactors of this process, for the metrics endpoint to sum and the signal handler to stop.
public final class ReactorRegistry: Sendable {
    private let handles = Mutex<[ReactorHandle]>([])

    /// An empty registry.
    public init() {}

    /// Adds a started reactor's handle.
    public func add(_ handle: ReactorHandle) { handles.withLock { $0.append(handle) } }
    /// Every handle, in the order added (reactor 0 first).
    public var all: [ReactorHandle] { handles.withLock { $0 } }
}
