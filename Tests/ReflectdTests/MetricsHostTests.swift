// --metrics-host (issue 19, point 7): the metrics listener binds an address of its own, so that
// echo can be public while metrics stay on loopback; under socket activation the log says truly
// which flags still apply. Through the built binary on loopback (127.0.0.2 plays the public address).

import TestSupport
import Foundation
import Glibc
import XCTest

final class MetricsHostTests: ServerTestCase {

    func testMetricsBindTheirOwnHostApartFromTheEchoHost() throws {
        let server = track(try TestProcess.reflectd(["--host", "127.0.0.2", "--port", "0",
                                                    "--metrics-host", "127.0.0.1", "--metrics-port", "0"]))
        let echoPort = try server.waitForTCPPort()
        let metricsPort = try server.waitForMetricsPort()
        XCTAssertTrue(server.stdout.text.contains("metrics on http://127.0.0.1:\(metricsPort)/metrics"), server.stdout.text)
        XCTAssertEqual(try MetricsHTTP.get(host: "127.0.0.1", port: metricsPort, path: "/metrics").status, 200)
        XCTAssertFalse(LoopbackSockets.somethingListens(host: "127.0.0.2", port: metricsPort), "metrics also on the echo host")
        XCTAssertFalse(LoopbackSockets.somethingListens(host: "127.0.0.1", port: echoPort), "echo also on the metrics host")
        try TestSocket.connect(host: "127.0.0.2", port: echoPort).expectEcho("public echo\n")
        server.send(signal: SIGTERM)
        assertExitsCleanly(server, within: 6)
    }

    func testMetricsHostNeedsAMetricsPortAndAnAddress() throws {
        for (arguments, words) in [(["--metrics-host", "127.0.0.1"], "--metrics-host needs --metrics-port"),
                                   (["--metrics-host", "no.such.host.invalid", "--metrics-port", "0"], "--metrics-host")] {
            let failing = track(try TestProcess.reflectd(["--port", "0"] + arguments))
            let text = assertFailsAtOnce(failing)
            XCTAssertTrue(text.contains(words), "\(arguments): \(text)")
        }
    }

    /// Under socket activation --host places only the metrics listener: the log says so rather
    /// than "--host ignored"; with --metrics-host given, --host is ignored and the log says that.
    func testSocketActivationSaysWhatHostIsFor() throws {
        let listener = try TestListener(host: "127.0.0.1")
        let server = track(try TestProcess.reflectd(
            shellPrologue: "export LISTEN_PID=$$",
            ["--host", "127.0.0.1", "--metrics-port", "0"],
            environment: ["LISTEN_FDS": "1"], inheritedListeners: [listener.fd]))
        _ = try server.waitForListening(count: 1)
        listener.close()
        let metricsPort = try server.waitForMetricsPort()
        XCTAssertEqual(try MetricsHTTP.get(host: "127.0.0.1", port: metricsPort, path: "/metrics").status, 200)
        XCTAssertTrue(eventually(timeout: 2) { server.stderr.text.contains("the metrics listener binds --host 127.0.0.1") },
                      server.stderr.text)
        XCTAssertFalse(server.stderr.text.contains("--host ignored"), server.stderr.text)

        let other = try TestListener(host: "127.0.0.1")
        let second = track(try TestProcess.reflectd(
            shellPrologue: "export LISTEN_PID=$$",
            ["--host", "127.0.0.2", "--metrics-host", "127.0.0.1", "--metrics-port", "0"],
            environment: ["LISTEN_FDS": "1"], inheritedListeners: [other.fd]))
        _ = try second.waitForListening(count: 1)
        other.close()
        XCTAssertTrue(eventually(timeout: 2) { second.stderr.text.contains("--host ignored") }, second.stderr.text)
    }
}
