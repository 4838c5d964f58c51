// The PROXY protocol parser (ClientAdmission/ProxyProtocol.swift) and the per-client table
// (ClientAdmission/ClientLimit.swift), as unit tests: every header form, every split of header and data,
// every malformed form, and the table's memory bound.

import ClientAdmission
import Foundation
import Glibc
import XCTest

/// Headers as HAProxy writes them.
enum ProxyHeaders {
    static let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]

    static func v1(_ line: String) -> [UInt8] { Array(line.utf8) }

    /// A v2 PROXY header for TCP over IPv4, with `tlv` extra bytes after the addresses.
    static func v2IPv4(source: [UInt8], sourcePort: UInt16, destination: [UInt8], destinationPort: UInt16, tlv: [UInt8] = []) -> [UInt8] {
        let block = source + destination + be(sourcePort) + be(destinationPort) + tlv
        return signature + [0x21, 0x11] + be(UInt16(block.count)) + block
    }

    static func v2IPv6(source: [UInt8], sourcePort: UInt16, destination: [UInt8], destinationPort: UInt16, tlv: [UInt8] = []) -> [UInt8] {
        let block = source + destination + be(sourcePort) + be(destinationPort) + tlv
        return signature + [0x21, 0x21] + be(UInt16(block.count)) + block
    }

    /// A v2 LOCAL header (HAProxy's health checks with `check-send-proxy`).
    static func v2Local(block: [UInt8] = []) -> [UInt8] { signature + [0x20, 0x00] + be(UInt16(block.count)) + block }

    static func be(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xFF)] }

    static func ipv6(_ text: String) -> [UInt8] {
        var raw = [UInt8](repeating: 0, count: 16)
        precondition(inet_pton(AF_INET6, text, &raw) == 1)
        return raw
    }
}

final class ProxyProtocolTests: XCTestCase {
    private func parse(_ bytes: [UInt8]) -> ProxyParseResult { bytes.withUnsafeBytes { ProxyProtocol.parse($0) } }

    private func header(_ bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) -> ProxyHeader? {
        guard case .header(let h) = parse(bytes) else {
            XCTFail("not a header: \(parse(bytes)) for \(TestBytes.preview(bytes))", file: file, line: line)
            return nil
        }
        return h
    }

    /// Feeds `stream` to a reader cut at `cuts`; returns the header, the data after it, and
    /// how many segments the reader asked for more.
    private func read(_ stream: [UInt8], cuts: [Int]) -> (ProxyHeaderReader.Step?, [UInt8]) {
        var reader = ProxyHeaderReader()
        var start = 0
        var data: [UInt8] = []
        var outcome: ProxyHeaderReader.Step?
        for end in cuts + [stream.count] where end >= start {
            let segment = Array(stream[start..<end])
            start = end
            if outcome != nil { data += segment; continue }
            let step = segment.withUnsafeBytes { reader.feed($0) }
            switch step {
            case .needMore: continue
            case .invalid: return (step, data)
            case .done(_, let dataStart):
                outcome = step
                data += segment[dataStart...]
            }
        }
        return (outcome, data)
    }

    func testV1TCP4HeaderGivesClientAndBalancerAddresses() throws {
        let h = try XCTUnwrap(header(ProxyHeaders.v1("PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n")))
        XCTAssertEqual(h.version, 1)
        XCTAssertEqual(h.length, 45)
        XCTAssertEqual(h.source?.description, "192.0.2.1:56324")
        XCTAssertEqual(h.destination?.description, "198.51.100.7:443")
        XCTAssertFalse(h.isLocal)
    }

    func testV1TCP6AndUnknownHeaders() throws {
        let h6 = try XCTUnwrap(header(ProxyHeaders.v1("PROXY TCP6 2001:db8::1 ::1 65535 0\r\n")))
        XCTAssertEqual(h6.source?.description, "[2001:db8::1]:65535")
        XCTAssertEqual(h6.destination?.description, "[::1]:0")
        let unknown = try XCTUnwrap(header(ProxyHeaders.v1("PROXY UNKNOWN ffff:f...f:ffff 1.2.3.4 65535 65535\r\n")))
        XCTAssertNil(unknown.source)
        let bare = try XCTUnwrap(header(ProxyHeaders.v1("PROXY UNKNOWN\r\n")))
        XCTAssertEqual(bare.length, 15)
    }

