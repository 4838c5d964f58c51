// Datagram sockets in the Reactor, over real UDP sockets on loopback, and through the syscall
// seam for what loopback will not produce on demand (a full send buffer, partial sendmmsg).

import TestSupport
import Foundation
import Glibc
import SystemPackage
import XCTest
@testable import Reactor

final class DatagramTests: XCTestCase {
    private var servers: [DatagramServer] = []

    override func tearDown() {
        for server in servers { server.stop() }
        servers.removeAll()
        super.tearDown()
    }

    private func start(_ server: DatagramServer) -> DatagramServer {
        servers.append(server)
        return server
    }

    // MARK: echo

    func testEverySizeFromZeroToTheLargestComesBackUnchanged() throws {
        let server = start(try DatagramServer())
        let client = try TestDatagramSocket(receiveBuffer: 1 << 20)
        for size in [0, 1, 1472, 8192, 65_507] {
            let payload = everyByteValue(count: size, start: size)
            try client.send(payload, to: "127.0.0.1", port: server.udpPort)
            let reply = try XCTUnwrap(client.receive(timeout: 2), "no echo of \(size) bytes")
            XCTAssertEqual(reply.bytes.count, size)
            XCTAssertTrue(reply.bytes == payload, "the \(size)-byte echo differs")
            XCTAssertEqual(reply.port, server.udpPort, "the reply must come from the server's port")
        }
        let statistics = server.statistics { $0.datagramsOut >= 5 }
        XCTAssertEqual(statistics.datagramsIn, 5)
        XCTAssertEqual(statistics.datagramsOut, 5)
        XCTAssertEqual(statistics.datagramBytesIn, 1 + 1472 + 8192 + 65_507)
        XCTAssertEqual(statistics.datagramBytesOut, statistics.datagramBytesIn)
        XCTAssertEqual(statistics.datagramDrops.total, 0)
    }

    func testIPv6LoopbackEcho() throws {
        let server = start(try DatagramServer(host: "::1"))
        let client = try TestDatagramSocket(host: "::1")
        let payload = everyByteValue(count: 1000)
        try client.send(payload, to: "::1", port: server.udpPort)
        XCTAssertEqual(client.receive()?.bytes, payload)
        XCTAssertEqual(server.probe.snapshot.ipv6Sources, 1)
    }

    func testDualStackSocketAnswersIPv4AndIPv6Clients() throws {
        let server = start(try DatagramServer(host: "::"))
        let v4 = try TestDatagramSocket(host: "127.0.0.1")
        let v6 = try TestDatagramSocket(host: "::1")
        try v4.send([4], to: "127.0.0.1", port: server.udpPort)
        try v6.send([6], to: "::1", port: server.udpPort)
        XCTAssertEqual(v4.receive()?.bytes, [4])
        XCTAssertEqual(v6.receive()?.bytes, [6])
    }

    func testABurstArrivesInBatchesAndEachSourceGetsItsOwnDatagrams() throws {
        let server = start(try DatagramServer())
        let clients = try (0..<4).map { _ in try TestDatagramSocket(receiveBuffer: 1 << 20) }
        // Stop the reactor's thread from draining between sends: hold it in a closure while the
        // burst queues up in the socket buffer, so recvmmsg finds many at once.
        let hold = DispatchSemaphore(value: 0)
        _ = server.handle.execute { (_: ReactorContext<FaultEchoHandler>) in _ = hold.wait(timeout: .now() + 5) }
        for round in 0..<50 {
            for (c, client) in clients.enumerated() {
                try client.send([UInt8(c), UInt8(round)], to: "127.0.0.1", port: server.udpPort)
            }
        }
        hold.signal()
        for (c, client) in clients.enumerated() {
            let got = client.receiveAll(quiet: 0.5)
            XCTAssertEqual(got, (0..<50).map { [UInt8(c), UInt8($0)] }, "client \(c) got others' datagrams or lost some")
        }
        let seen = server.probe.snapshot
        XCTAssertEqual(seen.datagrams, 200)
        XCTAssertEqual(seen.largestBatch, DatagramBatch.capacity, "a queued burst must be received in full batches")
        XCTAssertEqual(seen.sourcePorts, Set(clients.map(\.port)))
    }

