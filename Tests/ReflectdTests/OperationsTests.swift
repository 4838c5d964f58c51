// reflectd run as operators run it (issue 4): several reactors, connection limits, idle timeouts,
// IPv6 and Unix-domain addresses, systemd socket activation, Prometheus metrics, socket options on
// accepted connections, and 10,000 open connections.
//
// Every test starts the built `reflectd` binary on loopback (port 0, or a socket the test made),
// every socket operation and wait has a deadline, and tearDown kills whatever a test left running.
// Helpers live in Operations/ (all named `Ops…`).

import Foundation
import Glibc
import XCTest

final class OperationsTests: ServerTestCase {

    // MARK: helpers

    private func start(_ arguments: [String]) throws -> OpsProcess {
        let server = try OpsProcess.reflectd(arguments)
        track(server)
        return server
    }

    /// Scrapes until the expected samples appear (or `timeout`); a failed scrape fails the test here.
    @discardableResult
    private func assertMetrics(port: Int, _ expected: [String: Int], timeout: Double = 3.5,
                               file: StaticString = #filePath, line: UInt = #line) -> OpsMetrics? {
        do {
            let (metrics, unmet) = try OpsMetrics.scrape(port: port, until: expected, timeout: timeout)
            XCTAssertEqual(unmet, [], "metrics after \(timeout) s:\n\(metrics.text)", file: file, line: line)
            return metrics
        } catch {
            XCTFail("scraping http://127.0.0.1:\(port)/metrics failed: \(error)", file: file, line: line)
            return nil
        }
    }

    // MARK: several reactors

