// Health checks on the metrics listener (issue 24): GET /livez and GET /readyz through the built
// binary on loopback; /readyz turns 503 at the first stop signal while --stop-delay keeps serving
// and a slow client drains; and SIGUSR2 refused when reflectd is PID 1 (its own PID namespace,
// made with unshare(1), stands in for a container).

import TestSupport
import Foundation
import Glibc
import XCTest

final class HealthEndpointTests: ServerTestCase {

    func testLivezAndReadyzAnswer200WhileServing() throws {
        let server = track(try TestProcess.reflectd(["--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"]))
        let port = try server.waitForMetricsPort()
        let live = try MetricsHTTP.get(port: port, path: "/livez")
        XCTAssertEqual(live.status, 200)
        XCTAssertEqual(live.body, "ok\n")
        let ready = try MetricsHTTP.get(port: port, path: "/readyz")
        XCTAssertEqual(ready.status, 200)
        XCTAssertEqual(ready.body, "ready\n")
        XCTAssertEqual(ready.headers["cache-control"], "no-store")
        // A query, HEAD (no body), the absolute form: the same answers.
        XCTAssertEqual(try MetricsHTTP.get(port: port, path: "/readyz?verbose").status, 200)
        let head = try MetricsHTTP.get(port: port, path: "/readyz", method: "HEAD")
        XCTAssertEqual(head.status, 200)
        XCTAssertEqual(head.body, "")
        XCTAssertEqual(try MetricsHTTP.get(port: port, path: "http://127.0.0.1:\(port)/livez").status, 200)
        // Near misses are not health checks.
        XCTAssertEqual(try MetricsHTTP.get(port: port, path: "/readyzz").status, 404)
        XCTAssertEqual(try MetricsHTTP.get(port: port, path: "/livez/x").status, 404)
        XCTAssertEqual(try MetricsHTTP.get(port: port, path: "/readyz", method: "POST").status, 405)
        XCTAssertEqual(try MetricsHTTP.get(port: port, path: "/metrics").status, 200)
        server.send(signal: SIGTERM)
        assertExitsCleanly(server, within: 6)
    }

    /// The rolling-update order: at SIGTERM /readyz turns 503 while the listeners stay open for
    /// --stop-delay (new clients still echo), then the listeners close and the slow client drains
    /// until the grace (4 s) ends, and reflectd exits 0.
    func testReadyzTurns503AtSIGTERMWhileServingAndASlowClientDrains() throws {
        let server = track(try TestProcess.reflectd(["--host", "127.0.0.1", "--port", "0", "--metrics-port", "0",
                                                    "--stop-delay", "1.5"]))
        let echoPort = try server.waitForTCPPort()
        let metricsPort = try server.waitForMetricsPort()
        XCTAssertEqual(try MetricsHTTP.get(port: metricsPort, path: "/readyz").status, 200)
        let slow = try TestSocket.connect(host: "127.0.0.1", port: echoPort)
        try slow.expectEcho("hello\n")
        let writer = flood(slow, bytes: 32 << 20)
        usleep(300_000)

        let signalled = monotonicSeconds()
        server.send(signal: SIGTERM)
        waitForLog(server, "received SIGTERM: /readyz answers 503 now")
        let notReady = try MetricsHTTP.get(port: metricsPort, path: "/readyz")
        XCTAssertEqual(notReady.status, 503)
        XCTAssertEqual(notReady.body, "stopping\n")
        XCTAssertEqual(try MetricsHTTP.get(port: metricsPort, path: "/livez").status, 200, "alive while stopping")
        XCTAssertLessThan(monotonicSeconds() - signalled, 1.2, "checked too late: the --stop-delay may be over")
        // Still serving during the delay: a new client echoes.
        try TestSocket.connect(host: "127.0.0.1", port: echoPort).expectEcho("during the delay\n")

        waitForLog(server, "--stop-delay over: stopping gracefully", timeout: 3)
        XCTAssertTrue(eventually(timeout: 1) { !LoopbackSockets.somethingListens(host: "127.0.0.1", port: echoPort) },
                      "the echo listener is still open after --stop-delay")
        XCTAssertNil(server.pollExit(), "reflectd exited without waiting for the slow client: the test proves nothing")
        // 1.5 s delay + 4 s grace for the client that never reads, then exit 0.
        XCTAssertEqual(server.waitForExit(timeout: 8), .exited(0), server.stderr.text.suffix(2000).description)
        XCTAssertGreaterThan(monotonicSeconds() - signalled, 1.5, "stopped before --stop-delay was over")
        _ = eventually(timeout: 5) { !writer.isExecuting }
        slow.close()
    }

    func testSecondStopSignalDuringTheStopDelayStopsAtOnce() throws {
        let server = track(try TestProcess.reflectd(["--host", "127.0.0.1", "--port", "0", "--metrics-port", "0",
                                                    "--stop-delay", "30"]))
        let echoPort = try server.waitForTCPPort()
        try TestSocket.connect(host: "127.0.0.1", port: echoPort).expectEcho("hello\n")
        server.send(signal: SIGTERM)
        waitForLog(server, "received SIGTERM: /readyz answers 503 now")
        XCTAssertNil(server.pollExit())
        let again = monotonicSeconds()
        server.send(signal: SIGINT)
        XCTAssertEqual(server.waitForExit(timeout: 3), .exited(0))
        XCTAssertLessThan(monotonicSeconds() - again, 2, "a second stop signal did not cut the 30 s --stop-delay short")
    }

    func testStopDelayOutOfRangeIsRefused() throws {
        for value in ["-1", "301", "soon"] {
            let failing = track(try TestProcess.reflectd(["--port", "0", "--stop-delay", value]))
            let text = assertFailsAtOnce(failing)
            XCTAssertTrue(text.contains("--stop-delay"), "\(value): \(text)")
        }
    }

    /// As a container's PID 1 an upgrade would end the container: SIGUSR2 is refused with a log
    /// line, and the same process keeps echoing on the same connection.
    func testSIGUSR2IsRefusedAsPIDOne() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare") else {
            throw XCTSkip("no /usr/bin/unshare (util-linux)")
        }
        let outer = track(try TestProcess.spawn("/usr/bin/unshare", ["--pid", "--fork", "--kill-child", try TestProcess.binaryPath("reflectd"),
                                                                    "--host", "127.0.0.1", "--port", "0"]))
        let port: Int
        do {
            port = try outer.waitForTCPPort()
        } catch {
            throw XCTSkip("cannot start reflectd in a PID namespace of its own here: \(outer.stderr.text.suffix(500))")
        }
        waitForLog(outer, "pid=1 ")
        var child: pid_t = 0
        XCTAssertTrue(eventually(timeout: 2) {
            let text = (try? String(contentsOfFile: "/proc/\(outer.pid)/task/\(outer.pid)/children", encoding: .utf8)) ?? ""
            child = pid_t(text.split(separator: " ").first ?? "") ?? 0
            return child > 0
        })
        let client = try TestSocket.connect(host: "127.0.0.1", port: port)
        try client.expectEcho("before\n")
        kill(child, SIGUSR2)
        waitForLog(outer, "received SIGUSR2: refused, this process is PID 1")
        try client.expectEcho("after\n")
        try TestSocket.connect(host: "127.0.0.1", port: port).expectEcho("a new client\n")
        XCTAssertEqual(kill(child, 0), 0, "reflectd (pid \(child) outside its namespace) is gone")
        XCTAssertFalse(outer.stderr.text.contains("upgrading to"), outer.stderr.text)
        client.close()
        kill(child, SIGTERM)
        assertExitsCleanly(outer, within: 6)
    }
}
