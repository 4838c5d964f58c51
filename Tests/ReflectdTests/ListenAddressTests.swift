// Listening addresses: IPv6 loopback, and a dual-stack host reachable over IPv4 and IPv6.
//
// Through the built `reflectd` on loopback: every socket operation and wait has a deadline, and
// tearDown (ServerTestCase) kills whatever a test left running.

import TestSupport
import Foundation
import Glibc
import XCTest

final class ListenAddressTests: ServerTestCase {

    func testIPv6LoopbackEcho() throws {
        try XCTSkipUnless(LoopbackSockets.ipv6Available(), "no IPv6 loopback (::1) on this machine")
        let server = try start(["--host", "::1", "--port", "0"])
        let address = try server.waitForListening(count: 1)[0]
        XCTAssertTrue(address.hasPrefix("[::1]:"), "startup line should show the IPv6 address: \(address)")
        let port = try XCTUnwrap(LoopbackSockets.port(of: address))
        let client = try TestSocket.connect(host: "::1", port: port)
        try client.expectEcho("hello over IPv6\n")
        try client.expectEcho(String(repeating: "v6", count: 20_000) + "\n")
    }

    func testDualStackHostIsReachableOverIPv4AndIPv6() throws {
        try XCTSkipUnless(LoopbackSockets.ipv6Available(), "no IPv6 loopback (::1) on this machine")
        let server = try start(["--host", "::", "--port", "0"])
        let address = try server.waitForListening(count: 1)[0]
        let port = try XCTUnwrap(LoopbackSockets.port(of: address))
        let v4 = try TestSocket.connect(host: "127.0.0.1", port: port)
        let v6 = try TestSocket.connect(host: "::1", port: port)
        try v4.expectEcho("via 127.0.0.1\n")
        try v6.expectEcho("via ::1\n")
    }
}
