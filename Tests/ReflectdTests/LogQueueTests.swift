// The log queue in-process (NonBlockingLog): a pipe stands in for stderr, and the test decides
// when its reader reads.

import TestSupport
import Glibc
import Logging
import NonBlockingLog
import XCTest

final class LogQueueTests: XCTestCase {
    private var pipeEnds: [CInt] = [-1, -1]

    override func setUp() {
        super.setUp()
        signal(SIGPIPE, SIG_IGN)
        XCTAssertEqual(pipe(&pipeEnds), 0)
        // A small pipe (one page), so the writer blocks after a few lines.
        _ = fcntl(pipeEnds[1], 1031 /* F_SETPIPE_SZ */, 4096)
    }

    override func tearDown() {
        // The writer thread keeps the queue (and its fd) for the life of the test process; it
        // sees an error once the read end is gone and drops what is left.
        Glibc.close(pipeEnds[0])
        super.tearDown()
    }

    /// Everything readable from the pipe within `timeout`.
    private func drain(timeout: Double) -> String {
        let flags = fcntl(pipeEnds[0], F_GETFL)
        _ = fcntl(pipeEnds[0], F_SETFL, flags | O_NONBLOCK)
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        let deadline = monotonicSeconds() + timeout
        while monotonicSeconds() < deadline {
            let n = buffer.withUnsafeMutableBytes { read(pipeEnds[0], $0.baseAddress, $0.count) }
            if n > 0 { out += buffer[..<n]; continue }
            usleep(10_000)
        }
        return String(decoding: out, as: UTF8.self)
    }

    func testLogQueueDropsWhenFullCountsAndReportsWhenTheReaderReturns() {
        let queue = LogQueue(fd: pipeEnds[1], capacity: 16 * 1024, label: "test")
        queue.start()
        let line = String(repeating: "x", count: 99) + "\n"  // 100 bytes
        var accepted = 0
        let began = monotonicSeconds()
        for _ in 0..<1_000 where queue.enqueue(line) { accepted += 1 }
        XCTAssertLessThan(monotonicSeconds() - began, 0.5, "enqueue must not wait for the reader")
        // The pipe (4 KiB) and the queue (16 KiB) hold about 200 of the 1,000 lines.
        XCTAssertLessThan(accepted, 400)
        XCTAssertGreaterThan(accepted, 100)
        XCTAssertEqual(queue.droppedTotal, 1_000 - accepted)

        let text = drain(timeout: 1)
        XCTAssertEqual(text.split(separator: "\n").filter { $0 == Substring(String(repeating: "x", count: 99)) }.count, accepted,
                       "every accepted line is written, whole")
        XCTAssertTrue(text.contains("warning test: [NonBlockingLog] \(1_000 - accepted) log lines dropped"),
                      "the drop report should follow once the reader reads: \(text.suffix(300))")
        XCTAssertTrue(queue.flush(timeout: .seconds(1)))
    }

    func testFlushGivesUpAfterItsTimeoutWhileTheReaderIsStalled() {
        let queue = LogQueue(fd: pipeEnds[1], capacity: 64 * 1024, label: "test")
        queue.start()
        for i in 0..<500 { queue.enqueue("line \(i) \(String(repeating: "y", count: 80))\n") }
        let began = monotonicSeconds()
        XCTAssertFalse(queue.flush(timeout: .milliseconds(300)), "nothing reads: the queue cannot drain")
        let waited = monotonicSeconds() - began
        XCTAssertGreaterThanOrEqual(waited, 0.29)
        XCTAssertLessThan(waited, 1.0, "flush must give up at its timeout")
        _ = drain(timeout: 0.5)
        XCTAssertTrue(queue.flush(timeout: .seconds(2)), "once read, the queue drains")
        XCTAssertEqual(queue.pendingBytes, 0)
    }

    func testLinesBelowTheLevelNeverReachTheQueue() {
        let queue = LogQueue(fd: pipeEnds[1], capacity: 64 * 1024, label: "test")
        queue.start()
        let logger = Logger(label: "test") { QueuedLogHandler(label: $0, queue: queue, logLevel: .notice) }
        var evaluated = 0
        for i in 0..<10_000 {
            logger.info("open \(i) \({ evaluated += 1; return "x" }())")
        }
        XCTAssertEqual(evaluated, 0, "a filtered line's message must not even be built")
        XCTAssertEqual(queue.pendingBytes, 0)
        logger.notice("kept", metadata: ["k": "v"])
        XCTAssertTrue(queue.flush(timeout: .seconds(2)))
        let text = drain(timeout: 0.3)
        XCTAssertTrue(text.hasSuffix(" notice test: k=v [ReflectdTests] kept\n"), text)
        XCTAssertEqual(text.split(separator: "\n").count, 1)
    }
}
