// The UDP echo's rules against reflection, one by one: refused ports, refused source addresses,
// and the per-source rate limiter with its fixed-size table.

import Echo
import Glibc
import TestSupport
import XCTest
@testable import Reactor

final class DatagramSafetyTests: XCTestCase {
    /// Calls `body` with a DatagramSource for `host`:`port` (an IP literal).
    private func withSource<R>(_ host: String, _ port: Int, _ body: (DatagramSource) -> R) throws -> R {
        var storage = try TestDatagramSocket.address(host, port)
        return withUnsafePointer(to: &storage) { body(DatagramSource($0)) }
    }

    private func refusal(_ host: String, _ port: Int = 40_000, ownPort: Int? = 8887) throws -> DatagramDrop? {
        let policy = DatagramSourcePolicy(ownPort: ownPort)
        return try withSource(host, port) { policy.refusal($0) }
    }

    // MARK: ports

    func testTheDefaultRefusesOpenBSDsPorts() {
        let ports = RefusedPorts.default
        for port in [0, 1, 7, 19, 53, 123, 1023, 2049] { XCTAssertTrue(ports.contains(port), "\(port)") }
        for port in [1024, 2048, 2050, 8887, 65_535] { XCTAssertFalse(ports.contains(port), "\(port)") }
    }

    func testAListOfPortsAndRanges() throws {
        let ports = try RefusedPorts(parsing: "7, 19,100-102,65535")
        XCTAssertEqual((0...200).filter(ports.contains), [7, 19, 100, 101, 102])
        XCTAssertTrue(ports.contains(65_535))
        XCTAssertFalse(try RefusedPorts(parsing: "none").contains(7))
    }

    func testBadListsAreRefused() {
        for bad in ["70000", "5-3", "a", "1-", "-5", "1-2-3", "7,,19"] {
            XCTAssertThrowsError(try RefusedPorts(parsing: bad), bad)
        }
    }

    // MARK: sources

    func testServicePortsAndTheEchosOwnPortAreRefused() throws {
        XCTAssertEqual(try refusal("127.0.0.1", 7), .refusedPort)
        XCTAssertEqual(try refusal("127.0.0.1", 2049), .refusedPort)
        XCTAssertEqual(try refusal("10.1.2.3", 8887), .refusedPort, "the echo's own port, from any address")
        XCTAssertNil(try refusal("127.0.0.1", 1024))
        XCTAssertNil(try refusal("127.0.0.1", 8887, ownPort: nil))
    }

    func testImpossibleIPv4SourcesAreRefused() throws {
        for host in ["0.0.0.0", "0.1.2.3", "224.0.0.1", "239.255.255.250", "255.255.255.255"] {
            XCTAssertEqual(try refusal(host), .refusedAddress, host)
        }
        for host in ["127.0.0.1", "10.0.0.1", "192.168.1.255", "223.255.255.255", "1.0.0.0"] {
            XCTAssertNil(try refusal(host), host)
        }
    }

    func testImpossibleIPv6SourcesAndMappedOnesAreRefused() throws {
        for host in ["ff02::1", "ff0e::abcd", "::", "::ffff:224.0.0.1", "::ffff:0.0.0.0", "::ffff:255.255.255.255"] {
            XCTAssertEqual(try refusal(host), .refusedAddress, host)
        }
        for host in ["::1", "2001:db8::1", "fe80::1", "::ffff:127.0.0.1"] {
            XCTAssertNil(try refusal(host), host)
        }
    }

    // MARK: rate limit

    func testASourceGetsItsBurstThenItsRate() throws {
        let limiter = SourceRateLimiter(rate: 100)
        let second: Int64 = 1_000_000_000
        try withSource("192.0.2.1", 5000) { source in
            let t0 = 10 * second
            XCTAssertEqual((0..<150).filter { _ in limiter.admit(source, now: t0) }.count, 100, "a burst of exactly the rate")
            XCTAssertFalse(limiter.admit(source, now: t0 + second / 200), "half a token after 5 ms")
            XCTAssertTrue(limiter.admit(source, now: t0 + second / 100), "one token after 10 ms")
            XCTAssertEqual((0..<150).filter { _ in limiter.admit(source, now: t0 + 10 * second) }.count, 100, "refilled, never past the burst")
        }
    }

    func testAnIPv6SlashSixtyFourIsOneSource() throws {
        let limiter = SourceRateLimiter(rate: 2)
        let now: Int64 = 1_000_000_000
        XCTAssertTrue(try withSource("2001:db8:1:2::1", 5000) { limiter.admit($0, now: now) })
        XCTAssertTrue(try withSource("2001:db8:1:2::ffff", 5000) { limiter.admit($0, now: now) })
        XCTAssertFalse(try withSource("2001:db8:1:2:abcd::9", 6000) { limiter.admit($0, now: now) }, "same /64, third datagram")
        XCTAssertTrue(try withSource("2001:db8:1:3::1", 5000) { limiter.admit($0, now: now) }, "another /64")
        XCTAssertTrue(try withSource("::ffff:192.0.2.1", 5000) { limiter.admit($0, now: now) }, "a mapped IPv4 address is its own source")
    }

    func testAMillionDistinctSourcesStayWithinTheTable() {
        let limiter = SourceRateLimiter(rate: 10)
        let bytes = limiter.tableBytes
        XCTAssertEqual(limiter.capacity, SourceRateLimiter.defaultCapacity)
        XCTAssertEqual(bytes, SourceRateLimiter.defaultCapacity * SourceRateLimiter.entrySize)
        let count = 1_000_000
        var admitted = 0
        let start = monotonicSeconds()
        for i in 0..<count {
            // Distinct IPv4 keys, as a flood of forged sources would give.
            if limiter.admit(key: 0xFFFF_FFFF_0000_0000 | UInt64(i), now: 1_000_000_000) { admitted += 1 }
        }
        let nanoseconds = (monotonicSeconds() - start) * 1e9 / Double(count)
        print("SourceRateLimiter: \(String(format: "%.1f", nanoseconds)) ns per admit of a new source (debug build), table \(bytes) B")
        XCTAssertEqual(admitted, count, "every new source has its burst")
        XCTAssertLessThanOrEqual(limiter.occupied, limiter.capacity)
        XCTAssertEqual(limiter.occupied, limiter.capacity, "the flood filled the table and then evicted")
        XCTAssertEqual(limiter.tableBytes, bytes, "the table never grows")
    }

    func testALimitedSourceKeepsItsStateWhileOthersComeAndGo() {
        // 8,191 other sources fit beside it in the table's sets only by chance, so use fewer:
        // a few hundred others leave a source's entry (the most recent in its set) in place.
        let limiter = SourceRateLimiter(rate: 5)
        let victim: UInt64 = 0xFFFF_FFFF_C000_0201
        let now: Int64 = 5_000_000_000
        XCTAssertEqual((0..<10).filter { _ in limiter.admit(key: victim, now: now) }.count, 5)
        for i in 0..<300 { _ = limiter.admit(key: 0xFFFF_FFFF_0A00_0000 | UInt64(i), now: now) }
        XCTAssertFalse(limiter.admit(key: victim, now: now), "still over its rate")
    }
}
