// The Prometheus metrics endpoint: exact counts, only /metrics served, the address printed at
// every log level, HTTP details, its backlog, and a cap that keeps slowloris clients from
// starving the echo.
//
// Through the built `reflectd` on loopback: every socket operation and wait has a deadline, and
// tearDown (ServerTestCase) kills whatever a test left running.

import TestSupport
import Foundation
import Glibc
import XCTest

final class MetricsTests: ServerTestCase {

    /// Sends `request` raw and returns the whole response (the server closes after it).
    private func raw(_ request: String, port: Int) throws -> String {
        let client = try TestSocket.connect(host: "127.0.0.1", port: port)
        try client.send(request)
        var response: [UInt8] = []
        let deadline = monotonicSeconds() + 3
        while monotonicSeconds() < deadline {
            guard let byte = try? client.receive(exactly: 1, timeout: max(0.05, deadline - monotonicSeconds())) else { break }
            response += byte
        }
        return String(decoding: response, as: UTF8.self)
    }

    func testMetricsSlowlorisBeyondTheCapDoesNotStarveEcho() throws {
        let server = try start(["--host", "127.0.0.1", "--port", "0", "--max-connections", "100", "--metrics-port", "0"])
        let port = try server.waitForTCPPort()
        let metricsPort = try server.waitForMetricsPort()
        let echoClient = try TestSocket.connect(host: "127.0.0.1", port: port)
        try echoClient.expectEcho("before the flood\n")
        let baseFDs = server.openFDCount()

        // 200 metrics connections, each with half a request.
        let began = monotonicSeconds()
        var holders: [TestSocket] = []
        for _ in 0..<200 {
            let slow = try TestSocket.connect(host: "127.0.0.1", port: metricsPort)
            try slow.send("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            holders.append(slow)
        }
        // Those over the cap are reset at once; the server holds at most the cap.
        XCTAssertTrue(eventually(timeout: 3) { server.openFDCount() <= baseFDs + 16 },
                      "reflectd holds \(server.openFDCount() - baseFDs) extra fds for 200 half requests (cap 16)")
        var ended = Set<Int>()
        let settle = monotonicSeconds() + 3
        repeat {
            for (i, slow) in holders.enumerated() where !ended.contains(i) && slow.waitForEnd(timeout: 0).0 != .timeout {
                ended.insert(i)
            }
            if ended.count < 200 - 16 { usleep(20_000) }
        } while ended.count < 200 - 16 && monotonicSeconds() < settle
        XCTAssertEqual(ended.count, 200 - 16, "all but 16 half-open metrics connections should be closed at once")

        // Echo is untouched, new echo clients too.
        try echoClient.expectEcho("during the flood\n", timeout: 1)
        for i in 0..<10 { try TestSocket.connect(host: "127.0.0.1", port: port).expectEcho("new client \(i)\n", timeout: 1) }

        // The 16 held ones are closed at their 5 s request deadline; then scrapes work again.
        let held = holders.filter { $0.looksOpen }
        XCTAssertLessThanOrEqual(held.count, 16)
        for slow in held {
            let (end, _) = slow.waitForEnd(timeout: max(0.1, began + 8 - monotonicSeconds()))
            XCTAssertNotEqual(end, .timeout, "a half request was still open \(monotonicSeconds() - began) s after it began (deadline 5 s)")
        }
        XCTAssertGreaterThanOrEqual(monotonicSeconds() - began, 4.5, "held requests closed before their 5 s deadline")
        let (metrics, unmet) = try MetricsScrape.scrape(port: metricsPort, until: [
            "reflectd_metrics_connections_rejected_total": 200 - 16,
            "reflectd_metrics_requests_timed_out_total": 16,
            "reflectd_connections_open": 1,  // metrics connections are not echo connections
        ])
        XCTAssertEqual(unmet, [], "\(metrics.text)")
        try echoClient.expectEcho("after the flood\n")
    }

    func testMetricsAddressIsPrintedOnStdoutAtEveryLogLevel() throws {
        let server = try start(["--host", "127.0.0.1", "--port", "0", "--metrics-port", "0", "--log-level", "critical"])
        _ = try server.waitForTCPPort()
        XCTAssertTrue(eventually(timeout: 3) { server.stdout.lines.contains { $0.hasPrefix("metrics on http://127.0.0.1:") && $0.hasSuffix("/metrics") } },
                      "stdout: \(server.stdout.text)")
        let port = try server.waitForMetricsPort()
        XCTAssertEqual(try MetricsHTTP.get(port: port, path: "/metrics").status, 200)
        XCTAssertEqual(server.stderr.text, "", "nothing is logged at critical")
    }

    func testMetricsAcceptsBareLFAndAbsoluteFormAndAnswers405WithAllow() throws {
        let server = try start(["--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"])
        _ = try server.waitForTCPPort()
        let port = try server.waitForMetricsPort()

        let bareLF = try raw("GET /metrics HTTP/1.1\nHost: 127.0.0.1\n\n", port: port)
        XCTAssertTrue(bareLF.hasPrefix("HTTP/1.1 200 OK\r\n"), "bare LF: \(bareLF.prefix(200))")
        XCTAssertFalse(bareLF.contains("reason=\"http\""), "the metrics connections' own close reason is not an echo series")

        let absolute = try raw("GET http://127.0.0.1:\(port)/metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", port: port)
        XCTAssertTrue(absolute.hasPrefix("HTTP/1.1 200 OK\r\n"), "absolute-form: \(absolute.prefix(200))")
        let absoluteQuery = try raw("GET HTTP://127.0.0.1:\(port)/metrics?x=1 HTTP/1.1\r\n\r\n", port: port)
        XCTAssertTrue(absoluteQuery.hasPrefix("HTTP/1.1 200 OK\r\n"), "absolute-form with a query: \(absoluteQuery.prefix(200))")
        let elsewhere = try raw("GET http://127.0.0.1:\(port)/other HTTP/1.1\r\n\r\n", port: port)
        XCTAssertTrue(elsewhere.hasPrefix("HTTP/1.1 404 "), elsewhere)

        let post = try raw("POST /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n", port: port)
        XCTAssertTrue(post.hasPrefix("HTTP/1.1 405 "), post)
        XCTAssertTrue(post.contains("\r\nAllow: GET, HEAD\r\n"), "405 needs an Allow header: \(post)")

        // A real client: curl through reflectd as its "proxy" sends the absolute form.
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/curl") {
            let curl = try TestProcess.spawn("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-x", "http://127.0.0.1:\(port)",
                                                              "http://127.0.0.1:\(port)/metrics"])
            XCTAssertEqual(curl.waitForExit(timeout: 5), .exited(0))
            curl.stdout.waitForEOF(timeout: 2)
            XCTAssertEqual(curl.stdout.text, "200", "curl with an absolute-form request")
        }
    }

    func testMetricsListenerHasTheEchoListenersBacklog() throws {
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: "/usr/bin/ss"), "needs ss (iproute2)")
        let server = try start(["--host", "127.0.0.1", "--port", "0", "--metrics-port", "0", "--backlog", "300"])
        _ = try server.waitForTCPPort()
        let port = try server.waitForMetricsPort()
        let ss = try TestProcess.spawn("/usr/bin/ss", ["-Hltn", "sport = :\(port)"])
        XCTAssertEqual(ss.waitForExit(timeout: 5), .exited(0))
        ss.stdout.waitForEOF(timeout: 2)
        let fields = ss.stdout.lines.first?.split(separator: " ", omittingEmptySubsequences: true) ?? []
        XCTAssertEqual(fields.count >= 3 ? Int(fields[2]) : nil, 300, "the metrics listener's backlog (ss Send-Q): \(ss.stdout.text)")
    }

    func testMetricsCountExactlyWhatClientsDid() throws {
        let server = try start(["--host", "127.0.0.1", "--port", "0", "--reactors", "2", "--metrics-port", "0"])
        let port = try server.waitForTCPPort()
        let metricsPort = try server.waitForMetricsPort()
        var received = 0, sent = 0

        func echo(_ client: TestSocket, _ text: String) throws {
            try client.expectEcho(text)
            received += text.utf8.count
            sent += text.utf8.count
        }
        // Two close by EOF after two messages each.
        for i in 0..<2 {
            let client = try TestSocket.connect(host: "127.0.0.1", port: port)
            try echo(client, "eof client \(i)\n")
            try echo(client, "second message\n")
            client.shutdownWrite()
            XCTAssertEqual(client.waitForEnd(timeout: 2).0, .eof)
            client.close()
        }
        // Two send the exit line (read, not echoed).
        for i in 0..<2 {
            let client = try TestSocket.connect(host: "127.0.0.1", port: port)
            try echo(client, "exit client \(i)\n")
            try client.send("exit\n")
            received += 5
            XCTAssertEqual(client.waitForEnd(timeout: 2).0, .eof)
            client.close()
        }
        // Two reset.
        for i in 0..<2 {
            let client = try TestSocket.connect(host: "127.0.0.1", port: port)
            try echo(client, "reset client \(i)\n")
            client.closeWithReset()
        }
        // One stays open.
        let open = try TestSocket.connect(host: "127.0.0.1", port: port)
        try echo(open, "still open\n")

        let scraped = assertMetrics(port: metricsPort, [
            "reflectd_connections_accepted_total": 7,
            "reflectd_connections_open": 1,
            "reflectd_connections_closed_total{reason=\"eof\"}": 2,
            "reflectd_connections_closed_total{reason=\"exit\"}": 2,
            "reflectd_connections_closed_total{reason=\"reset\"}": 2,
            "reflectd_connections_closed_total{reason=\"timeout\"}": 0,
            "reflectd_connections_closed_total{reason=\"limit\"}": 0,
            "reflectd_connections_closed_total{reason=\"shutdown\"}": 0,
            "reflectd_connections_closed_total{reason=\"error\"}": 0,
            "reflectd_connections_rejected_total": 0,
            "reflectd_bytes_received_total": received,
            "reflectd_bytes_sent_total": sent,
            "reflectd_accept_errors_total{error=\"EMFILE\"}": 0,
            "reflectd_accept_pauses_total": 0,
            "reflectd_reactors": 2,
        ])
        let metrics = try XCTUnwrap(scraped)
        XCTAssertGreaterThan(metrics["reflectd_reactor_loop_iterations_total{reactor=\"0\"}"] ?? 0, 0)
        XCTAssertNotNil(metrics["reflectd_reactor_loop_iterations_total{reactor=\"1\"}"])
        XCTAssertTrue(metrics.text.contains("# TYPE reflectd_connections_accepted_total counter"))
        XCTAssertTrue(metrics.text.contains("# TYPE reflectd_connections_open gauge"))
        open.close()
    }

    func testMetricsServesOnlySlashMetricsToARealHTTPClient() throws {
        let server = try start(["--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"])
        _ = try server.waitForTCPPort()
        let metricsPort = try server.waitForMetricsPort()

        let ok = try MetricsHTTP.get(port: metricsPort, path: "/metrics")
        XCTAssertEqual(ok.status, 200)
        XCTAssertTrue(ok.headers["content-type"]?.hasPrefix("text/plain") ?? false, "\(ok.headers)")
        XCTAssertNoThrow(try MetricsScrape(text: ok.body))
        for path in ["/", "/metricsx", "/other", "/metrics/extra"] {
            XCTAssertEqual(try MetricsHTTP.get(port: metricsPort, path: path).status, 404, "GET \(path)")
        }
        XCTAssertEqual(try MetricsHTTP.get(port: metricsPort, path: "/metrics", method: "POST").status, 405)

        let viaURLSession = try MetricsHTTP.getWithURLSession("http://127.0.0.1:\(metricsPort)/metrics")
        XCTAssertEqual(viaURLSession.status, 200)
        XCTAssertTrue(viaURLSession.body.contains("reflectd_connections_open 0"), viaURLSession.body)
        XCTAssertEqual(try MetricsHTTP.getWithURLSession("http://127.0.0.1:\(metricsPort)/nope").status, 404)
        server.send(signal: SIGTERM)
        assertExitsCleanly(server, within: 6)
    }
}
