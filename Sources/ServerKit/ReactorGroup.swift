import Glibc
import Reactor

/// A server's reactors after the first, one per thread, each set up (listening with
/// `reusePort`, say) on its own thread before the next starts: the multi-reactor boot every
/// server of the package shares. Reactor 0 runs on the main thread and owns the signals; it stops
/// these through ``handles``.
///
/// ```swift
/// let group = ReactorGroup()
/// try group.start(1..<count) { index in
///     let reactor = try Reactor(handler: MyHandler())
///     _ = try reactor.listen(on: bound, reusePort: true)
///     return reactor
/// }
/// try main.stop(onSignals: [SIGTERM, SIGINT], alsoStopping: group.handles)
/// main.run()
/// group.join()
/// ```
///
/// Used from the thread that owns it (the main thread) only.
public final class ReactorGroup {
    /// The started reactors' handles, in order.
    public private(set) var handles: [ReactorHandle] = []
    private var threads: [pthread_t] = []

    /// Why a reactor did not start. Those started before it are stopped and joined already.
    public enum Failure: Error, CustomStringConvertible {
        /// The system refused a thread (EAGAIN at the process's or user's thread limit).
        case noThread(index: Int)
        /// `make` threw for reactor `index`, with the error in words.
        case failed(index: Int, message: String)

        public var description: String {
            switch self {
            case .noThread(let index): return "reactor \(index): no thread could be started"
            case .failed(let index, let message): return "reactor \(index): \(message)"
            }
        }
    }

    /// An empty group.
    public init() {}

    /// Starts one reactor per index, in order: on a new thread, `make(index)` creates it and sets
    /// it up, and the thread runs it until it is stopped. Returns once every one is set up; when
    /// one fails, stops and joins those already started and throws.
    public func start<H: ConnectionHandler & SendableMetatype>(_ indices: Range<Int>,
                                                                _ make: @escaping @Sendable (Int) throws -> Reactor<H>) throws(Failure) {
        for index in indices {
            let started = ReactorStartGate()
            guard let thread = ReactorThread.spawn({
                do {
                    let reactor = try make(index)
                    started.succeed(reactor.handle)
                    reactor.run()
                } catch {
                    started.fail("\(error)")
                }
            }) else {
                stopNow()
                throw .noThread(index: index)
            }
            threads.append(thread)
            switch started.wait() {
            case .success(let handle): handles.append(handle)
            case .failure(let message):
                stopNow()
                throw .failed(index: index, message: message)
            }
        }
    }

    /// Stops every reactor at once, without waiting for slow peers, and joins the threads.
    public func stopNow() {
        handles.forEach { $0.stopNow() }
        join()
    }

    /// Waits for every reactor's thread to end (after a stop).
    public func join() {
        threads.forEach { pthread_join($0, nil) }
        threads.removeAll()
    }
}