    func testDropsAreCountedAndNotAnswered() throws {
        let refused = try TestDatagramSocket()
        let server = start(try DatagramServer(dropPorts: [refused.port]))
        let answered = try TestDatagramSocket()
        try refused.send([1], to: "127.0.0.1", port: server.udpPort)
        try answered.send([2], to: "127.0.0.1", port: server.udpPort)
        XCTAssertEqual(answered.receive()?.bytes, [2])
        XCTAssertNil(refused.receive(timeout: 0.3), "a dropped datagram was answered")
        let statistics = server.statistics { $0.datagramDrops[.refusedPort] >= 1 }
        XCTAssertEqual(statistics.datagramDrops[.refusedPort], 1)
        XCTAssertEqual(statistics.datagramsOut, 1)
    }

    // MARK: binding

    func testTwoReactorsShareAPortWithReusePort() throws {
        let first = start(try DatagramServer { reactor, probe in
            try reactor.bindDatagram(on: try SocketAddress(host: "127.0.0.1", port: 0), reusePort: true,
                                     handler: ProbeDatagramEcho(probe: probe))
        })
        let port = first.udpPort
        let second = start(try DatagramServer { reactor, probe in
            try reactor.bindDatagram(on: try SocketAddress(host: "127.0.0.1", port: port), reusePort: true,
                                     handler: ProbeDatagramEcho(probe: probe))
        })
        XCTAssertEqual(second.udpPort, port)
        // The kernel spreads sources by hash: 32 client sockets reach both reactors.
        let clients = try (0..<32).map { _ in try TestDatagramSocket() }
        for client in clients { try client.send([7], to: "127.0.0.1", port: port) }
        for client in clients { XCTAssertEqual(client.receive()?.bytes, [7]) }
        XCTAssertGreaterThan(first.probe.snapshot.datagrams, 0)
        XCTAssertGreaterThan(second.probe.snapshot.datagrams, 0)
        XCTAssertEqual(first.probe.snapshot.datagrams + second.probe.snapshot.datagrams, 32)
    }

    func testAPortTakenWithoutReusePortIsRefused() throws {
        let taken = try TestDatagramSocket()
        XCTAssertThrowsError(try SocketAddress(host: "127.0.0.1", port: taken.port).checkDatagramAvailable()) { error in
            XCTAssertEqual((error as? SyscallError)?.errno, .addressInUse)
        }
    }

