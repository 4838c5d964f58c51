// resp-server's signals, through the built binary on loopback: the kit's signal policy (the same
// as reflectd's): the first stop signal turns GET /readyz to 503, tells the service manager
// STOPPING=1 and, with --stop-delay, keeps serving a while before it stops gracefully and exits 0;
// a second stop signal stops at once; SIGUSR2 during a stop is ignored with a log line; SIGHUP and
// SIGUSR1 get a log line instead of killing the process. READY=1 and STOPPING=1 arrive on a
// NOTIFY_SOCKET datagram socket the test binds, as systemd's would for a `Type=notify` unit.

import Foundation
import Glibc
import TestSupport
import XCTest

final class RespSignalTests: XCTestCase {
    func testSIGTERMTurnsReadyzTo503DuringTheStopDelayNotifiesTheServiceManagerAndExits0() throws {
        let notify = try NotifySocket()
        let metricsPort = try TestListener().port  // closed again at once: free for the server
        let server = try notify.exported {
            try ServerUnderTest.resp(["--metrics-port", "\(metricsPort)", "--stop-delay", "1.5"])
        }
        XCTAssertEqual(notify.receive(timeout: 5), "READY=1", server.log)
        XCTAssertTrue(try RespMetricsTests.get("/readyz", port: metricsPort).hasPrefix("HTTP/1.1 200"))
        let client = try TestSocket.connect(port: server.port)
        try client.send(multibulk("SET", "k", "v"))
        XCTAssertEqual(try client.receiveString(exactly: 5), "+OK\r\n")

        let signalled = monotonicSeconds()
        server.signal(SIGTERM)
        XCTAssertEqual(notify.receive(timeout: 5), "STOPPING=1", server.log)
        let notReady = try RespMetricsTests.get("/readyz", port: metricsPort)
        XCTAssertTrue(notReady.hasPrefix("HTTP/1.1 503"), notReady)
        XCTAssertTrue(try RespMetricsTests.get("/livez", port: metricsPort).hasPrefix("HTTP/1.1 200"), "alive while stopping")
        XCTAssertLessThan(monotonicSeconds() - signalled, 1.2, "checked too late: the --stop-delay may be over")
        // Still serving during the delay: the old client and a new one are answered.
        try client.send(multibulk("GET", "k"))
        XCTAssertEqual(try client.receiveString(exactly: 7), "$1\r\nv\r\n")
        let late = try TestSocket.connect(port: server.port)
        try late.send(multibulk("PING"))
        XCTAssertEqual(try late.receiveString(exactly: 7), "+PONG\r\n")

        XCTAssertEqual(server.waitForExit(timeout: 10), 0, server.log)
        XCTAssertGreaterThan(monotonicSeconds() - signalled, 1.5, "stopped before --stop-delay was over")
        XCTAssertTrue(server.log.contains("received SIGTERM: /readyz answers 503 now"), server.log)
        XCTAssertTrue(server.log.contains("--stop-delay over: stopping gracefully"), server.log)
        XCTAssertNil(notify.receive(timeout: 0.2), "more than READY=1 and STOPPING=1")
    }

    func testASecondStopSignalStopsAtOnceAndSIGUSR2DuringTheStopIsIgnored() throws {
        let metricsPort = try TestListener().port
        let server = try ServerUnderTest.resp(["--metrics-port", "\(metricsPort)", "--stop-delay", "30"])
        server.signal(SIGTERM)
        XCTAssertTrue(eventually { server.log.contains("received SIGTERM: /readyz answers 503 now") }, server.log)
        XCTAssertTrue(try RespMetricsTests.get("/readyz", port: metricsPort).hasPrefix("HTTP/1.1 503"))
        server.signal(SIGUSR2)
        XCTAssertTrue(eventually { server.log.contains("received SIGUSR2: ignored, this process is stopping") }, server.log)
        XCTAssertNil(server.waitForExit(timeout: 0.3), "stopped before the 30 s --stop-delay: \(server.log)")

        let again = monotonicSeconds()
        server.signal(SIGTERM)
        XCTAssertEqual(server.waitForExit(timeout: 5), 0, server.log)
        XCTAssertLessThan(monotonicSeconds() - again, 3, "the second SIGTERM did not stop it at once")
        XCTAssertTrue(server.log.contains("received SIGTERM again: stopping now"), server.log)
        XCTAssertFalse(server.log.contains("upgrading to"), "SIGUSR2 during a stop started an upgrade:\n\(server.log)")
    }

    /// SIGHUP's and SIGUSR1's default action kills the process: the policy answers with a log line,
    /// and SIGQUIT is a stop signal like SIGTERM (gracefully, exit 0, no crash banner).
    func testSIGHUPAndSIGUSR1AreLoggedAndSIGQUITStopsGracefully() throws {
        let server = try ServerUnderTest.resp()
        server.signal(SIGHUP)
        server.signal(SIGUSR1)
        XCTAssertTrue(eventually {
            server.log.contains("received SIGHUP: ignored (resp-server has no configuration file")
                && server.log.contains("received SIGUSR1: ignored")
        }, server.log)
        let client = try TestSocket.connect(port: server.port)
        try client.send(multibulk("PING"))
        XCTAssertEqual(try client.receiveString(exactly: 7), "+PONG\r\n")

        server.signal(SIGQUIT)
        XCTAssertEqual(server.waitForExit(timeout: 8), 0, server.log)
        XCTAssertTrue(server.log.contains("received SIGQUIT: stopping gracefully"), server.log)
    }
}

/// A Unix datagram socket bound to a fresh path, as systemd's `$NOTIFY_SOCKET`: what a server
/// started inside ``exported(_:)`` tells its service manager arrives here.
final class NotifySocket {
    let fd: CInt
    let path: String

    init() throws {
        path = "/tmp/resp-notify-\(UUID().uuidString.prefix(8)).sock"
        fd = socket(AF_UNIX, CInt(SOCK_DGRAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SocketFailure(operation: "socket(AF_UNIX, SOCK_DGRAM)", code: errno) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else {
            let code = errno
            Glibc.close(fd)
            throw SocketFailure(operation: "bind \(path)", code: code)
        }
    }

    deinit {
        Glibc.close(fd)
        unlink(path)
    }

    /// Runs `start` (which starts the server) with `NOTIFY_SOCKET` naming this socket, so that
    /// the child inherits it; this process's environment is as before afterwards.
    func exported<T>(_ start: () throws -> T) rethrows -> T {
        setenv("NOTIFY_SOCKET", path, 1)
        defer { unsetenv("NOTIFY_SOCKET") }
        return try start()
    }

    /// The next message, or nil if none arrives within `timeout` seconds.
    func receive(timeout: Double) -> String? {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, CInt(timeout * 1000)) > 0 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = recv(fd, &buffer, buffer.count, 0)
        guard n >= 0 else { return nil }
        return String(decoding: buffer[..<n], as: UTF8.self)
    }
}
