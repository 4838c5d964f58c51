// --proxy-protocol-from's list (issue 19.3): addresses and CIDR prefixes, IPv4 and IPv6, with
// IPv4-mapped peers matched as IPv4, and every malformed entry refused with its reason.

import ClientAdmission
import Reactor
import XCTest

final class AddressPrefixListTests: XCTestCase {
    private func list(_ text: String) throws -> AddressPrefixList { try AddressPrefixList(parsing: text) }

    func testAddressesAndPrefixesOfBothFamilies() throws {
        let trusted = try list("127.0.0.1, 10.0.0.0/8,192.168.4.0/22,2001:db8::/32,::1")
        for host in ["127.0.0.1", "10.0.0.1", "10.255.255.255", "192.168.7.255", "2001:db8::1", "2001:db8:ffff::9", "::1",
                     "::ffff:10.9.8.7", "::ffff:127.0.0.1"] {
            XCTAssertTrue(trusted.contains(host: host), host)
        }
        for host in ["127.0.0.2", "11.0.0.1", "192.168.8.0", "2001:db9::1", "::2", "::ffff:11.0.0.1", "::a00:1", "example.com", ""] {
            XCTAssertFalse(trusted.contains(host: host), host)
        }
        XCTAssertEqual(trusted.description, "127.0.0.1,10.0.0.0/8,192.168.4.0/22,2001:db8::/32,::1")
    }

    func testZeroLengthPrefixesMatchTheirWholeFamilyOnly() throws {
        let anyIPv4 = try list("0.0.0.0/0")
        XCTAssertTrue(anyIPv4.contains(host: "203.0.113.9"))
        XCTAssertFalse(anyIPv4.contains(host: "2001:db8::1"))
        let anyIPv6 = try list("::/0")
        XCTAssertTrue(anyIPv6.contains(host: "2001:db8::1"))
        XCTAssertFalse(anyIPv6.contains(host: "203.0.113.9"), "an IPv4 peer is not in ::/0")
    }

    func testPeersAsTheReactorSeesThem() throws {
        let trusted = try list("127.0.0.1,::1")
        XCTAssertTrue(trusted.contains(try SocketAddress(host: "127.0.0.1", port: 9)))
        XCTAssertTrue(trusted.contains(try SocketAddress(host: "::1", port: 9)))
        XCTAssertTrue(trusted.contains(try SocketAddress(host: "::ffff:127.0.0.1", port: 9)))
        XCTAssertFalse(trusted.contains(try SocketAddress(host: "127.0.0.2", port: 9)))
        XCTAssertTrue(trusted.contains(try SocketAddress(unixPath: "/run/reflectd.sock")), "Unix peers are local")
        XCTAssertTrue(trusted.isLoopbackOnly)
        XCTAssertFalse(try list("127.0.0.0/8,10.0.0.1").isLoopbackOnly)
    }

    func testMalformedEntriesSayWhy() {
        for (text, words) in [("10.0.0.1/8", "bits set past /8"), ("2001:db8::1/32", "bits set past /32"),
                              ("10.0.0.0/33", "0 to 32"), ("::/129", "0 to 128"), ("10.0.0.0/-1", "0 to 32"),
                              ("10.0.0.0/8/8", "not an address"), ("10.0.0.0/", "0 to 32"), ("10.0.0.0/x", "0 to 32"),
                              ("", "empty entry"), ("127.0.0.1,", "empty entry"), ("localhost", "not an IPv4 or IPv6"),
                              ("1.2.3", "not an IPv4 or IPv6"), ("fe80::1%eth0", "not an IPv4 or IPv6")] {
            XCTAssertThrowsError(try list(text), text) { error in
                XCTAssertTrue("\(error)".contains(words), "\(text): \(error)")
            }
        }
    }
}
