import Reactor

/// What a server decides in an upgrade besides its codec: which connections go, what its
/// listeners are for, its one blob of process state, and how a connection taken back after a
/// failed upgrade resumes. Every closure runs on the thread of the reactor it is given.
public struct UpgradeHooks<Handler: ConnectionHandler> {
    /// Which connections are handed over; the others stay, and are closed when this process
    /// stops. All, unless the server says otherwise.
    public var include: (Handler.ConnectionState) -> Bool = { _ in true }
    /// A listener's ``ListenerRecord/role`` (0, the service, unless the server says otherwise).
    public var listenerRole: (HandedOverListener) -> UInt8 = { _ in 0 }
    /// Runs on each reactor's thread right after its connections left (to forget what the
    /// handler kept about them outside their state).
    public var detached: (Reactor<Handler>) -> Void = { _ in }
    /// The process state to send (a keyspace, counters), made on reactor 0's thread once every
    /// reactor stopped reading; given each reactor's counters as they were when it detached.
    public var processState: (Reactor<Handler>, [ReactorStatistics]) -> [UInt8] = { _, _ in [] }
    /// A connection taken back after a failed upgrade, as it is installed again
    /// (`Reactor/installHandedOver(_:resume:)`): the place to re-arm the handler's timers.
    public var resume: ((borrowing Connection<Handler>, inout Handler.ConnectionState) -> Void)?
    /// A connection that could not be taken back (epoll refused it; it is closed without
    /// onClose): the place to give back what its state holds outside the reactor.
    public var lost: (Reactor<Handler>, Handler.ConnectionState) -> Void = { _, _ in }

    /// The defaults: every connection, every listener the service, no process state.
    public init() {}
}
