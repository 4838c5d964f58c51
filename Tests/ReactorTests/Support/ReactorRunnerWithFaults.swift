// TestSupport's ReactorRunner with the fault interposer: the Reactor initialiser that takes a
// SyscallInterposer is internal, so a runner that may use it is made here (`@testable import`).

import TestSupport
@testable import Reactor

extension ReactorRunner where Info == Int {
    /// A reactor with the handler `makeHandler` makes, the syscall interposer `interposer` (none:
    /// the real calls), listening on `host` port 0.
    static func listening<H: ConnectionHandler & SendableMetatype>(
        host: String = "127.0.0.1",
        configuration: ReactorConfiguration = ReactorConfiguration(),
        interposer: FaultInterposer?,
        makeHandler: @escaping @Sendable () -> H
    ) throws -> ReactorRunner<Int> {
        try start(make: { try Reactor(handler: makeHandler(), configuration: configuration, interposer: interposer) },
                  setUp: { reactor in try reactor.listen(on: try SocketAddress(host: host, port: 0)).port ?? 0 })
    }
}
