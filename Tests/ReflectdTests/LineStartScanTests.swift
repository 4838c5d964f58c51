// The scan that finds where an exit line can start (`\n` followed by `e`), in both versions:
// the AVX2 one in C (module CScan, chosen at run time) and the portable 16-byte Swift loop,
// each checked against a byte-by-byte reference at every length, offset and start position
// near the vector widths, and against a page it must not read.

import CScan
@testable import Echo
import Glibc
import XCTest

final class LineStartScanTests: XCTestCase {
    /// The rule, one byte at a time.
    private static func reference(_ bytes: UnsafePointer<UInt8>, _ n: Int, from: Int) -> Int? {
        var q = from
        while q + 1 < n {
            if bytes[q] == UInt8(ascii: "\n") && bytes[q + 1] == UInt8(ascii: "e") { return q }
            q += 1
        }
        return nil
    }

    /// The versions this CPU can run, by name.
    private static var scans: [(String, (UnsafePointer<UInt8>, Int, Int) -> Int?)] {
        var all: [(String, (UnsafePointer<UInt8>, Int, Int) -> Int?)] = [("narrow", { LineStartScan.narrow($0, $1, from: $2) })]
        if cscan_has_avx2() != 0 { all.append(("avx2", { LineStartScan.wide($0, $1, from: $2) })) }
        all.append(("dispatch", { LineStartScan.newlineBeforeE($0, $1, from: $2) }))
        return all
    }

    func testThisX86CPUUsesTheAVX2Scan() throws {
        #if arch(x86_64)
        var cpuHasAVX2 = false
        if let flags = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) {
            cpuHasAVX2 = flags.split(separator: "\n").first { $0.hasPrefix("flags") }?
                .split(separator: " ").contains("avx2") ?? false
        }
        XCTAssertEqual(cscan_has_avx2() != 0, cpuHasAVX2, "__builtin_cpu_supports(\"avx2\") disagrees with /proc/cpuinfo")
        #else
        XCTAssertEqual(cscan_has_avx2(), 0, "only x86-64 has the AVX2 scan")
        #endif
    }

    /// One `\ne` at every position of every segment length up to past two 64-byte steps, found
    /// from every start before it, after it (not found) and on it.
    func testOneLineStartAtEveryPositionLengthAndStart() {
        let capacity = 200
        let buffer = UnsafeMutablePointer<UInt8>.allocate(capacity: capacity)
        defer { buffer.deallocate() }
        for (name, scan) in Self.scans {
            for n in 0...160 {
                for p in 0..<max(0, n - 1) {
                    // Bytes either half of the pair, so a scan that checks only one half fails.
                    for i in 0..<capacity { buffer[i] = i % 3 == 0 ? UInt8(ascii: "e") : (i % 3 == 1 ? 0 : UInt8(ascii: "x")) }
                    buffer[p] = UInt8(ascii: "\n")
                    buffer[p + 1] = UInt8(ascii: "e")
                    // A pair just past the segment must not be found.
                    if n + 1 < capacity { buffer[n - 1] = UInt8(ascii: "\n"); buffer[n] = UInt8(ascii: "e") }
                    for from in [0, 1, p > 0 ? p - 1 : 0, p, p + 1, max(0, n - 2), n] where from <= n {
                        let expected = Self.reference(buffer, n, from: from)
                        let got = scan(buffer, n, from)
                        if got != expected {
                            XCTFail("\(name): n=\(n) pair at \(p) from=\(from): got \(String(describing: got)), expected \(String(describing: expected))")
                            return
                        }
                    }
                }
            }
        }
    }

    /// Random segments dense in `\n` and `e`, every hit found in order by walking the scan.
    func testRandomDenseSegmentsMatchTheReference() {
        var rng = SystemRandomNumberGenerator()
        let alphabet: [UInt8] = [UInt8(ascii: "\n"), UInt8(ascii: "e"), UInt8(ascii: "x"), 0, 0xFF]
        for round in 0..<400 {
            let n = round < 300 ? Int.random(in: 0...300, using: &rng) : Int.random(in: 1_000...70_000, using: &rng)
            // Sparse or dense: the sparse ones make the scan run whole 64-byte steps.
            let dense = Bool.random(using: &rng)
            var bytes = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            if dense { for i in bytes.indices { bytes[i] = alphabet.randomElement(using: &rng)! } }
            bytes.withUnsafeBufferPointer { b in
                guard let base = b.baseAddress else { return }
                var expected: [Int] = []
                var q = 0
                while let hit = Self.reference(base, n, from: q) { expected.append(hit); q = hit + 1 }
                for (name, scan) in Self.scans {
                    var found: [Int] = []
                    var from = 0
                    while let hit = scan(base, n, from) { found.append(hit); from = hit + 1 }
                    XCTAssertEqual(found, expected, "\(name): n=\(n) dense=\(dense)")
                }
            }
        }
    }

    /// Segments that end on the last byte before an unreadable page: a scan that loads past the
    /// end of its segment crashes the test process here.
    func testScanNeverReadsPastTheSegmentEnd() throws {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        guard let mapping = mmap(nil, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              mapping != MAP_FAILED else { throw XCTSkip("mmap failed") }
        defer { munmap(mapping, 2 * page) }
        XCTAssertEqual(mprotect(mapping + page, page, PROT_NONE), 0)
        let end = mapping.assumingMemoryBound(to: UInt8.self) + page
        memset(mapping, 0x41, page)
        for (name, scan) in Self.scans {
            for n in [0, 1, 2, 16, 17, 31, 32, 33, 63, 64, 65, 66, 100, 129, page] {
                let start = end - n
                XCTAssertNil(scan(start, n, 0), "\(name): n=\(n)")
                if n >= 2 {
                    start[n - 2] = UInt8(ascii: "\n"); start[n - 1] = UInt8(ascii: "e")
                    XCTAssertEqual(scan(start, n, 0), n - 2, "\(name): n=\(n), pair at the last two bytes")
                    start[n - 2] = 0x41; start[n - 1] = 0x41
                }
            }
        }
    }
}
