// The connection limit counts accepted connections only.

import Glibc
import TestSupport
import XCTest

@testable import Reactor

struct QuietHandler: ConnectionHandler {}

final class ConnectionLimitTests: XCTestCase {
    func testOutboundConnectionsNeitherTakeNorGiveBackLimitPlaces() throws {
        let limit = ConnectionLimit(maximum: 1)
        var configuration = ReactorConfiguration()
        configuration.connectionLimit = limit
        let reactor = try Reactor(handler: QuietHandler(), configuration: configuration)
        let bound = try reactor.listen(on: try SocketAddress(host: "127.0.0.1", port: 0))
        let remote = try TestListener()
        let outbound = try reactor.connect(to: try SocketAddress(host: "127.0.0.1", port: remote.port))
        var countAfterOutboundClose = -99
        var secondInboundEnded: StreamEnd?
        let first = try TestSocket.connect(port: bound.port ?? 0)
        reactor.schedule(after: .milliseconds(200)) {
            reactor.context.close(outbound, reason: CloseReason("done"), discardingOutput: true)
        }
        reactor.schedule(after: .milliseconds(400)) {
            countAfterOutboundClose = limit.count
        }
        reactor.schedule(after: .milliseconds(500)) {
            // The one place is taken by `first`: a second inbound connection must be refused.
            if let second = try? TestSocket.connect(port: bound.port ?? 0) {
                reactor.schedule(after: .milliseconds(300)) {
                    secondInboundEnded = second.receiveUntilEnd(timeout: 0.1).end
                    second.close()
                }
            }
        }
        reactor.schedule(after: .milliseconds(1_000)) { reactor.handle.stop() }
        reactor.run()
        first.close()
        XCTAssertEqual(countAfterOutboundClose, 1, "an outbound connection gave back a place it never took")
        XCTAssertEqual(secondInboundEnded, .eof, "a connection over the limit was not refused")
        XCTAssertEqual(reactor.statistics.rejectedByLimit, 1)
    }
}
