// The log writer thread is created lazily, by whichever thread queues the first line (LogQueue's
// enqueue). A new thread inherits its creator's CPU affinity, so a reactor pinned to one core
// (thread-per-core, `taskset` per thread) that logs first would get the writer on its own core.
// The writer must run where the process runs: the affinity of the thread that called start().
//
// In-process: a socketpair stands in for stderr; /proc/self/task/TID/status gives each thread's
// Cpus_allowed_list.

import CEpoll
import Foundation
import Glibc
import NonBlockingLog
import XCTest

final class LogWriterAffinityTests: XCTestCase {

    private func tasks() -> Set<String> {
        Set((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? [])
    }

    /// Threads that were not in `before` and are named as the log writer names itself (other
    /// threads of the test process, such as Dispatch's workers, may come and go meanwhile).
    private func newWriters(since before: Set<String>) -> [String] {
        tasks().subtracting(before).filter { tid in
            (try? String(contentsOfFile: "/proc/self/task/\(tid)/comm", encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines) == "log-writer"
        }
    }

    private func allowedCPUs(_ tid: String) -> String? {
        guard let status = try? String(contentsOfFile: "/proc/self/task/\(tid)/status", encoding: .utf8) else { return nil }
        return status.split(separator: "\n").first { $0.hasPrefix("Cpus_allowed_list:") }
            .map { $0.dropFirst("Cpus_allowed_list:".count).trimmingCharacters(in: .whitespaces) }
    }

    func testTheWriterRunsOnTheProcessCPUsNotThoseOfTheFirstLoggingThread() throws {
        let mine = try XCTUnwrap(allowedCPUs(String(cepoll_gettid())))
        var processMask = [UInt8](repeating: 0, count: 128)
        XCTAssertGreaterThan(cepoll_getaffinity(0, &processMask, processMask.count), 0)
        let cpus = processMask.reduce(0) { $0 + $1.nonzeroBitCount }
        try XCTSkipIf(cpus < 2, "needs two CPUs to pin one thread to a single one")
        let firstCPU = processMask.enumerated().first { $0.element != 0 }
            .map { $0.offset * 8 + $0.element.trailingZeroBitCount } ?? 0

        var ends: [CInt] = [-1, -1]
        XCTAssertEqual(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0, &ends), 0)
        defer { Glibc.close(ends[0]) }
        let before = tasks()
        let queue = LogQueue(fd: ends[1], capacity: 4096, label: "affinity")
        queue.start()
        XCTAssertEqual(newWriters(since: before), [], "no line yet, so no writer")

        // A "reactor" thread pinned to one CPU logs the first line.
        let logged = DispatchSemaphore(value: 0)
        let finish = DispatchSemaphore(value: 0)
        let pinnedTID = TIDBox()
        let pinned = Thread {
            var one = [UInt8](repeating: 0, count: 128)
            one[firstCPU / 8] = UInt8(1) << UInt8(firstCPU % 8)
            XCTAssertEqual(cepoll_setaffinity(0, one, one.count), 0)
            pinnedTID.value = String(cepoll_gettid())
            queue.enqueue("first line, from a pinned thread\n")
            logged.signal()
            finish.wait()
        }
        pinned.start()
        XCTAssertEqual(logged.wait(timeout: .now() + 10), .success)
        defer { finish.signal() }

        // The line comes out: the writer exists.
        var pollFD = pollfd(fd: ends[0], events: Int16(POLLIN), revents: 0)
        XCTAssertEqual(poll(&pollFD, 1, 5000), 1)
        var buffer = [UInt8](repeating: 0, count: 256)
        let n = read(ends[0], &buffer, buffer.count)
        XCTAssertEqual(String(decoding: buffer.prefix(max(n, 0)), as: UTF8.self), "first line, from a pinned thread\n")

        let writers = newWriters(since: before)
        XCTAssertEqual(writers.count, 1, "one writer thread: \(writers)")
        for tid in writers {
            XCTAssertEqual(allowedCPUs(tid), mine,
                           "the writer inherited the pinned thread's CPU \(firstCPU) instead of the process's CPUs \(mine)")
        }
    }
}

/// The pinned thread's id, written before it signals and read after the wait.
private final class TIDBox: @unchecked Sendable {
    var value = ""
}
