// The one in-process reactor runner of the tests: a Reactor created, set up and run on a thread
// of its own (ReactorThread.spawn), the test talking to it only through its handle.

import Dispatch
import Glibc
import Reactor

/// A Reactor running on a thread of its own. The reactor is made, set up (listeners, datagram
/// sockets) and run on that thread, because a reactor belongs to the thread that runs it; what
/// the set-up returns (`Info`: a port, fds) comes back to the test.
///
/// The reactor is made by the caller, so a test target that may use the internal initialiser with
/// a syscall interposer (`@testable import Reactor`) passes it in `make`: the fault interposer is
/// optional and stays in the test target that owns it.
public final class ReactorRunner<Info: Sendable>: @unchecked Sendable {
    // @unchecked: the shared state is behind locks and semaphores.
    /// Stops the reactor, asks for statistics, runs work on its thread.
    public let handle: ReactorHandle
    /// What the set-up returned on the reactor's thread.
    public let info: Info
    private let finished: DispatchSemaphore
    private let final: Locked<ReactorStatistics?>

    private init(handle: ReactorHandle, info: Info, finished: DispatchSemaphore, final: Locked<ReactorStatistics?>) {
        self.handle = handle
        self.info = info
        self.finished = finished
        self.final = final
    }

    /// Makes a reactor with `make` and sets it up with `setUp`, both on a new thread, then runs
    /// it there. Returns once it is set up (within `timeout` seconds), or throws why it could not
    /// start.
    public static func start<H: ConnectionHandler & SendableMetatype>(
        timeout: Double = 10,
        make: @escaping @Sendable () throws -> Reactor<H>,
        setUp: @escaping @Sendable (Reactor<H>) throws -> Info
    ) throws -> ReactorRunner<Info> {
        let ready = DispatchSemaphore(value: 0)
        let finished = DispatchSemaphore(value: 0)
        let started = Locked<Result<(ReactorHandle, Info), TestFailure>?>(nil)
        let final = Locked<ReactorStatistics?>(nil)
        let thread = ReactorThread.spawn {
            let reactor: Reactor<H>
            do {
                reactor = try make()
                let info = try setUp(reactor)
                started.withLock { $0 = .success((reactor.handle, info)) }
            } catch {
                started.withLock { $0 = .failure(TestFailure("the reactor did not start: \(error)")) }
                ready.signal()
                finished.signal()
                return
            }
            ready.signal()
            reactor.run()
            let statistics = reactor.statistics
            final.withLock { $0 = statistics }
            finished.signal()
        }
        guard let thread else { throw TestFailure("no thread for the reactor") }
        pthread_detach(thread)
        guard ready.wait(timeout: .now() + timeout) == .success, let outcome = started.withLock({ $0 }) else {
            throw TestFailure("the reactor thread did not start within \(timeout) s")
        }
        let (handle, info) = try outcome.get()
        return ReactorRunner(handle: handle, info: info, finished: finished, final: final)
    }

    /// Asks the reactor to stop gracefully and waits for `run()` to return; if it does not
    /// within `timeout` seconds and `thenNow` is set, stops it at once and waits 5 s more.
    /// Returns the reactor's final statistics (read on its own thread after `run()` returned), or
    /// nil if `run()` did not return.
    @discardableResult
    public func stop(timeout: Double = 10, thenNow: Bool = false) -> ReactorStatistics? {
        handle.stop()
        if let statistics = waitForRunToReturn(timeout: timeout) { return statistics }
        guard thenNow else { return nil }
        handle.stopNow()
        return waitForRunToReturn(timeout: 5)
    }

    /// Waits for `run()` to return, without asking for a stop.
    public func waitForRunToReturn(timeout: Double) -> ReactorStatistics? {
        if let done = final.withLock({ $0 }) { return done }
        guard finished.wait(timeout: .now() + timeout) == .success else { return nil }
        finished.signal()  // later callers pass too
        return final.withLock { $0 }
    }

    /// Statistics freshly published by the reactor, polled until `condition` holds or `timeout`
    /// seconds pass. Returns the last statistics seen either way.
    public func statistics(timeout: Double = 5, until condition: (ReactorStatistics) -> Bool = { _ in true }) -> ReactorStatistics {
        let deadline = monotonicSeconds() + timeout
        while true {
            handle.requestStatistics()
            usleep(10_000)
            let last = handle.latestStatistics
            if condition(last) || monotonicSeconds() >= deadline { return last }
        }
    }
}

extension ReactorRunner where Info == Int {
    /// The port the reactor listens on.
    public var port: Int { info }

    /// A reactor with the handler `makeHandler` makes (on the reactor's thread), listening on
    /// `host` port 0.
    public static func listening<H: ConnectionHandler & SendableMetatype>(
        host: String = "127.0.0.1",
        configuration: ReactorConfiguration = ReactorConfiguration(),
        makeHandler: @escaping @Sendable () -> H
    ) throws -> ReactorRunner<Int> {
        try start(make: { try Reactor(handler: makeHandler(), configuration: configuration) },
                  setUp: { reactor in try reactor.listen(on: try SocketAddress(host: host, port: 0)).port ?? 0 })
    }
}
