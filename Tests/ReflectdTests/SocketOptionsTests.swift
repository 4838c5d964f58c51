// Socket options: TCP_NODELAY and keepalive on accepted connections (read from the server's
// own socket with pidfd_getfd), and the echo listener's backlog.
//
// Through the built `reflectd` on loopback: every socket operation and wait has a deadline, and
// tearDown (ServerTestCase) kills whatever a test left running.

import Foundation
import Glibc
import XCTest
import TestSupport
import Synchronization

final class SocketOptionsTests: ServerTestCase {

    /// The server's own socket for `client`, copied into this process with pidfd_getfd.
    private func serverSide(of client: TestSocket, in server: TestProcess) throws -> CInt {
        if let reason = ServerSocket.unavailableReason(pid: server.pid) {
            throw XCTSkip("cannot look at the server's sockets: \(reason)")
        }
        let port = client.localPort
        let found: CInt?
        do {
            found = try ServerSocket.socket(ofProcess: server.pid, peerPort: port, candidates: server.socketFDs())
        } catch let refused as ServerSocket.NotPermitted {
            throw XCTSkip("cannot look at the server's sockets: \(refused)")
        }
        guard let fd = found else {
            throw TestFailure("no socket in reflectd (pid \(server.pid)) has peer port \(port)")
        }
        return fd
    }

    func testTCPNoDelayIsSetOnAcceptedConnectionsByDefault() throws {
        let server = try start(["--host", "127.0.0.1", "--port", "0"])
        let client = try TestSocket.connect(host: "127.0.0.1", port: try server.waitForTCPPort())
        try client.expectEcho("nodelay?\n")
        let fd = try serverSide(of: client, in: server)
        defer { Glibc.close(fd) }
        XCTAssertNotEqual(LoopbackSockets.intOption(fd, CInt(IPPROTO_TCP), TCP_NODELAY), 0, "TCP_NODELAY should be on by default")
        XCTAssertEqual(LoopbackSockets.intOption(fd, SOL_SOCKET, SO_KEEPALIVE), 0, "keepalive should be off without --keepalive")
    }

    func testNoTCPNoDelayLeavesNagleOn() throws {
        let server = try start(["--host", "127.0.0.1", "--port", "0", "--no-tcp-nodelay"])
        let client = try TestSocket.connect(host: "127.0.0.1", port: try server.waitForTCPPort())
        try client.expectEcho("nagle\n")
        let fd = try serverSide(of: client, in: server)
        defer { Glibc.close(fd) }
        XCTAssertEqual(LoopbackSockets.intOption(fd, CInt(IPPROTO_TCP), TCP_NODELAY), 0)
    }

    func testKeepaliveFlagEnablesProbesAfterTheGivenIdleTime() throws {
        let server = try start(["--host", "127.0.0.1", "--port", "0", "--keepalive", "7"])
        let client = try TestSocket.connect(host: "127.0.0.1", port: try server.waitForTCPPort())
        try client.expectEcho("keepalive\n")
        let fd = try serverSide(of: client, in: server)
        defer { Glibc.close(fd) }
        XCTAssertNotEqual(LoopbackSockets.intOption(fd, SOL_SOCKET, SO_KEEPALIVE), 0)
        XCTAssertEqual(LoopbackSockets.intOption(fd, CInt(IPPROTO_TCP), TCP_KEEPIDLE), 7)
        XCTAssertNotEqual(LoopbackSockets.intOption(fd, CInt(IPPROTO_TCP), TCP_NODELAY), 0)
    }

    func testBacklogFlagSetsTheEchoListenersQueueLength() throws {
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: "/usr/bin/ss"), "needs ss (iproute2)")
        let server = try start(["--host", "127.0.0.1", "--port", "0", "--backlog", "7"])
        let port = try server.waitForTCPPort()
        // For a listening socket, ss shows the backlog in the Send-Q column.
        let ss = try TestProcess.spawn("/usr/bin/ss", ["-Hltn", "sport = :\(port)"])
        XCTAssertEqual(ss.waitForExit(timeout: 5), .exited(0))
        ss.stdout.waitForEOF(timeout: 2)
        let fields = ss.stdout.lines.first?.split(separator: " ", omittingEmptySubsequences: true) ?? []
        XCTAssertEqual(fields.count >= 3 ? Int(fields[2]) : nil, 7, "ss says: \(ss.stdout.text)")
    }

    func testBacklogOptionLimitsTheAcceptQueue() throws {
        let backlogged = try start(["--host", "127.0.0.1", "--port", "0", "--backlog", "2"])
        let (_, smallPort) = try backlogged.waitForListeningLine()
        // A stopped server accepts nothing: Linux completes at most backlog + 1 handshakes for it
        // and drops further SYNs, so later connects do not complete.
        backlogged.send(signal: SIGSTOP)
        defer { backlogged.send(signal: SIGCONT) }
        var completed: [TestSocket] = []
        for _ in 0..<8 {
            guard let client = try? TestSocket.connect(port: smallPort, timeout: 0.3) else { break }
            completed.append(client)
        }
        XCTAssertLessThanOrEqual(completed.count, 3, "--backlog 2 let \(completed.count) connections queue: the option is ignored")
        backlogged.send(signal: SIGCONT)
        // Once it runs again the queued ones are served.
        for (i, client) in completed.enumerated() { try roundTrip(client, "queued \(i)\n") }
    }
}
