import RESP
import XCTest

/// What resp-server's upgrade carries, read back alone: the keyspace snapshot (the process
/// state) and a connection's framer bytes (its half-read or kept requests). Both are read from
/// another process's bytes, so a malformed or hostile input must throw, never trap.
final class RespHandOverTests: XCTestCase {
    private func set(_ keyspace: Keyspace, _ key: [UInt8], _ value: [UInt8]) {
        key.withUnsafeBytes { k in value.withUnsafeBytes { v in _ = keyspace.set(k, v) } }
    }

    private func get(_ keyspace: Keyspace, _ key: [UInt8]) -> [UInt8]? {
        key.withUnsafeBytes { k in keyspace.get(k).map { Array($0) } }
    }

    private func snapshot(_ keyspace: Keyspace) -> [UInt8] {
        var bytes: [UInt8] = []
        keyspace.lock()
        keyspace.snapshot(into: &bytes)
        keyspace.unlock()
        return bytes
    }

    func testSnapshotRestoresEveryBinaryKeyAndValue() throws {
        let keyspace = Keyspace()
        var rng = SystemRandomNumberGenerator()
        var expected: [[UInt8]: [UInt8]] = [:]
        for i in 0..<10_000 {
            let key = Array("k\(i)".utf8) + [0, 13, 10, UInt8(i & 0xff)]
            let value = (0..<Int.random(in: 0...64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            set(keyspace, key, value)
            expected[key] = value
        }
        set(keyspace, [], [])  // the empty key, with an empty value
        expected[[]] = []
        let restored = Keyspace()
        restored.lock()
        try restored.restore(snapshot(keyspace)[...])
        restored.unlock()
        XCTAssertEqual(restored.count, expected.count)
        XCTAssertEqual(restored.usedBytes, keyspace.usedBytes, "--maxmemory sees the same bytes after an upgrade")
        for (key, value) in expected { XCTAssertEqual(get(restored, key), value) }
    }

    func testEveryTruncationOfASnapshotThrows() {
        let keyspace = Keyspace()
        set(keyspace, Array("a".utf8), [1, 2, 3])
        set(keyspace, Array("bb".utf8), [])
        let bytes = snapshot(keyspace)
        for cut in 0..<bytes.count {
            XCTAssertThrowsError(try Keyspace().restore(bytes.prefix(cut)), "cut at \(cut) of \(bytes.count)")
        }
        XCTAssertThrowsError(try Keyspace().restore((bytes + [0])[...]), "a byte after the snapshot")
        XCTAssertNoThrow(try Keyspace().restore(bytes[...]))
    }

    func testAbsurdCountsAndLengthsThrowWithoutAllocating() {
        // 2^64 - 1 keys announced in a 12-byte snapshot: refused before any loop.
        XCTAssertThrowsError(try Keyspace().restore(([UInt8](repeating: 0xff, count: 8) + [0, 0, 0, 0])[...])) {
            XCTAssertTrue("\($0)".contains("announces"), "\($0)")
        }
        // One key of 4 GiB - 1 bytes announced.
        XCTAssertThrowsError(try Keyspace().restore(([1, 0, 0, 0, 0, 0, 0, 0] + [0xff, 0xff, 0xff, 0xff])[...]))
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<20_000 {
            let junk = (0..<Int.random(in: 0..<48, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            _ = try? Keyspace().restore(junk[...])
        }
    }

    func testAFramerRebuiltFromItsBytesGoesOnWithTheSameRequests() {
        let stream = multibulk("SET", "k", "v") + bytes("PING\r\n") + multibulk("INCR", "n") + multibulk([bytes("SET"), bytes("bin"), [0, 13, 10]])
        let limits = RequestLimits()
        let whole = parse([stream], limits: limits).frames
        for cut in 0...stream.count {
            // One process reads `cut` bytes and stops after the first request; another goes on.
            let scratch = ParserScratch(limits: limits)
            var framer = RequestFramer()
            var seen: [Parsed] = []
            func collect(_ frame: Frame) -> FrameVerdict {
                if case .request(let r) = frame { seen.append(.request((0..<r.count).map { Array(r[$0]) })) }
                return seen.count == 1 ? .stop : .continue
            }
            _ = stream.prefix(cut).withUnsafeBytes { framer.feed($0, scratch: scratch, collect) }
            var next = RequestFramer(handOverBytes: framer.handOverBytes)
            let otherScratch = ParserScratch(limits: limits)
            _ = next.resume(scratch: otherScratch, collect)
            _ = Array(stream.dropFirst(cut)).withUnsafeBytes { next.feed($0, scratch: otherScratch, collect) }
            _ = next.resume(scratch: otherScratch, collect)  // the first request may have come only now, and stopped
            XCTAssertEqual(seen, whole, "cut at \(cut)")
            XCTAssertEqual(next.stashedBytes, 0)
        }
    }
}