    func testTwoReactorsEchoFor200ConcurrentClientsBothAcceptAndSIGTERMIsGraceful() throws {
        let server = try start(["--host", "127.0.0.1", "--port", "0", "--reactors", "2", "--metrics-port", "0"])
        let port = try server.waitForTCPPort()
        let metricsPort = try server.waitForMetricsPort()

        let clients = try OpsCrowd.connect(count: 200, host: "127.0.0.1", port: port)
        for round in 0..<3 {
            let bad = try OpsCrowd.echoAtOnce(clients) { i in
                Array("round \(round) client \(i) \(String(repeating: "x", count: (i * 7) % 90))\n".utf8)
            }
            XCTAssertEqual(bad, [], "round \(round): clients whose echo was wrong or missing")
        }

        // Reactor 0 serves the scrapes, and its per-reactor count includes them (the current one too).
        var scrapes = 0
        var last: OpsMetrics?
        let bothAccepted = try Ops.waitUntil(timeout: 3.5, interval: 0.1) {
            let metrics = try OpsMetrics.scrape(port: metricsPort)
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
        let deadline = Ops.now() + 5
        for (i, client) in clients.enumerated() {
            let echo = try client.receive(exactly: lastWords[i].count, timeout: max(0.1, deadline - Ops.now()))
            XCTAssertEqual(echo, lastWords[i], "client \(i) after SIGTERM")
            let (end, extra) = client.waitForEnd(timeout: max(0.1, deadline - Ops.now()))
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
        try OpsClient.connect(host: "127.0.0.1", port: port).expectEcho("the first server still serves\n")
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
        try OpsClient.connect(host: "127.0.0.1", port: port).expectEcho("auto\n")
        let cpus = sysconf(Int32(_SC_NPROCESSORS_ONLN))
        let metrics = try OpsMetrics.scrape(port: metricsPort)
        XCTAssertEqual(metrics["reflectd_reactors"], cpus)
        server.send(signal: SIGTERM)
        assertExitsCleanly(server, within: 6)
    }

    // MARK: connection limit

    func testEleventhConnectionIsClosedAtOnceWhileTheFirstTenKeepEchoing() throws {
        // Two reactors: the limit is for the whole process, whichever reactor accepts.
        let server = try start(["--host", "127.0.0.1", "--port", "0", "--reactors", "2", "--max-connections", "10"])
        let port = try server.waitForTCPPort()
        var clients: [OpsClient] = []
        for i in 0..<10 {
            let client = try OpsClient.connect(host: "127.0.0.1", port: port)
            try client.expectEcho("first ten: \(i)\n")
            clients.append(client)
        }

        let eleventh = try OpsClient.connect(host: "127.0.0.1", port: port)
        let began = Ops.now()
        let (end, bytes) = eleventh.waitForEnd(timeout: 1)
        let elapsed = Ops.now() - began
        XCTAssertTrue(end == .eof || end == .reset, "the 11th connection should see EOF or reset within 1 s, saw \(end)")
        XCTAssertEqual(bytes, 0, "the 11th connection should get no data")
        XCTAssertLessThan(elapsed, 1.0)
        eleventh.close()

        for (i, client) in clients.enumerated() {
            try client.expectEcho("still echoing: \(i)\n")
        }
        XCTAssertTrue(Ops.waitUntil(timeout: 2) { server.stderr.text.contains("reason limit") },
                      "the refusal should be logged at info with reason limit; stderr:\n\(server.stderr.text.suffix(1500))")

        // A place frees when a connection closes (the server may need a moment to see the EOF).
        clients[0].close()
        var replacement: OpsClient?
        let admitted = Ops.waitUntil(timeout: 2, interval: 0.05) {
            guard let client = try? OpsClient.connect(host: "127.0.0.1", port: port),
                  (try? client.expectEcho("replacement\n", timeout: 0.5)) != nil else { return false }
            replacement = client
            return true
        }
        XCTAssertTrue(admitted, "a new connection should be served once one of the ten closed")
        replacement?.close()
    }

    func testMetricsStayReachableAndExactWhenTheConnectionLimitIsReached() throws {
        // An operator scrapes a full server to see that it is full; the scrape must not be refused
        // and must not be counted as a refused echo client.
        let server = try start(["--host", "127.0.0.1", "--port", "0", "--max-connections", "2", "--metrics-port", "0"])
        let port = try server.waitForTCPPort()
        let metricsPort = try server.waitForMetricsPort()
        let a = try OpsClient.connect(host: "127.0.0.1", port: port)
        let b = try OpsClient.connect(host: "127.0.0.1", port: port)
        try a.expectEcho("a\n")
        try b.expectEcho("b\n")
        assertMetrics(port: metricsPort, [
            "reflectd_connections_open": 2,
            "reflectd_connections_accepted_total": 2,
            "reflectd_connections_rejected_total": 0,
            "reflectd_connections_closed_total{reason=\"limit\"}": 0,
        ], timeout: 0.5)

        let refused = try OpsClient.connect(host: "127.0.0.1", port: port)
        let (end, _) = refused.waitForEnd(timeout: 1)
        XCTAssertTrue(end == .eof || end == .reset, "the third connection should be refused, saw \(end)")
        assertMetrics(port: metricsPort, [
            "reflectd_connections_open": 2,
            "reflectd_connections_accepted_total": 3,
            "reflectd_connections_rejected_total": 1,
            "reflectd_connections_closed_total{reason=\"limit\"}": 1,
        ], timeout: 0.5)
    }

    // MARK: idle timeout

    func testIdleConnectionIsClosedWhileOneSendingEvery200msStaysOpen() throws {
        let server = try start(["--host", "127.0.0.1", "--port", "0", "--idle-timeout", "1", "--metrics-port", "0"])
        let port = try server.waitForTCPPort()
        let metricsPort = try server.waitForMetricsPort()

        let active = try OpsClient.connect(host: "127.0.0.1", port: port)
        let silent = try OpsClient.connect(host: "127.0.0.1", port: port)      // never sends
        let quietened = try OpsClient.connect(host: "127.0.0.1", port: port)   // one echo, then silence
        try active.expectEcho("tick 0\n")
        try quietened.expectEcho("one message, then nothing\n")
        let began = Ops.now()

        var closedAt: [String: Double] = [:]
        var tick = 1
        while Ops.now() - began < 4.0 {
            try active.expectEcho("tick \(tick)\n", timeout: 1)
            tick += 1
            for (name, client) in [("silent", silent), ("quietened", quietened)] where closedAt[name] == nil {
                let (end, bytes) = client.waitForEnd(timeout: 0)
                XCTAssertEqual(bytes, 0)
                if end != .stillOpen {
                    XCTAssertTrue(end == .eof || end == .reset, "\(name) ended with \(end)")
                    closedAt[name] = Ops.now() - began
                }
            }
            let next = began + Double(tick - 1) * 0.2
            if next > Ops.now() { usleep(useconds_t((next - Ops.now()) * 1e6)) }
        }
        XCTAssertGreaterThanOrEqual(tick, 15, "the active client should have sent about every 200 ms")
        for name in ["silent", "quietened"] {
            guard let at = closedAt[name] else {
                XCTFail("the \(name) idle connection was still open after 4 s with --idle-timeout 1")
                continue
            }
            XCTAssertLessThanOrEqual(at, 3.0, "\(name) closed after \(at) s")
            XCTAssertGreaterThanOrEqual(at, 0.9, "\(name) closed after only \(at) s: before the timeout")
        }
        XCTAssertTrue(active.looksOpen, "the active connection must not be touched")
        try active.expectEcho("still here after 4 s\n")
        assertMetrics(port: metricsPort, [
            "reflectd_connections_closed_total{reason=\"timeout\"}": 2,
            "reflectd_connections_open": 1,
        ])
    }

    // MARK: addresses

    func testIPv6LoopbackEcho() throws {
        try XCTSkipUnless(Ops.ipv6LoopbackAvailable(), "no IPv6 loopback (::1) on this machine")
        let server = try start(["--host", "::1", "--port", "0"])
        let address = try server.waitForListening()[0]
        XCTAssertTrue(address.hasPrefix("[::1]:"), "startup line should show the IPv6 address: \(address)")
        let port = try XCTUnwrap(Ops.port(of: address))
        let client = try OpsClient.connect(host: "::1", port: port)
        try client.expectEcho("hello over IPv6\n")
        try client.expectEcho(String(repeating: "v6", count: 20_000) + "\n")
    }

    func testDualStackHostIsReachableOverIPv4AndIPv6() throws {
        try XCTSkipUnless(Ops.ipv6LoopbackAvailable(), "no IPv6 loopback (::1) on this machine")
        let server = try start(["--host", "::", "--port", "0"])
        let address = try server.waitForListening()[0]
        let port = try XCTUnwrap(Ops.port(of: address))
        let v4 = try OpsClient.connect(host: "127.0.0.1", port: port)
        let v6 = try OpsClient.connect(host: "::1", port: port)
        try v4.expectEcho("via 127.0.0.1\n")
        try v6.expectEcho("via ::1\n")
    }

    func testUnixSocketEchoReplacesAStaleFileAndRemovesItAtExit() throws {
        let path = try temporaryDirectory() + "/reflectd.sock"
        let first = try start(["--host", "127.0.0.1", "--port", "0", "--unix", path])
        let lines = try first.waitForListening(count: 2)
        XCTAssertNotNil(Ops.port(of: lines[0]), "TCP comes first: \(lines)")
        XCTAssertEqual(lines[1], path, "then the Unix path")
        try OpsClient.connect(unixPath: path).expectEcho("over a unix socket\n")

        // A server that dies leaves its socket file behind.
        first.kill()
        var st = stat()
        XCTAssertEqual(lstat(path, &st), 0, "SIGKILL should leave the socket file")
        XCTAssertEqual(st.st_mode & S_IFMT, S_IFSOCK)

        let second = try start(["--host", "127.0.0.1", "--port", "0", "--unix", path])
        XCTAssertEqual(try second.waitForListening(count: 2)[1], path)
        let client = try OpsClient.connect(unixPath: path)
        try client.expectEcho("the stale file was replaced\n")

        // A socket a live server accepts on is not stale: a third server must not steal it.
        let third = try start(["--host", "127.0.0.1", "--port", "0", "--unix", path])
        let stderr = assertFailsAtOnce(third)
        XCTAssertTrue(stderr.contains("in use"), "expected an address-in-use message: \(stderr)")
        try client.expectEcho("the live server still owns it\n")
        client.close()

        second.send(signal: SIGTERM)
        assertExitsCleanly(second, within: 6)
        XCTAssertNotEqual(lstat(path, &st), 0, "the socket file should be removed at exit")
    }

    // MARK: socket activation

    func testSocketActivationServesTheInheritedSocketWithoutBindingItsOwn() throws {
        let listener = try OpsListener(host: "127.0.0.1")
        let ownPort = try Ops.unusedPort()
        // LISTEN_PID must be reflectd's pid: the shell exports its own pid, then execs reflectd.
        let server = track(try OpsProcess.reflectd(
            shellPrologue: "export LISTEN_PID=$$",
            ["--host", "127.0.0.1", "--port", String(ownPort), "--reactors", "2"],
            environment: ["LISTEN_FDS": "1"], inheritedListeners: [listener.fd]))
        let lines = try server.waitForListening(count: 1)
        // Only reflectd holds the listening socket from now on.
        listener.close()
        XCTAssertEqual(lines.map { Ops.port(of: $0) ?? -1 }, [listener.port], "it should announce the inherited socket only: \(lines)")
        XCTAssertTrue(server.stderr.text.contains("socket activation") || Ops.waitUntil(timeout: 1) { server.stderr.text.contains("socket activation") })

        let clients = try OpsCrowd.connect(count: 40, host: "127.0.0.1", port: listener.port)
        let bad = try OpsCrowd.echoAtOnce(clients) { Array("activated \($0)\n".utf8) }
        XCTAssertEqual(bad, [])
        XCTAssertFalse(Ops.somethingListens(host: "127.0.0.1", port: ownPort), "reflectd bound --port \(ownPort) although it was given a socket")
        XCTAssertFalse(server.stdout.text.contains(":\(ownPort)"))
        clients.forEach { $0.close() }

        server.send(signal: SIGTERM)
        assertExitsCleanly(server, within: 6)
    }

    func testSocketActivationWithATCPAndAUnixSocketServesBothAndLeavesTheFile() throws {
        // As systemd passes `ListenStream=PORT` and `ListenStream=/run/….sock`: fds 3 and 4.
        let tcp = try OpsListener(host: "127.0.0.1")
        let path = try temporaryDirectory() + "/activated.sock"
        let unix = try OpsListener(unixPath: path)
        let server = track(try OpsProcess.reflectd(
            shellPrologue: "export LISTEN_PID=$$",
            ["--host", "127.0.0.1", "--port", "0", "--reactors", "2"],
            environment: ["LISTEN_FDS": "2"], inheritedListeners: [tcp.fd, unix.fd]))
        let lines = try server.waitForListening(count: 2)
        tcp.close()
        unix.close()
        XCTAssertEqual(lines.first.flatMap(Ops.port(of:)), tcp.port, "\(lines)")
        XCTAssertEqual(lines.last, path)
        try OpsClient.connect(host: "127.0.0.1", port: tcp.port).expectEcho("activated over TCP\n")
        try OpsClient.connect(unixPath: path).expectEcho("activated over a unix socket\n")

        server.send(signal: SIGTERM)
        assertExitsCleanly(server, within: 6)
        var st = stat()
        XCTAssertEqual(lstat(path, &st), 0, "an inherited socket's file belongs to the service manager and must stay")
    }

    func testSocketActivationMeantForAnotherProcessIsIgnored() throws {
        let listener = try OpsListener(host: "127.0.0.1")
        // LISTEN_PID names some other process (pid 1): the fds are not reflectd's to use.
        let server = track(try OpsProcess.spawn(
            try Ops.reflectdPath(), ["--host", "127.0.0.1", "--port", "0"],
            environment: ["LISTEN_PID": "1", "LISTEN_FDS": "1"], inheritedListeners: [listener.fd]))
        let port = try server.waitForTCPPort()
        XCTAssertNotEqual(port, listener.port, "it should bind its own port")
        try OpsClient.connect(host: "127.0.0.1", port: port).expectEcho("own socket\n")
    }

    // MARK: metrics

    func testMetricsCountExactlyWhatClientsDid() throws {
        let server = try start(["--host", "127.0.0.1", "--port", "0", "--reactors", "2", "--metrics-port", "0"])
        let port = try server.waitForTCPPort()
        let metricsPort = try server.waitForMetricsPort()
        var received = 0, sent = 0

        func echo(_ client: OpsClient, _ text: String) throws {
            try client.expectEcho(text)
            received += text.utf8.count
            sent += text.utf8.count
        }
        // Two close by EOF after two messages each.
        for i in 0..<2 {
            let client = try OpsClient.connect(host: "127.0.0.1", port: port)
            try echo(client, "eof client \(i)\n")
            try echo(client, "second message\n")
            client.shutdownWrite()
            XCTAssertEqual(client.waitForEnd(timeout: 2).0, .eof)
            client.close()
        }
        // Two send the exit line (read, not echoed).
        for i in 0..<2 {
            let client = try OpsClient.connect(host: "127.0.0.1", port: port)
            try echo(client, "exit client \(i)\n")
            try client.send("exit\n")
            received += 5
            XCTAssertEqual(client.waitForEnd(timeout: 2).0, .eof)
            client.close()
        }
        // Two reset.
        for i in 0..<2 {
            let client = try OpsClient.connect(host: "127.0.0.1", port: port)
            try echo(client, "reset client \(i)\n")
            client.closeWithReset()
        }
        // One stays open.
        let open = try OpsClient.connect(host: "127.0.0.1", port: port)
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

        let ok = try OpsHTTP.get(port: metricsPort, path: "/metrics")
        XCTAssertEqual(ok.status, 200)
        XCTAssertTrue(ok.headers["content-type"]?.hasPrefix("text/plain") ?? false, "\(ok.headers)")
        XCTAssertNoThrow(try OpsMetrics(text: ok.body))
        for path in ["/", "/metricsx", "/other", "/metrics/extra"] {
            XCTAssertEqual(try OpsHTTP.get(port: metricsPort, path: path).status, 404, "GET \(path)")
        }
        XCTAssertEqual(try OpsHTTP.get(port: metricsPort, path: "/metrics", method: "POST").status, 405)

        let viaURLSession = try OpsHTTP.getWithURLSession("http://127.0.0.1:\(metricsPort)/metrics")
        XCTAssertEqual(viaURLSession.status, 200)
        XCTAssertTrue(viaURLSession.body.contains("reflectd_connections_open 0"), viaURLSession.body)
        XCTAssertEqual(try OpsHTTP.getWithURLSession("http://127.0.0.1:\(metricsPort)/nope").status, 404)
        server.send(signal: SIGTERM)
        assertExitsCleanly(server, within: 6)
    }

    // MARK: socket options on accepted connections

    /// The server's own socket for `client`, copied into this process with pidfd_getfd.
    private func serverSide(of client: OpsClient, in server: OpsProcess) throws -> CInt {
        if let reason = OpsServerSocket.unavailableReason(pid: server.pid) {
            throw XCTSkip("cannot look at the server's sockets: \(reason)")
        }
        let port = try XCTUnwrap(client.localPort)
        let found: CInt?
        do {
            found = try OpsServerSocket.socket(ofProcess: server.pid, peerPort: port, candidates: server.socketFDs())
        } catch let refused as OpsServerSocket.NotPermitted {
            throw XCTSkip("cannot look at the server's sockets: \(refused)")
        }
        guard let fd = found else {
            throw OpsFailure("no socket in reflectd (pid \(server.pid)) has peer port \(port)")
        }
        return fd
    }

    func testTCPNoDelayIsSetOnAcceptedConnectionsByDefault() throws {
        let server = try start(["--host", "127.0.0.1", "--port", "0"])
        let client = try OpsClient.connect(host: "127.0.0.1", port: try server.waitForTCPPort())
        try client.expectEcho("nodelay?\n")
        let fd = try serverSide(of: client, in: server)
        defer { Glibc.close(fd) }
        XCTAssertNotEqual(OpsSockets.intOption(fd, CInt(IPPROTO_TCP), TCP_NODELAY), 0, "TCP_NODELAY should be on by default")
        XCTAssertEqual(OpsSockets.intOption(fd, SOL_SOCKET, SO_KEEPALIVE), 0, "keepalive should be off without --keepalive")
    }

    func testNoTCPNoDelayLeavesNagleOn() throws {
        let server = try start(["--host", "127.0.0.1", "--port", "0", "--no-tcp-nodelay"])
        let client = try OpsClient.connect(host: "127.0.0.1", port: try server.waitForTCPPort())
        try client.expectEcho("nagle\n")
        let fd = try serverSide(of: client, in: server)
        defer { Glibc.close(fd) }
        XCTAssertEqual(OpsSockets.intOption(fd, CInt(IPPROTO_TCP), TCP_NODELAY), 0)
    }

    func testKeepaliveFlagEnablesProbesAfterTheGivenIdleTime() throws {
        let server = try start(["--host", "127.0.0.1", "--port", "0", "--keepalive", "7"])
        let client = try OpsClient.connect(host: "127.0.0.1", port: try server.waitForTCPPort())
        try client.expectEcho("keepalive\n")
        let fd = try serverSide(of: client, in: server)
        defer { Glibc.close(fd) }
        XCTAssertNotEqual(OpsSockets.intOption(fd, SOL_SOCKET, SO_KEEPALIVE), 0)
        XCTAssertEqual(OpsSockets.intOption(fd, CInt(IPPROTO_TCP), TCP_KEEPIDLE), 7)
        XCTAssertNotEqual(OpsSockets.intOption(fd, CInt(IPPROTO_TCP), TCP_NODELAY), 0)
    }

    func testBacklogFlagSetsTheEchoListenersQueueLength() throws {
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: "/usr/bin/ss"), "needs ss (iproute2)")
        let server = try start(["--host", "127.0.0.1", "--port", "0", "--backlog", "7"])
        let port = try server.waitForTCPPort()
        // For a listening socket, ss shows the backlog in the Send-Q column.
        let ss = try OpsProcess.spawn("/usr/bin/ss", ["-Hltn", "sport = :\(port)"])
        XCTAssertEqual(ss.waitForExit(timeout: 5), .exited(0))
        ss.stdout.waitForEOF(timeout: 2)
        let fields = ss.stdout.lines.first?.split(separator: " ", omittingEmptySubsequences: true) ?? []
        XCTAssertEqual(fields.count >= 3 ? Int(fields[2]) : nil, 7, "ss says: \(ss.stdout.text)")
    }

