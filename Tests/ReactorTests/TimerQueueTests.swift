// Unit tests of the reactor's time keeping: the timer heap and the idle wheel's arithmetic.

import XCTest
@testable import Reactor

final class TimerQueueTests: XCTestCase {
    /// The user payload of an entry, for checking which timer fired.
    private func tag(_ entry: TimerEntry?) -> Int64? {
        guard let entry, case .lingerDeadline(let id) = entry.work else { return nil }
        return Int64(id.index)
    }

    private func work(_ n: Int32) -> TimerWork { .lingerDeadline(ConnectionID(index: n, generation: 1)) }

    func testTimersFireInDeadlineOrderWhateverTheOrderAdded() {
        var queue = TimerQueue()
        for (n, deadline) in [(3, 300), (1, 100), (5, 500), (2, 200), (4, 400)] as [(Int32, Int64)] {
            _ = queue.add(deadline, interval: nil, work(n))
        }
        XCTAssertEqual(queue.earliest, 100)
        XCTAssertNil(queue.popDue(99), "nothing is due before the earliest deadline")
        var fired: [Int64] = []
        while let entry = queue.popDue(1_000) { fired.append(tag(entry)!) }
        XCTAssertEqual(fired, [1, 2, 3, 4, 5])
        XCTAssertNil(queue.earliest)
    }

    func testCancelledTimerNeverFires() {
        var queue = TimerQueue()
        let a = queue.add(100, interval: nil, work(1))
        _ = queue.add(200, interval: nil, work(2))
        queue.cancel(a)
        queue.cancel(a)  // twice is harmless
        XCTAssertEqual(tag(queue.popDue(1_000)), 2)
        XCTAssertNil(queue.popDue(1_000))
    }

    func testRepeatingTimerSkipsMissedPeriodsAfterAStall() {
        var queue = TimerQueue()
        _ = queue.add(100, interval: 10, work(7))
        // The loop was stalled until 155: one firing, then the next period after 155, not a burst.
        XCTAssertEqual(tag(queue.popDue(155)), 7)
        XCTAssertNil(queue.popDue(155))
        XCTAssertEqual(queue.earliest, 160)
        XCTAssertEqual(tag(queue.popDue(160)), 7)
        XCTAssertEqual(queue.earliest, 170)
    }

    func testCancelAndRescheduleManyTimesKeepsOnlyTheLiveOne() {
        var queue = TimerQueue()
        var last: UInt64 = 0
        for n in 0..<10_000 {
            if last != 0 { queue.cancel(last) }
            last = queue.add(Int64(1_000 + n), interval: nil, work(Int32(n % 1000)))
        }
        XCTAssertEqual(tag(queue.popDue(20_000)), 999, "only the live timer fires")
        XCTAssertNil(queue.popDue(20_000))
    }
}

final class IdleWheelTests: XCTestCase {
    func testDeadlineIsOneTimeoutPlusOneTickAfterLastActivity() {
        let wheel = IdleWheel(timeout: 30)
        XCTAssertEqual(wheel.deadline(lastActive: 0), 31)
        XCTAssertEqual(wheel.deadline(lastActive: 100), 131)
        // The tick counter wraps; the deadline wraps with it.
        XCTAssertEqual(wheel.deadline(lastActive: UInt32.max), 30)
    }

    func testADeadlineNeverLandsInTheBucketBeingProcessed() {
        for timeout in [1, 2, 7, 60] {
            let wheel = IdleWheel(timeout: timeout)
            XCTAssertEqual(wheel.heads.count, timeout + 2)
            for tick: UInt32 in 0..<200 {
                // Activity during the current tick: its deadline is timeout + 1 ticks ahead.
                XCTAssertNotEqual(wheel.bucket(wheel.deadline(lastActive: tick)), wheel.bucket(tick),
                                  "timeout \(timeout), tick \(tick)")
            }
        }
    }

    func testBucketsCoverTheWheelEvenly() {
        let wheel = IdleWheel(timeout: 3)
        XCTAssertEqual((0..<10).map { wheel.bucket($0) }, [0, 1, 2, 3, 4, 0, 1, 2, 3, 4])
    }
}

final class OutputBufferTests: XCTestCase {
    private func bytes(_ buffer: OutputBuffer) -> [UInt8] { Array(buffer.unsent) }

    func testAppendThenConsumeKeepsOrder() {
        let buffer = OutputBuffer(capacity: 8)
        ([1, 2, 3] as [UInt8]).withUnsafeBytes { buffer.append($0) }
        ([4, 5] as [UInt8]).withUnsafeBytes { buffer.append($0) }
        XCTAssertEqual(bytes(buffer), [1, 2, 3, 4, 5])
        buffer.consume(2)
        XCTAssertEqual(bytes(buffer), [3, 4, 5])
        XCTAssertEqual(buffer.count, 3)
        buffer.consume(3)
        XCTAssertTrue(buffer.isEmpty)
        XCTAssertEqual(buffer.head, 0, "an emptied buffer starts again at its beginning")
    }

    func testAppendCompactsInPlaceWhenTheSentPrefixMakesRoom() {
        let buffer = OutputBuffer(capacity: 8)
        Array(0..<8 as Range<UInt8>).withUnsafeBytes { buffer.append($0) }
        buffer.consume(5)
        let storage = buffer.storage
        ([8, 9, 10, 11] as [UInt8]).withUnsafeBytes { buffer.append($0) }
        XCTAssertEqual(bytes(buffer), [5, 6, 7, 8, 9, 10, 11])
        XCTAssertEqual(buffer.capacity, 8)
        XCTAssertEqual(buffer.storage, storage, "no reallocation when the live bytes fit")
    }

    func testAppendGrowsByDoublingWhenTheLiveBytesDoNotFit() {
        let buffer = OutputBuffer(capacity: 4)
        let payload = (0..<37).map { UInt8($0) }
        payload.withUnsafeBytes { buffer.append($0) }
        XCTAssertEqual(buffer.capacity, 64)
        XCTAssertEqual(bytes(buffer), payload)
        ([] as [UInt8]).withUnsafeBytes { buffer.append($0) }  // empty appends change nothing
        XCTAssertEqual(buffer.count, 37)
    }

    func testPoolReusesOnlyBuffersOfTheInitialSizeUpToItsLimit() {
        var pool = OutputBufferPool()
        let a = pool.take()
        XCTAssertEqual(a.capacity, OutputBufferPool.initialCapacity)
        ([1, 2, 3] as [UInt8]).withUnsafeBytes { a.append($0) }
        pool.give(a)
        let b = pool.take()
        XCTAssertTrue(a === b, "a drained buffer is reused")
        XCTAssertTrue(b.isEmpty, "and comes back empty")
        let grown = OutputBuffer(capacity: 2 * OutputBufferPool.initialCapacity)
        pool.give(grown)
        XCTAssertTrue(pool.free.isEmpty, "a grown buffer goes back to malloc")
        for _ in 0..<(OutputBufferPool.maxPooled + 5) { pool.give(OutputBuffer(capacity: OutputBufferPool.initialCapacity)) }
        XCTAssertEqual(pool.free.count, OutputBufferPool.maxPooled)
    }
}
