// Connection.localAddress: the address and port the peer reached.
//
// An in-process reactor (TestSupport's ReactorRunner) running Support/RecordingHandler.swift on
// 127.0.0.1, with real loopback clients.

import TestSupport
import CEpoll
import Foundation
import Glibc
import SystemPackage
import XCTest
@testable import Reactor

final class LocalAddressTests: XCTestCase {

    func testLocalAddressIsTheAddressAndPortThePeerReached() throws {
        let (reactor, _, locals) = try recording()
        let client = try TestSocket.connect(port: reactor.port)
        XCTAssertTrue(eventually { locals.withLock { $0.count } == 1 })
        XCTAssertEqual(locals.withLock { $0 }, ["127.0.0.1:\(reactor.port)"])
        client.close()
        XCTAssertNotNil(reactor.stop())
    }
}
