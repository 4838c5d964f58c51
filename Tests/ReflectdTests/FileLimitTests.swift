// File descriptors: the soft limit raised at startup, --max-connections beyond the limit, and
// running out of fds without spinning.
//
// Through the built `reflectd` on loopback: every socket operation and wait has a deadline, and
// tearDown (ServerTestCase) kills whatever a test left running.

import Foundation
import Glibc
import XCTest
import TestSupport
import Synchronization

final class FileLimitTests: ServerTestCase {

    /// Reads what each of `candidates` has received into `received`, until `target` of them
    /// have their whole `expected` echo, or `timeout` passes, or (with `settle`) nothing new
    /// completed for `settle` seconds. Returns the indices whose echo is complete.
    private func collectEchoes(_ clients: [TestSocket], expected: [[UInt8]], candidates: [Int], received: inout [[UInt8]],
                               target: Int, timeout: Double, settle: Double? = nil) -> Set<Int> {
        var complete = Set(candidates.filter { received[$0] == expected[$0] })
        let deadline = monotonicSeconds() + timeout
        var lastChange = monotonicSeconds()
        while complete.count < target && monotonicSeconds() < deadline {
            for i in candidates where !complete.contains(i) {
                guard let chunk = try? clients[i].receiveNow(), !chunk.isEmpty else { continue }
                received[i] += chunk
                if received[i] == expected[i] {
                    complete.insert(i)
                    lastChange = monotonicSeconds()
                }
            }
            if let settle, !complete.isEmpty, monotonicSeconds() - lastChange > settle { break }
            usleep(10_000)
        }
        return complete
    }

