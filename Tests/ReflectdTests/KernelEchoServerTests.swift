// reflectd's kernel echo (`--exit-line off`, `--kernel-echo on` by default): a bulk binary stream
// comes back byte-exact through the built binary, the metric says which path it took, and the
// exit line (on) or `--kernel-echo off` keep every byte in user space. With socat as a real client.

import TestSupport
import Foundation
import Glibc
import XCTest

final class KernelEchoServerTests: ServerTestCase {
    /// Streams `size` random bytes through reflectd started with `arguments` while reading the
    /// echo, checks it came back exactly, and returns the kernel-echo metric.
    private func streamed(_ arguments: [String], size: Int = 8 << 20, file: StaticString = #filePath, line: UInt = #line) throws -> Int {
        let server = try start(["--host", "127.0.0.1", "--port", "0", "--metrics-port", "0", "--log-level", "warning"] + arguments)
        let port = try server.waitForTCPPort()
        let metricsPort = try server.waitForMetricsPort()
        var random = SystemRandomNumberGenerator()
        let payload = (0..<size).map { _ in UInt8.random(in: 0...255, using: &random) }
        let client = try TestSocket.connect(port: port)
        let writer = Thread { _ = payload.withUnsafeBytes { client.sendAll($0, timeout: 30) }; client.shutdownWrite() }
        writer.start()
        let (echo, end) = client.receiveUntilEnd(timeout: 30, limit: size + 1)
        XCTAssertEqual(end, .eof, file: file, line: line)
        XCTAssertEqual(echo.count, size, file: file, line: line)
        XCTAssertTrue(echo == payload, "the echo differs from what was sent", file: file, line: line)
        let (metrics, _) = try MetricsScrape.scrape(port: metricsPort, until: ["reflectd_bytes_sent_total": size])
        XCTAssertEqual(metrics["reflectd_bytes_sent_total"], size, file: file, line: line)
        return try XCTUnwrap(metrics["reflectd_bytes_echoed_in_kernel_total"], "no kernel-echo metric", file: file, line: line)
    }

    func testExitLineOffEchoesABulkStreamInTheKernel() throws {
        let inKernel = try streamed(["--exit-line", "off"])
        XCTAssertGreaterThan(inKernel, 4 << 20, "most of an 8 MiB stream should be echoed in the kernel")
    }

    func testAProxiedConnectionIsEchoedInTheKernelOnceItsHeaderIsRead() throws {
        // The header itself must reach reflectd's parser (never spliced back); the stream after it may.
        let server = try start(["--host", "127.0.0.1", "--port", "0", "--metrics-port", "0", "--log-level", "info",
                                "--exit-line", "off", "--proxy-protocol"])
        let port = try server.waitForTCPPort()
        let metricsPort = try server.waitForMetricsPort()
        var random = SystemRandomNumberGenerator()
        let payload = (0..<(8 << 20)).map { _ in UInt8.random(in: 0...255, using: &random) }
        let client = try TestSocket.connect(port: port)
        try client.send(Array("PROXY TCP4 10.1.2.3 127.0.0.1 5555 \(port)\r\n".utf8))
        let writer = Thread { _ = payload.withUnsafeBytes { client.sendAll($0, timeout: 30) }; client.shutdownWrite() }
        writer.start()
        let (echo, end) = client.receiveUntilEnd(timeout: 30, limit: payload.count + 1)
        XCTAssertEqual(end, .eof)
        XCTAssertTrue(echo == payload, "the echo differs from what was sent after the header (\(echo.count) bytes back)")
        let (metrics, _) = try MetricsScrape.scrape(port: metricsPort, until: ["reflectd_bytes_sent_total": payload.count])
        XCTAssertGreaterThan(metrics["reflectd_bytes_echoed_in_kernel_total"] ?? 0, 4 << 20)
        waitForLog(server, "open 10.1.2.3:5555")
    }

    func testKernelEchoOffReadsEveryByte() throws {
        XCTAssertEqual(try streamed(["--exit-line", "off", "--kernel-echo", "off"]), 0)
    }

    func testTheExitLineIsNeverSkippedInABulkStream() throws {
        // With the exit line on every byte must be scanned: nothing goes around user space, and
        // an exit line deep in a bulk stream still closes the connection.
        XCTAssertEqual(try streamed([]), 0)
        let server = try start(["--host", "127.0.0.1", "--port", "0", "--log-level", "warning"])
        let port = try server.waitForTCPPort()
        let client = try TestSocket.connect(port: port)
        let bulk = [UInt8](repeating: 0x41, count: 4 << 20) + Array("\nexit\n".utf8) + [UInt8](repeating: 0x42, count: 1 << 20)
        let writer = Thread { _ = bulk.withUnsafeBytes { client.sendAll($0, timeout: 30) } }
        writer.start()
        let (echo, end) = client.receiveUntilEnd(timeout: 30, limit: bulk.count + 1)
        XCTAssertTrue(end.isClosed, "the connection stayed open after the exit line: \(end)")
        XCTAssertEqual(echo.count, (4 << 20) + 1, "everything before the exit line (and its newline), nothing after")
    }

    func testSocatStreamsABinaryFileThroughTheKernelEcho() throws {
        let candidates: [String] = ["/usr/bin/socat", "/bin/socat", "/usr/local/bin/socat"]
        guard let socat = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw XCTSkip("socat is not installed")
        }
        let directory = try temporaryDirectory()
        let input = directory + "/in.bin", output = directory + "/out.bin"
        var random = SystemRandomNumberGenerator()
        let payload = Data((0..<(6 << 20)).map { _ in UInt8.random(in: 0...255, using: &random) })
        try payload.write(to: URL(fileURLWithPath: input))
        let server = try start(["--host", "127.0.0.1", "--port", "0", "--metrics-port", "0", "--exit-line", "off", "--log-level", "warning"])
        let port = try server.waitForTCPPort()
        let metricsPort = try server.waitForMetricsPort()
        // socat sends the file, half-closes, and writes what comes back until the server's EOF.
        let client = track(try TestProcess.spawn("/bin/sh", ["-c", "\(socat) -t 10 TCP:127.0.0.1:\(port) - < \(input) > \(output)"]))
        XCTAssertEqual(client.waitForExit(timeout: 30), TestProcess.End.exited(0), client.stderr.text)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: output)), payload)
        let (metrics, _) = try MetricsScrape.scrape(port: metricsPort, until: ["reflectd_bytes_sent_total": payload.count])
        XCTAssertGreaterThan(metrics["reflectd_bytes_echoed_in_kernel_total"] ?? 0, 0)
    }
}