    // MARK: scale

    func testTenThousandOpenConnectionsWithAThousandEchoingAtOnce() throws {
        let target = 10_000
        let soft = Ops.raiseFileLimit()
        try XCTSkipUnless(soft >= target + 500, "needs an fd limit above \(target + 500), have \(soft)")
        // The server gets the hard limit as its soft limit too.
        let server = track(try OpsProcess.reflectd(
            shellPrologue: "ulimit -n \(Ops.hardFileLimit) || exit 97",
            ["--host", "127.0.0.1", "--port", "0", "--log-level", "warning"]))
        let port = try server.waitForTCPPort()

        // Warm up the paths one connection takes (the first output buffer, log machinery).
        try OpsClient.connect(host: "127.0.0.1", port: port).expectEcho("warm-up\n")
        usleep(200_000)
        let baseFDs = server.openFDCount()
        let rssBefore = try XCTUnwrap(server.residentKiB())

        let began = Ops.now()
        let clients = try OpsCrowd.connect(count: target, host: "127.0.0.1", port: port, batch: 1000, timeout: 30)
        let allAccepted = Ops.waitUntil(timeout: 20, interval: 0.05) { server.openFDCount() >= baseFDs + target }
        XCTAssertTrue(allAccepted, "reflectd holds \(server.openFDCount() - baseFDs) of \(target) connections")
        let connectSeconds = Ops.now() - began
        usleep(200_000)
        let rssOpen = try XCTUnwrap(server.residentKiB())

        // Every connection echoes, a thousand at a time, each with its own bytes.
        let echoBegan = Ops.now()
        for group in stride(from: 0, to: target, by: 1000) {
            let batch = Array(clients[group..<min(group + 1000, target)])
            let bad = try OpsCrowd.echoAtOnce(batch, timeout: 15) { i in
                let n = group + i
                return Array("connection \(n) of \(target): \(String(repeating: Character(UnicodeScalar(UInt8(97 + n % 26))), count: 20 + n % 80))\n".utf8)
            }
            XCTAssertEqual(bad.count, 0, "group at \(group): \(bad.count) connections with wrong or missing echo, first \(bad.prefix(5).map { $0 + group })")
        }
        let echoSeconds = Ops.now() - echoBegan
        let rssAfterEcho = try XCTUnwrap(server.residentKiB())

        let perConnection = Double(rssOpen - rssBefore) * 1024 / Double(target)
        let perConnectionAfterEcho = Double(rssAfterEcho - rssBefore) * 1024 / Double(target)
        print(String(format: "reflectd RSS: %d KiB before, %d KiB with %d idle connections (%.0f bytes per open connection), %d KiB after each echoed once (%.0f bytes per connection); connect+accept %.2f s, echo %.2f s",
                     rssBefore, rssOpen, target, perConnection, rssAfterEcho, perConnectionAfterEcho, connectSeconds, echoSeconds))
        XCTAssertLessThan(perConnection, 4096, "RSS per open connection")

        for client in clients { client.close() }
        XCTAssertTrue(Ops.waitUntil(timeout: 20, interval: 0.05) { server.openFDCount() <= baseFDs },
                      "reflectd still holds \(server.openFDCount() - baseFDs) connections after the clients closed")
        server.send(signal: SIGTERM)
        assertExitsCleanly(server, within: 6)
    }
}