    func testV1LongestLineIsAcceptedAndOneMoreByteIsNot() throws {
        // 107 bytes with CRLF, the spec's worst case.
        let longest = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
        XCTAssertEqual(longest.utf8.count, 107)
        XCTAssertEqual(try XCTUnwrap(header(ProxyHeaders.v1(longest))).length, 107)
        let tooLong = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 655355\r\n"
        XCTAssertEqual(parse(ProxyHeaders.v1(tooLong)), .invalid(.v1TooLong))
        // 108 bytes without a line end: no header can still come.
        XCTAssertEqual(parse(Array(("PROXY TCP4 " + String(repeating: "1", count: 97)).utf8)), .invalid(.v1TooLong))
        XCTAssertEqual(parse(Array(("PROXY TCP4 " + String(repeating: "1", count: 95)).utf8)), .incomplete)
    }

    func testMalformedV1HeadersSayWhy() {
        let cases: [(String, ProxyHeaderError)] = [
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", .v1BadLineEnd),  // LF alone never ends the line
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", .v1BadLineEnd),
            ("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", .v1BadProtocol),
            ("PROXY \r\n", .v1BadProtocol),
            ("PROXY TCP4 1.2.3.4 ::1 1 2\r\n", .v1BadAddress),
            ("PROXY TCP6 1.2.3.4 ::1 1 2\r\n", .v1BadAddress),
            ("PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", .v1BadAddress),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", .v1BadPort),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", .v1BadPort),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", .v1BadPort),
            ("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", .v1BadAddress),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", .v1BadPort),
            ("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", .notProxy),
            ("GET / HTTP/1.1\r\n", .notProxy),
        ]
        for (line, error) in cases {
            XCTAssertEqual(parse(ProxyHeaders.v1(line).prefix(200).map { $0 }), .invalid(error), line.debugDescription)
        }
    }

    func testV2IPv4AndIPv6HeadersWithTLVs() throws {
        let v4 = ProxyHeaders.v2IPv4(source: [10, 1, 2, 3], sourcePort: 4242, destination: [10, 0, 0, 1], destinationPort: 8887,
                                     tlv: [0x04, 0x00, 0x03, 1, 2, 3])
        let h4 = try XCTUnwrap(header(v4))
        XCTAssertEqual(h4.version, 2)
        XCTAssertEqual(h4.length, v4.count)
        XCTAssertEqual(h4.source?.description, "10.1.2.3:4242")
        XCTAssertEqual(h4.destination?.description, "10.0.0.1:8887")
        let v6 = ProxyHeaders.v2IPv6(source: ProxyHeaders.ipv6("2001:db8:1::5"), sourcePort: 1, destination: ProxyHeaders.ipv6("fd00::1"), destinationPort: 2)
        let h6 = try XCTUnwrap(header(v6))
        XCTAssertEqual(h6.source?.description, "[2001:db8:1::5]:1")
        XCTAssertEqual(h6.length, 16 + 36)
        // The addresses are known from the first 52 bytes; a 60 KiB TLV is skipped, not awaited.
        let huge = ProxyHeaders.v2IPv6(source: ProxyHeaders.ipv6("::2"), sourcePort: 1, destination: ProxyHeaders.ipv6("::3"), destinationPort: 2,
                                       tlv: [UInt8](repeating: 0xAB, count: 60_000))
        XCTAssertEqual(try XCTUnwrap(header(Array(huge.prefix(52)))).length, huge.count)
    }

    func testV2LocalAndAddresslessHeadersCarryNoClient() throws {
        let local = try XCTUnwrap(header(ProxyHeaders.v2Local()))
        XCTAssertTrue(local.isLocal)
        XCTAssertNil(local.source)
        XCTAssertEqual(local.length, 16)
        // LOCAL with an address block: the block is ignored, but skipped.
        XCTAssertEqual(try XCTUnwrap(header(ProxyHeaders.v2Local(block: [UInt8](repeating: 1, count: 12)))).length, 28)
        let unspec = ProxyHeaders.signature + [0x21, 0x00, 0, 0]
        XCTAssertNil(try XCTUnwrap(header(unspec)).source)
        let unix = ProxyHeaders.signature + [0x21, 0x31, 0, 216] + [UInt8](repeating: 0, count: 216)
        XCTAssertNil(try XCTUnwrap(header(unix)).source)
    }

    func testMalformedV2HeadersSayWhy() {
        let s = ProxyHeaders.signature
        XCTAssertEqual(parse(s + [0x11, 0x11, 0, 12]), .invalid(.v2BadVersion))
        XCTAssertEqual(parse(s + [0x22, 0x11, 0, 12]), .invalid(.v2BadCommand))
        XCTAssertEqual(parse(s + [0x21, 0x41, 0, 12]), .invalid(.v2BadFamily))
        XCTAssertEqual(parse(s + [0x21, 0x13, 0, 12]), .invalid(.v2BadFamily))
        XCTAssertEqual(parse(s + [0x21, 0x12, 0, 12] + [UInt8](repeating: 0, count: 12)), .invalid(.v2NotStream))
        XCTAssertEqual(parse(s + [0x21, 0x11, 0, 11] + [UInt8](repeating: 0, count: 11)), .invalid(.v2ShortAddresses))
        XCTAssertEqual(parse(s + [0x21, 0x21, 0, 12] + [UInt8](repeating: 0, count: 12)), .invalid(.v2ShortAddresses))
        var bad = s
        bad[7] = 0x52
        XCTAssertEqual(parse(bad + [0x21, 0x11, 0, 12]), .invalid(.notProxy))
    }

    /// Every strict prefix of a valid header is `incomplete`, never `invalid`: a header cut
    /// anywhere by the network is still waited for.
    func testEveryPrefixOfAValidHeaderIsIncomplete() {
        let headers = [
            ProxyHeaders.v1("PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n"),
            ProxyHeaders.v1("PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n"),
            ProxyHeaders.v2IPv4(source: [1, 2, 3, 4], sourcePort: 5, destination: [6, 7, 8, 9], destinationPort: 10),
            ProxyHeaders.v2IPv6(source: ProxyHeaders.ipv6("::1"), sourcePort: 5, destination: ProxyHeaders.ipv6("::2"), destinationPort: 10),
            ProxyHeaders.v2Local(),
        ]
        for h in headers {
            guard case .header(let full) = parse(h) else { XCTFail("\(h)"); continue }
            let decided = h[12] == 0x21 && h[0] == 0x0D ? 16 + (h[13] == 0x11 ? 12 : 36) : full.length
            for n in 0..<decided {
                XCTAssertEqual(parse(Array(h.prefix(n))), .incomplete, "prefix of \(n) bytes of \(TestBytes.preview(h))")
            }
        }
    }

    /// Header plus client data, cut at every position (and at every pair of positions): the
    /// reader finds the same header every time, and the data after it comes out whole.
    func testReaderFindsTheHeaderAndDataAtEverySplit() throws {
        let data: [UInt8] = Array("exit\nhello".utf8) + [0, 0xFF, 0x0D, 0x0A]
        let streams: [[UInt8]] = [
            ProxyHeaders.v1("PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n"),
            ProxyHeaders.v2IPv4(source: [1, 2, 3, 4], sourcePort: 5, destination: [6, 7, 8, 9], destinationPort: 10, tlv: [1, 0, 2, 9, 9]),
            ProxyHeaders.v2IPv6(source: ProxyHeaders.ipv6("2001:db8::7"), sourcePort: 5, destination: ProxyHeaders.ipv6("::2"), destinationPort: 10,
                                tlv: [UInt8](repeating: 7, count: 300)),
            ProxyHeaders.v2Local(),
        ]
        for header in streams {
            let stream = header + data
            guard case .header(let expected) = parse(header) else { XCTFail("\(header)"); continue }
            for cut in 0...stream.count {
                let (step, rest) = read(stream, cuts: [cut])
                guard case .done(let found, _) = step else { XCTFail("cut at \(cut): \(String(describing: step))"); continue }
                XCTAssertEqual(found, expected, "cut at \(cut)")
                XCTAssertEqual(rest, data, "cut at \(cut) of \(TestBytes.preview(stream))")
            }
            for a in stride(from: 0, through: stream.count, by: 3) {
                for b in a...stream.count {
                    let (step, rest) = read(stream, cuts: [a, b])
                    guard case .done(let found, _) = step else { XCTFail("cuts \(a), \(b): \(String(describing: step))"); continue }
                    XCTAssertEqual(found, expected)
                    XCTAssertEqual(rest, data, "cuts at \(a), \(b)")
                }
            }
            // One byte at a time.
            let (step, rest) = read(stream, cuts: Array(1..<stream.count))
            guard case .done(let found, _) = step else { XCTFail("bytewise: \(String(describing: step))"); continue }
            XCTAssertEqual(found, expected)
            XCTAssertEqual(rest, data)
        }
    }

    func testReaderRefusesGarbageAtItsFirstByteAndAnOverlongV1LineAt108Bytes() {
        var reader = ProxyHeaderReader()
        XCTAssertEqual(Array("HELLO".utf8).withUnsafeBytes { reader.feed($0) }, .invalid(.notProxy))
        var slow = ProxyHeaderReader()
        var last = ProxyHeaderReader.Step.needMore
        var fed = 0
        for byte in Array(("PROXY TCP4 " + String(repeating: "9", count: 200)).utf8) {
            last = [byte].withUnsafeBytes { slow.feed($0) }
            fed += 1
            if last != .needMore { break }
        }
        XCTAssertEqual(last, .invalid(.v1TooLong))
        XCTAssertEqual(fed, 107)
    }

    // MARK: the per-client table

    func testClientKeysGroupIPv6By64AndMappedIPv4AsIPv4() throws {
        XCTAssertEqual(ClientKey(host: "2001:db8:1:2::1"), ClientKey(host: "2001:db8:1:2:ffff::9"))
        XCTAssertNotEqual(ClientKey(host: "2001:db8:1:2::1"), ClientKey(host: "2001:db8:1:3::1"))
        XCTAssertEqual(ClientKey(host: "::ffff:10.1.2.3"), ClientKey(host: "10.1.2.3"))
        XCTAssertNotEqual(ClientKey(host: "::ffff:10.1.2.3"), ClientKey(host: "::ffff:10.1.2.4"))
        XCTAssertNotEqual(ClientKey(host: "10.1.2.3"), ClientKey(host: "::a01:203"))
        // An IPv6 /64 whose bytes 4-7 are ff never collides with the IPv4 tag.
        XCTAssertNotEqual(ClientKey(host: "2001:db8:ffff:ffff::1"), ClientKey(host: "0.0.0.1"))
        XCTAssertNil(ClientKey(host: "/tmp/reflectd.sock"))
        XCTAssertEqual(ClientKey(host: "2001:db8:1:2::1")?.description, "2001:db8:1:2::/64")
        XCTAssertEqual(ClientKey(host: "10.1.2.3")?.description, "10.1.2.3")
        let header = ProxyHeaders.v1("PROXY TCP4 10.1.2.3 10.0.0.1 1 2\r\n")
        guard case .header(let h) = parse(header) else { return XCTFail() }
        XCTAssertEqual(ClientKey(try XCTUnwrap(h.source)), ClientKey(host: "10.1.2.3"))
    }

    /// Issue 19.4: forged IPv6 sources whose /64, read as a 64-bit number, equals 0.2.0's key
    /// of an IPv4 client (tag ffff:ffff above the address) or other encodings of 127.0.0.1.
    func testNoIPv6SourceSharesAnIPv4ClientsKey() throws {
        let ipv4 = try XCTUnwrap(ClientKey(host: "127.0.0.1"))
        for forged in ["ffff:ffff:100:7f::", "ffff:ffff:7f00:1::", "::ffff:0:7f00:1", "7f00:1::", "::7f00:1", "::"] {
            XCTAssertNotEqual(ClientKey(host: forged), ipv4, forged)
            var bytes = ProxyHeaders.ipv6(forged)
            let key = bytes.withUnsafeMutableBytes { ClientKey(ProxyAddress(family: .ipv6, bytes: UnsafeRawBufferPointer($0), port: 1)) }
            XCTAssertNotEqual(key, ipv4, forged)
        }
        let limit = ClientLimit(maximum: 1)
        XCTAssertTrue(limit.acquire(ipv4))
        XCTAssertTrue(limit.acquire(try XCTUnwrap(ClientKey(host: "ffff:ffff:100:7f::"))), "a forged IPv6 source took 127.0.0.1's place")
        XCTAssertFalse(limit.acquire(try XCTUnwrap(ClientKey(host: "::ffff:127.0.0.1"))), "the mapped form is the same client")
    }

    /// The hand-over form: 0.2.0's single number (marker 1) for IPv4 and ordinary IPv6 /64s, and
    /// marker 2 for the multicast-looking /64s that number would confuse with IPv4.
    func testClientKeysSurviveTheHandOverForm() throws {
        for host in ["10.1.2.3", "127.0.0.1", "2001:db8:1:2::1", "ffff:ffff:100:7f::", "::1"] {
            let key = try XCTUnwrap(ClientKey(host: host))
            let (marker, value) = key.handOver
            XCTAssertEqual(ClientKey(handOverMarker: marker, value: value), key, host)
        }
        XCTAssertEqual(try XCTUnwrap(ClientKey(host: "10.1.2.3")).handOver.marker, 1)
        XCTAssertEqual(try XCTUnwrap(ClientKey(host: "ffff:ffff:100:7f::")).handOver.marker, 2)
        XCTAssertNil(ClientKey(handOverMarker: 3, value: 0))
    }

    /// Issue 19.4: every character of a v1 address is checked (inet_pton stops at a NUL).
    func testV1AddressesAreCheckedCharacterByCharacter() {
        for line in ["PROXY TCP4 9.9.9.9\u{0}junk 10.0.0.1 1 2\r\n", "PROXY TCP4 9.9.9.9\u{0} 10.0.0.1 1 2\r\n",
                     "PROXY TCP6 ::1\u{0}x ::1 1 2\r\n", "PROXY TCP4 1.2.3.4\t 5.6.7.8 1 2\r\n",
                     "PROXY TCP4 1.2.3.4 5.6.7.8\u{0} 1 2\r\n", "PROXY TCP4 0x7f.0.0.1 5.6.7.8 1 2\r\n",
                     "PROXY TCP6 fe80::1%lo ::1 1 2\r\n"] {
            XCTAssertEqual(parse(ProxyHeaders.v1(line)), .invalid(.v1BadAddress), line.debugDescription)
        }
        XCTAssertNotNil(header(ProxyHeaders.v1("PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n")))
        XCTAssertNotNil(header(ProxyHeaders.v1("PROXY TCP6 2001:DB8::A ::1 1 2\r\n")))
    }

    /// The reader counts every byte it was fed, also those of a long v2 header it skips.
    func testReaderCountsEveryByteReceived() {
        let header = ProxyHeaders.v2IPv4(source: [192, 0, 2, 1], sourcePort: 1, destination: [10, 0, 0, 1], destinationPort: 2,
                                         tlv: [UInt8](repeating: 4, count: 1_988))
        var reader = ProxyHeaderReader()
        var fed = 0
        for start in stride(from: 0, to: 1_300, by: 100) {
            let step = header[start..<min(start + 100, 1_300)].withUnsafeBytes { reader.feed($0) }
            fed += 100
            XCTAssertEqual(step, .needMore)
            XCTAssertEqual(reader.received, fed)
        }
        XCTAssertLessThanOrEqual(reader.consumed, 1_300)
    }

    func testClientLimitRefusesOneOverAndGivesPlacesBack() throws {
        let limit = ClientLimit(maximum: 2)
        let a = try XCTUnwrap(ClientKey(host: "10.0.0.1")), b = try XCTUnwrap(ClientKey(host: "10.0.0.2"))
        XCTAssertTrue(limit.acquire(a))
        XCTAssertTrue(limit.acquire(a))
        XCTAssertFalse(limit.acquire(a))
        XCTAssertTrue(limit.acquire(b))
        XCTAssertEqual(limit.rejected, 1)
        limit.release(a)
        XCTAssertTrue(limit.acquire(a))
        limit.release(a); limit.release(a); limit.release(b)
        XCTAssertEqual(limit.clients, 0, "a client with nothing open leaves the table")
    }

    /// The same for IPv6 /64s (the other table), and a refused client leaves no entry behind.
    func testClientLimitCountsAnIPv6SiteOnceAndGivesItsPlaceBack() throws {
        let limit = ClientLimit(maximum: 1)
        let a = try XCTUnwrap(ClientKey(host: "2001:db8:1:2::1")), sameSite = try XCTUnwrap(ClientKey(host: "2001:db8:1:2::ff"))
        XCTAssertTrue(limit.acquire(a))
        XCTAssertFalse(limit.acquire(sameSite), "one /64 is one client")
        XCTAssertEqual(limit.count(a), 1)
        XCTAssertEqual(limit.clients, 1)
        limit.release(sameSite)
        XCTAssertEqual(limit.count(a), 0)
        XCTAssertEqual(limit.clients, 0, "a client with nothing open leaves the table")
        XCTAssertTrue(limit.acquire(a))
    }

    /// The bound stated in ClientLimit's documentation: 100,000 distinct clients (half IPv4,
    /// half IPv6 /64s) with a connection each take at most 4 MiB of table storage
    /// (`tableBytes`, from the dictionary's capacity and element sizes, which does not depend on
    /// what else the test process does). The growth of anonymous resident memory is printed as
    /// a cross-check: it matched (3.3 MB) run alone, but other tests' threads add to it in a
    /// full suite run, so it is not asserted.
    func testClientTableOf100000ClientsStaysWithinItsMemoryBound() throws {
        let limit = ClientLimit(maximum: 1)
        let keys: [ClientKey] = (0..<100_000).map { i -> ClientKey in
            i % 2 == 0 ? ClientKey(host: "10.\(i >> 16 & 255).\(i >> 8 & 255).\(i & 255)")!
                       : ClientKey(host: "2001:db8:\(String(i >> 16, radix: 16)):\(String(i & 0xFFFF, radix: 16))::1")!
        }
        let before = try anonymousResidentBytes()
        for key in keys { XCTAssertTrue(limit.acquire(key)) }
        let after = try anonymousResidentBytes()
        XCTAssertEqual(limit.clients, 100_000)
        let bytes = after - before
        print("client table: 100000 clients take \(limit.tableBytes) bytes of storage (\(limit.tableBytes / 100_000) per client); RssAnon grew \(bytes) bytes")
        XCTAssertLessThanOrEqual(limit.tableBytes, 4 << 20)
        XCTAssertGreaterThanOrEqual(limit.tableBytes, 100_000 * 12, "the storage estimate is below what the entries need")
        for key in keys { limit.release(key) }
        XCTAssertEqual(limit.clients, 0)
    }
}

/// RssAnon from /proc/self/status, in bytes.
func anonymousResidentBytes() throws -> Int {
    let status = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
    let line = try XCTUnwrap(status.split(separator: "\n").first { $0.hasPrefix("RssAnon:") })
    let kB = try XCTUnwrap(Int(line.split(separator: " ")[1]))
    return kB * 1024
}

enum TestBytes {
    static func preview(_ bytes: [UInt8]) -> String {
        let shown = String(decoding: bytes.prefix(60), as: UTF8.self).debugDescription
        return bytes.count > 60 ? "\(shown)… (\(bytes.count) bytes)" : shown
    }
}
