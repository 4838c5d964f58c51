// --reactors: several reactors share the work and stop together; zero, absurd and `auto`
// counts.
//
// Through the built `reflectd` on loopback: every socket operation and wait has a deadline, and
// tearDown (ServerTestCase) kills whatever a test left running.

import TestSupport
import Foundation
import Glibc
import XCTest

final class ReactorCountTests: ServerTestCase {

    func testHundredThousandReactorsIsRejectedWithAClearError() throws {
        let server = try start(["--host", "127.0.0.1", "--port", "0", "--reactors", "100000"])
        let stderr = assertFailsAtOnce(server)
        let cpus = sysconf(Int32(_SC_NPROCESSORS_ONLN))
        XCTAssertTrue(stderr.contains("--reactors must be between 1 and \(4 * cpus)"), stderr)
        XCTAssertTrue(stderr.contains("got 100000"), stderr)
    }

    func testTwoReactorsEchoFor200ConcurrentClientsBothAcceptAndSIGTERMIsGraceful() throws {
        let server = try start(["--host", "127.0.0.1", "--port", "0", "--reactors", "2", "--metrics-port", "0"])
        let port = try server.waitForTCPPort()
        let metricsPort = try server.waitForMetricsPort()

        let clients = try ClientCrowd.connect(count: 200, host: "127.0.0.1", port: port)
        for round in 0..<3 {
            let bad = try ClientCrowd.echoAtOnce(clients) { i in
                Array("round \(round) client \(i) \(String(repeating: "x", count: (i * 7) % 90))\n".utf8)
            }
            XCTAssertEqual(bad, [], "round \(round): clients whose echo was wrong or missing")
        }

        // Reactor 0 serves the scrapes, and its per-reactor count includes them (the current one too).
        var scrapes = 0
        var last: MetricsScrape?
        let bothAccepted = try eventually(timeout: 3.5, interval: 0.1) {
            let metrics = try MetricsScrape.scrape(port: metricsPort)
            scrapes += 1
            last = metrics
            let zero = (metrics["reflectd_reactor_connections_accepted_total{reactor=\"0\"}"] ?? 0) - scrapes
            let one = metrics["reflectd_reactor_connections_accepted_total{reactor=\"1\"}"] ?? 0
            return zero > 0 && one > 0 && zero + one == 200
        }
        XCTAssertTrue(bothAccepted, "both reactors should have accepted some of the 200 connections (\(scrapes) scrapes so far):\n\(last?.text ?? "")")
        XCTAssertEqual(last?["reflectd_reactors"], 2)
        XCTAssertEqual(last?["reflectd_connections_accepted_total"], 200)

        // SIGTERM right after every client sent once more: each gets its echo, then EOF, and the
        // process exits 0, whichever reactor holds the connection.
        let lastWords = clients.indices.map { Array("last words of \($0)\n".utf8) }
        for (i, client) in clients.enumerated() { try client.send(lastWords[i]) }
        server.send(signal: SIGTERM)
        let deadline = monotonicSeconds() + 5
        for (i, client) in clients.enumerated() {
            let echo = try client.receive(exactly: lastWords[i].count, timeout: max(0.1, deadline - monotonicSeconds()))
            XCTAssertEqual(echo, lastWords[i], "client \(i) after SIGTERM")
            let (end, extra) = client.waitForEnd(timeout: max(0.1, deadline - monotonicSeconds()))
            XCTAssertEqual(end, .eof, "client \(i) should see EOF after SIGTERM")
            XCTAssertEqual(extra, 0)
            client.close()
        }
        assertExitsCleanly(server, within: 6)
    }

    func testSeveralReactorsDoNotShareAPortAnotherServerListensOn() throws {
        // SO_REUSEPORT would let a second server of the same user share the port silently.
        let first = try start(["--host", "127.0.0.1", "--port", "0", "--reactors", "2"])
        let port = try first.waitForTCPPort()
        let second = try start(["--host", "127.0.0.1", "--port", String(port), "--reactors", "2"])
        let stderr = assertFailsAtOnce(second)
        XCTAssertTrue(stderr.contains("address already in use"), stderr)
        try TestSocket.connect(host: "127.0.0.1", port: port).expectEcho("the first server still serves\n")
    }

    func testZeroReactorsIsRejectedWithAClearError() throws {
        let server = try start(["--host", "127.0.0.1", "--port", "0", "--reactors", "0"])
        let stderr = assertFailsAtOnce(server)
        XCTAssertTrue(stderr.contains("--reactors"), "the message should name the flag: \(stderr)")
        XCTAssertTrue(stderr.contains("'0'") || stderr.contains(" 0"), "the message should quote the bad value: \(stderr)")
    }

    func testAutoReactorsRunsOneReactorPerOnlineCPU() throws {
        let server = try start(["--host", "127.0.0.1", "--port", "0", "--reactors", "auto", "--metrics-port", "0"])
        let port = try server.waitForTCPPort()
        let metricsPort = try server.waitForMetricsPort()
        try TestSocket.connect(host: "127.0.0.1", port: port).expectEcho("auto\n")
        let cpus = sysconf(Int32(_SC_NPROCESSORS_ONLN))
        let metrics = try MetricsScrape.scrape(port: metricsPort)
        XCTAssertEqual(metrics["reflectd_reactors"], cpus)
        server.send(signal: SIGTERM)
        assertExitsCleanly(server, within: 6)
    }
}
