// The names ReflectdTests' support code had before TestSupport took it over, kept as thin
// forwards so that test files written against them in branches merged after this one still
// compile. New tests use the names these forward to; delete this file once nothing names them.

import Foundation
import TestSupport

@available(*, deprecated, renamed: "TestSocket") typealias OpsClient = TestSocket
@available(*, deprecated, renamed: "TestProcess") typealias OpsProcess = TestProcess
@available(*, deprecated, renamed: "TestProcess") typealias ServerProcess = TestProcess
@available(*, deprecated, renamed: "TestProcess.End") typealias ExitStatus = TestProcess.End
@available(*, deprecated, renamed: "ProcessOutput") typealias OpsOutput = ProcessOutput
@available(*, deprecated, renamed: "TestListener") typealias OpsListener = TestListener
@available(*, deprecated, renamed: "TestFailure") typealias OpsFailure = TestFailure
@available(*, deprecated, renamed: "ClientCrowd") typealias OpsCrowd = ClientCrowd
@available(*, deprecated, renamed: "LoopbackSockets") typealias OpsSockets = LoopbackSockets
@available(*, deprecated, renamed: "StreamEnd") typealias OpsStreamEnd = StreamEnd
@available(*, deprecated, renamed: "MetricsScrape") typealias OpsMetrics = MetricsScrape
@available(*, deprecated, renamed: "MetricsHTTP") typealias OpsHTTP = MetricsHTTP

extension StreamEnd {
    /// Deprecated: `.timeout` (the deadline passed with the stream still open).
    static var stillOpen: StreamEnd { .timeout }
}

/// Deprecated: the functions these forward to.
enum Ops {
    static func now() -> Double { monotonicSeconds() }
    static func waitUntil(timeout: Double, interval: Double = 0.02, _ condition: () throws -> Bool) rethrows -> Bool {
        try eventually(timeout: timeout, interval: interval, condition)
    }
    static func reflectdPath() throws -> String { try TestProcess.binaryPath("reflectd") }
    @discardableResult static func raiseFileLimit() -> Int { FileLimit.raise() }
    static var hardFileLimit: Int { FileLimit.hard }
    static func ipv6LoopbackAvailable() -> Bool { LoopbackSockets.ipv6Available() }
    static func unusedPort() throws -> Int { try LoopbackSockets.unusedPort() }
    static func somethingListens(host: String, port: Int) -> Bool { LoopbackSockets.somethingListens(host: host, port: port) }
    static func port(of address: String) -> Int? { LoopbackSockets.port(of: address) }
}

extension TestProcess {
    /// Deprecated: ``waitForListeningLine(timeout:)`` (ServerProcess's name).
    func waitForListening(timeout: Double = 10) throws -> (line: String, port: Int) { try waitForListeningLine(timeout: timeout) }
    /// Deprecated: ``spawn(_:_:environment:inheritedListeners:input:stderr:)`` with `stderr: .paused`.
    static func spawn(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                      inheritedListeners: [CInt] = [], stderrPaused: Bool) throws -> TestProcess {
        try spawn(executable, arguments, environment: environment, inheritedListeners: inheritedListeners,
                  stderr: stderrPaused ? .paused : .collected)
    }
    /// Deprecated: ``spawn(_:_:environment:inheritedListeners:input:stderr:)`` (ServerProcess's name).
    static func launch(_ executable: String, _ arguments: [String]) throws -> TestProcess { try spawn(executable, arguments) }
    /// Deprecated: ``binaryPath(_:)`` of reflectd.
    static func reflectdPath() throws -> String { try binaryPath("reflectd") }
    /// Deprecated: the process itself (ServerProcess wrapped an OpsProcess here).
    var process: TestProcess { self }
}