    func testAnInheritedDatagramSocketIsServed() throws {
        // What systemd's ListenDatagram= passes: a bound, blocking UDP socket.
        let inherited = socket(AF_INET, CInt(SOCK_DGRAM.rawValue), 0)
        var address = try TestDatagramSocket.address("127.0.0.1", 0)
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(inherited, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        XCTAssertEqual(rc, 0)
        let server = start(try DatagramServer { reactor, probe in
            try reactor.adoptDatagram(fd: inherited, handler: ProbeDatagramEcho(probe: probe))
        })
        XCTAssertNotEqual(fcntl(inherited, F_GETFL) & O_NONBLOCK, 0, "an adopted socket must be non-blocking")
        let client = try TestDatagramSocket()
        try client.send([1, 2, 3], to: "127.0.0.1", port: server.udpPort)
        XCTAssertEqual(client.receive()?.bytes, [1, 2, 3])
    }

    func testAdoptingAStreamSocketAsDatagramIsRefused() throws {
        let stream = socket(AF_INET, CInt(SOCK_STREAM.rawValue), 0)
        defer { close(stream) }
        XCTAssertThrowsError(try DatagramServer { reactor, probe in
            try reactor.adoptDatagram(fd: stream, handler: ProbeDatagramEcho(probe: probe))
        })
    }

    // MARK: faults

    func testFullSendBufferDropsAndCountsWhileTCPGoesOn() throws {
        let interposer = FaultInterposer()
        let server = start(try DatagramServer(interposer: interposer))
        interposer.plan(.sendmmsg, .fail(.resourceTemporarilyUnavailable, times: Int.max))
        let client = try TestDatagramSocket()
        for i in 0..<10 { try client.send([UInt8(i)], to: "127.0.0.1", port: server.udpPort) }
        XCTAssertNil(client.receive(timeout: 0.3), "a reply went out through a full send buffer")
        let statistics = server.statistics { $0.datagramDrops[.sendBufferFull] >= 10 }
        XCTAssertEqual(statistics.datagramDrops[.sendBufferFull], 10)
        XCTAssertEqual(statistics.datagramsIn, 10)
        XCTAssertEqual(statistics.datagramsOut, 0)
        // The loop neither blocked nor spun on the datagram socket: a TCP client is served.
        let tcp = try TestSocket.connect(port: server.tcpPort)
        try tcp.send("still here\n")
        XCTAssertEqual(try tcp.receiveString(exactly: 11), "still here\n")
        interposer.clear(.sendmmsg)
        try client.send([42], to: "127.0.0.1", port: server.udpPort)
        XCTAssertEqual(client.receive()?.bytes, [42], "echo resumes once the buffer has room")
    }

    func testAShortSendmmsgSendsTheRestOfTheBatch() throws {
        let interposer = FaultInterposer()
        let server = start(try DatagramServer(interposer: interposer))
        interposer.plan(.sendmmsg, .limit(1))  // the kernel takes one datagram per call
        let client = try TestDatagramSocket()
        let hold = DispatchSemaphore(value: 0)
        _ = server.handle.execute { (_: ReactorContext<FaultEchoHandler>) in _ = hold.wait(timeout: .now() + 5) }
        for i in 0..<20 { try client.send([UInt8(i)], to: "127.0.0.1", port: server.udpPort) }
        hold.signal()
        XCTAssertEqual(client.receiveAll(quiet: 0.5), (0..<20).map { [UInt8($0)] })
        XCTAssertGreaterThanOrEqual(interposer.calls(.sendmmsg), 20)
    }

    func testARejectedReplyDropsOnlyItself() throws {
        let interposer = FaultInterposer()
        let server = start(try DatagramServer(interposer: interposer))
        interposer.plan(.sendmmsg, .fail(.notPermitted, times: 1))  // a firewall's EPERM
        let client = try TestDatagramSocket()
        try client.send([1], to: "127.0.0.1", port: server.udpPort)
        XCTAssertNil(client.receive(timeout: 0.3))
        try client.send([2], to: "127.0.0.1", port: server.udpPort)
        XCTAssertEqual(client.receive()?.bytes, [2])
        let statistics = server.statistics { $0.datagramDrops[.sendFailed] >= 1 }
        XCTAssertEqual(statistics.datagramDrops[.sendFailed], 1)
    }

    func testInterruptedAndTransientReceivesLoseNothing() throws {
        let interposer = FaultInterposer()
        let server = start(try DatagramServer(interposer: interposer))
        interposer.plan(.recvmmsg, .cycle([.fail(.interrupted), .fail(.resourceTemporarilyUnavailable), .limit(3), .proceed]))
        let client = try TestDatagramSocket()
        for i in 0..<30 { try client.send([UInt8(i)], to: "127.0.0.1", port: server.udpPort) }
        XCTAssertEqual(client.receiveAll(quiet: 0.5).count, 30)
    }

    func testStoppingClosesTheDatagramSocket() throws {
        let server = try DatagramServer()
        let port = server.udpPort
        XCTAssertNotNil(server.stop())
        // The port is free again: nothing holds it.
        XCTAssertNoThrow(try TestDatagramSocket(port: port))
    }
}

extension DatagramTests {
    func testDatagramsTheKernelDropsForAFullReceiveQueueAreCounted() throws {
        let server = start(try DatagramServer())
        let client = try TestDatagramSocket()
        // Hold the reactor's thread while far more arrives than the socket's receive buffer
        // (net.core.rmem_default, about 208 KiB: a few hundred small datagrams) holds.
        let hold = DispatchSemaphore(value: 0)
        _ = server.handle.execute { (_: ReactorContext<FaultEchoHandler>) in _ = hold.wait(timeout: .now() + 5) }
        let sent = 5_000
        for i in 0..<sent { try client.send([UInt8(truncatingIfNeeded: i)], to: "127.0.0.1", port: server.udpPort) }
        hold.signal()
        // One more, after the reactor drained the queue, carries the kernel's final count.
        usleep(200_000)
        try client.send([0], to: "127.0.0.1", port: server.udpPort)
        let statistics = server.statistics { $0.datagramsIn + $0.datagramDrops[.receiveQueueFull] >= sent + 1 }
        XCTAssertGreaterThan(statistics.datagramDrops[.receiveQueueFull], 0, "the burst should overflow the queue")
        XCTAssertEqual(statistics.datagramsIn + statistics.datagramDrops[.receiveQueueFull], sent + 1,
                       "every datagram sent is either received or counted as dropped")
    }
}

extension DatagramTests {
    func testAClientReactorSendsFirstAndItsHandlerGetsTheReply() throws {
        let server = start(try DatagramServer())
        let client = start(try DatagramServer { reactor, probe in
            try reactor.bindDatagram(on: try SocketAddress(host: "127.0.0.1", port: 0), handler: ProbeDatagramEcho(probe: probe, dropPorts: [server.udpPort]))
        })
        let target = try SocketAddress(host: "127.0.0.1", port: server.udpPort)
        let sent = Locked(false)
        _ = client.handle.execute { (context: ReactorContext<FaultEchoHandler>) in
            let ok = [UInt8]("ping".utf8).withUnsafeBytes { context.sendDatagram($0, to: target) }
            sent.withLock { $0 = ok }
        }
        // The server echoes; the client's handler sees the reply (and drops it: no ping-pong).
        XCTAssertTrue(eventually(timeout: 5) { client.probe.snapshot.datagrams == 1 })
        XCTAssertTrue(sent.withLock { $0 })
        XCTAssertEqual(server.probe.snapshot.datagrams, 1)
        let statistics = client.statistics { $0.datagramsOut == 1 && $0.datagramDrops[.refusedPort] == 1 }
        XCTAssertEqual(statistics.datagramsOut, 1)
        XCTAssertEqual(statistics.datagramBytesOut, 4)
    }

    func testASendFromAFullBufferIsDroppedAndCounted() throws {
        let interposer = FaultInterposer()
        let client = start(try DatagramServer(interposer: interposer))
        interposer.plan(.sendmmsg, .fail(.resourceTemporarilyUnavailable, times: 1))
        let target = try SocketAddress(host: "127.0.0.1", port: 9)
        let results = Locked<[Bool]>([])
        _ = client.handle.execute { (context: ReactorContext<FaultEchoHandler>) in
            for _ in 0..<2 {
                let ok = [UInt8](repeating: 1, count: 8).withUnsafeBytes { context.sendDatagram($0, to: target) }
                results.withLock { $0.append(ok) }
            }
        }
        XCTAssertTrue(eventually(timeout: 5) { results.withLock { $0.count } == 2 })
        XCTAssertEqual(results.withLock { $0 }, [false, true])
        let statistics = client.statistics { $0.datagramDrops[.sendBufferFull] == 1 }
        XCTAssertEqual(statistics.datagramDrops[.sendBufferFull], 1)
        XCTAssertEqual(statistics.datagramsOut, 1)
    }
}
