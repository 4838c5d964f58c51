// A thin forward to TestSupport's ReactorRunner under the name LifecycleScenarioTests still uses
// (that file is being rewritten in parallel; new tests use ReactorRunner directly). Delete it once
// nothing names it.

import TestSupport
@testable import Reactor

/// Deprecated: use `ReactorRunner.listening(configuration:interposer:makeHandler:)`. A reactor with
/// any handler (and optionally a fault interposer) on its own thread, listening on 127.0.0.1.
final class ThreadedReactor<H: ConnectionHandler & SendableMetatype>: Sendable {
    let runner: ReactorRunner<Int>
    var handle: ReactorHandle { runner.handle }
    var port: Int { runner.port }

    init(configuration: ReactorConfiguration = ReactorConfiguration(), interposer: FaultInterposer? = nil,
         makeHandler: @escaping @Sendable () -> H) throws {
        runner = try ReactorRunner.listening(configuration: configuration, interposer: interposer, makeHandler: makeHandler)
    }

    /// Stops the reactor and waits for run() to return.
    @discardableResult
    func stop(timeout: Double = 10) -> Bool { runner.stop(timeout: timeout) != nil }

    deinit { handle.stopNow() }
}