    func testSoftFdLimitOf1024IsRaisedSoThreeThousandClientsAllEcho() throws {
        let hard = FileLimit.hard
        try XCTSkipUnless(hard >= 4_000, "needs a hard fd limit of at least 4,000, have \(hard)")
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: "/usr/bin/prlimit"), "needs prlimit (util-linux)")
        // The clients' 3,000 fds are this process's: raise its own soft limit.
        XCTAssertGreaterThanOrEqual(FileLimit.raise(), 3_500)
        let server = track(try TestProcess.spawn("/usr/bin/prlimit", ["--nofile=1024:\(hard)", try TestProcess.binaryPath("reflectd"),
                                                                     "--host", "127.0.0.1", "--port", "0", "--log-level", "notice"]))
        let port = try server.waitForTCPPort()
        waitForLog(server, "fd limit \(hard) (soft limit raised from 1024 to the hard limit): room for ")
        let limits = try String(contentsOfFile: "/proc/\(server.pid)/limits", encoding: .utf8)
        let openFiles = limits.split(separator: "\n").first { $0.hasPrefix("Max open files") } ?? ""
        XCTAssertEqual(openFiles.split(separator: " ", omittingEmptySubsequences: true).dropFirst(3).first.flatMap { Int($0) }, hard,
                       "the soft limit should be the hard limit: \(openFiles)")

        let clients = try ClientCrowd.connect(count: 3_000, host: "127.0.0.1", port: port, batch: 500, timeout: 30)
        for group in stride(from: 0, to: clients.count, by: 1_000) {
            let batch = Array(clients[group..<group + 1_000])
            let bad = try ClientCrowd.echoAtOnce(batch, timeout: 15) { Array("client \(group + $0) of 3000\n".utf8) }
            XCTAssertEqual(bad, [], "clients \(group)..<\(group + 1_000) without their echo (the ones past 1,024 fds wait in the backlog if the limit was not raised)")
        }
        clients.forEach { $0.close() }
        server.send(signal: SIGTERM)
        assertExitsCleanly(server, within: 6)
    }

    func testMaxConnectionsBeyondTheFdLimitIsAWarningAtStartup() throws {
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: "/usr/bin/prlimit"), "needs prlimit (util-linux)")
        let server = track(try TestProcess.spawn("/usr/bin/prlimit", ["--nofile=256:256", try TestProcess.binaryPath("reflectd"),
                                                                     "--host", "127.0.0.1", "--port", "0", "--max-connections", "1000"]))
        _ = try server.waitForTCPPort()
        waitForLog(server, "fd limit 256: room for ")
        waitForLog(server, "--max-connections 1000 exceeds the")
    }

    func testRunningOutOfFileDescriptorsDoesNotSpinAndRecovers() throws {
        let path = try TestProcess.binaryPath("reflectd")
        let launchedAt = monotonicSeconds()
        // One client address takes every fd here: without `off`, the default per-client limit
        // (90 % of the room) would refuse the rest at once instead of leaving them in the backlog,
        // which is what this test is about (RefusalTests covers the default).
        let server = try TestProcess.spawn("/bin/sh", ["-c", "ulimit -n 32; exec '\(path)' --host 127.0.0.1 --port 0 --max-connections-per-client off"])
        track(server)
        let (_, port) = try server.waitForListeningLine()

        let count = 40
        var clients: [TestSocket] = []
        for _ in 0..<count { clients.append(try TestSocket.connect(port: port)) }
        let ports = clients.map(\.localPort)
        let expected = (0..<count).map { Array("hello from \($0)\n".utf8) }
        for (i, client) in clients.enumerated() { try client.send(expected[i]) }
        var received = [[UInt8]](repeating: [], count: count)

        let served = collectEchoes(clients, expected: expected, candidates: Array(0..<count), received: &received,
                                   target: count, timeout: 8, settle: 2.5)
        XCTAssertTrue(Set(0..<10).isSubset(of: served), "the first connections should be served; served: \(served.sorted())")
        XCTAssertLessThan(served.count, count, "every connection was served: the fd limit never bit, so the test proves nothing")
        let waiting = (0..<count).filter { !served.contains($0) }
        for i in waiting where !received[i].isEmpty {
            XCTFail("client \(i) got a partial or wrong echo: \(TestSocket.preview(received[i]))")
        }

        // At the fd limit, with connections waiting in the backlog, the server must sleep.
        let before = try XCTUnwrap(server.cpuSeconds())
        usleep(2_000_000)
        let after = try XCTUnwrap(server.cpuSeconds())
        XCTAssertLessThan(after - before, 0.3, "reflectd used \(after - before) s of CPU in 2 s at the fd limit: it spins")

        // Ten served clients leave; as many waiting ones must now be accepted and echoed.
        let leaving = served.sorted().prefix(10)
        for i in leaving { clients[i].close() }
        let target = min(10, waiting.count)
        let recovered = collectEchoes(clients, expected: expected, candidates: waiting, received: &received,
                                      target: target, timeout: 8)
        XCTAssertGreaterThanOrEqual(recovered.count, target,
                                    "after 10 connections closed, only \(recovered.count) waiting ones were served; stderr:\n\(server.stderr.text)")

        XCTAssertTrue(eventually { leaving.allSatisfy { self.lines(server.stderr.lines, mentioning: ports[$0]).count >= 2 } },
                      "no close lines for the clients that left")
        let log = server.stderr.lines
        for i in leaving { assertOpenAndCloseLogged(log, port: ports[i], reason: "eof") }
        for i in served.union(recovered).subtracting(leaving) {
            XCTAssertEqual(lines(log, mentioning: ports[i]).filter { $0.contains("open") }.count, 1, "open lines for client \(i)")
        }
        // Accept errors are logged at most about once a second, not once per attempt.
        let emfileLines = log.filter { $0.contains("EMFILE") }.count
        let elapsed = monotonicSeconds() - launchedAt
        XCTAssertGreaterThan(emfileLines, 0, "running out of fds was not logged")
        XCTAssertLessThanOrEqual(emfileLines, Int(elapsed) + 2, "accept errors are logged too often")

        let signalled = monotonicSeconds()
        server.send(signal: SIGTERM)
        assertExitsCleanly(server, within: max(0.1, 5 - (monotonicSeconds() - signalled)))
    }
}
