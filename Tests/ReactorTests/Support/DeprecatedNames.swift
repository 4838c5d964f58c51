// The names ReactorTests' runners had before TestSupport's ReactorRunner took them over, kept as
// thin forwards so that test files written against them in branches merged after this one still
// compile. New tests use ReactorRunner; delete this file once nothing names them.

import TestSupport
import Reactor

@available(*, deprecated, message: "use ReactorRunner<Int>") typealias RunningReactor = ReactorRunner<Int>

extension ReactorRunner where Info == Int {
    /// Deprecated: ``listening(host:configuration:makeHandler:)`` (RunningReactor's name).
    static func start<H: ConnectionHandler & SendableMetatype>(
        configuration: ReactorConfiguration = ReactorConfiguration(),
        host: String = "127.0.0.1",
        makeHandler: @escaping @Sendable () -> H
    ) throws -> ReactorRunner<Int> {
        try listening(host: host, configuration: configuration, makeHandler: makeHandler)
    }
}
