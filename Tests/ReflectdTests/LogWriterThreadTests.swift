// The log queue's writer thread starts with the first line (NonBlockingLog's LogQueue.start), so a
// reflectd that has nothing to log at its level stays one thread: in a multi-threaded process
// the kernel takes a reference on the file of every fd each system call is given.
//
// Through the built `reflectd` on loopback, one reactor; /proc/PID/task counts its threads.

import TestSupport
import Foundation
import Glibc
import XCTest

final class LogWriterThreadTests: ServerTestCase {

    private func threads(_ server: TestProcess) -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(server.pid)/task").count) ?? -1
    }

    func testAServerWithNothingToLogRunsOneThreadAndTheFirstWarningStartsTheWriter() throws {
        let (server, port) = try startAndWait(["--host", "127.0.0.1", "--port", "0", "--log-level", "warning",
                                               "--proxy-protocol"])
        let payload: [UInt8] = (0..<2048).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
        for _ in 0..<3 {
            let client = try TestSocket.connect(host: "127.0.0.1", port: port)
            try client.send(Array("PROXY TCP4 192.0.2.7 127.0.0.1 4242 8887\r\n".utf8) + payload)
            XCTAssertEqual(try client.receive(exactly: payload.count), payload)
            client.close()
        }
        XCTAssertEqual(threads(server), 1, "no line at warning yet, so no writer thread")
        XCTAssertEqual(server.stderr.text, "", "nothing at warning was logged")

        // A malformed PROXY header is refused with a warning: the line must come out.
        let bad = try TestSocket.connect(host: "127.0.0.1", port: port)
        try bad.send(Array("GET / HTTP/1.1\r\n\r\n".utf8))
        let (end, bytes) = bad.waitForEnd(timeout: 3)
        XCTAssertTrue(end == .eof || end == .reset, "\(end)")
        XCTAssertEqual(bytes, 0)
        XCTAssertTrue(eventually(timeout: 5) { server.stderr.text.contains("does not start with a PROXY v1 or v2 signature") },
                      server.stderr.text)
        XCTAssertEqual(threads(server), 2, "the writer thread started with the first line")
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(server.pid)/task")) ?? []).compactMap {
            try? String(contentsOfFile: "/proc/\(server.pid)/task/\($0)/comm", encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }
        XCTAssertTrue(names.contains("log-writer"), "the writer names itself for top -H: \(names)")

        // And the echo goes on.
        let after = try TestSocket.connect(host: "127.0.0.1", port: port)
        try after.send(Array("PROXY TCP4 192.0.2.8 127.0.0.1 4243 8887\r\n".utf8) + payload)
        XCTAssertEqual(try after.receive(exactly: payload.count), payload)
    }
}
