// A UDP echo server on a thread of the test process, that can misbehave on purpose: drop every
// nth datagram, answer one twice, or corrupt one. And socat as a third-party UDP echo.

import Foundation
import Glibc
import Synchronization
import TestSupport
import XCTest

/// A UDP echo on 127.0.0.1 and a free port, served by one thread with recvfrom/sendto until
/// `stop()`.
final class TinyUDPEcho: @unchecked Sendable {
    enum Fault: Sendable {
        /// Echo everything.
        case none
        /// Do not answer every nth datagram (the nth, 2nth …).
        case dropEvery(Int)
        /// Answer every nth datagram twice.
        case duplicateEvery(Int)
        /// Flip the last byte of every nth datagram.
        case corruptEvery(Int)
    }

    let fd: Int32
    let port: Int
    let fault: Fault
    private let stopping = Atomic<Bool>(false)
    private let done = Atomic<Bool>(false)
    /// Datagrams received so far.
    let received = Atomic<Int>(0)

    init(_ fault: Fault = .none) throws {
        self.fault = fault
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw TestError("socket: errno \(errno)") }
        self.fd = fd
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard bound else { close(fd); throw TestError("bind: errno \(errno)") }
        // A generous receive buffer, so that the kernel drops nothing that the test did not mean to drop.
        var size: Int32 = 4 << 20
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        port = Int(UInt16(bigEndian: address.sin_port))
        Thread.detachNewThread { [self] in serve() }
    }

    private func serve() {
        defer { done.store(true, ordering: .releasing) }
        var buffer = [UInt8](repeating: 0, count: 65536)
        var source = sockaddr_storage()
        var count = 0
        while !stopping.load(ordering: .acquiring) {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 50) > 0 else { continue }
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let n = buffer.withUnsafeMutableBytes { b in
                withUnsafeMutablePointer(to: &source) { s in
                    s.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, b.baseAddress, b.count, 0, $0, &length) }
                }
            }
            guard n >= 0 else { continue }
            count += 1
            received.store(count, ordering: .relaxed)
            var copies = 1
            switch fault {
            case .none: break
            case .dropEvery(let k): if count % k == 0 { copies = 0 }
            case .duplicateEvery(let k): if count % k == 0 { copies = 2 }
            case .corruptEvery(let k): if count % k == 0 && n > 0 { buffer[n - 1] ^= 0xFF }
            }
            for _ in 0..<copies {
                _ = buffer.withUnsafeBytes { b in
                    withUnsafePointer(to: &source) { s in
                        s.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, b.baseAddress, n, 0, $0, length) }
                    }
                }
            }
        }
    }

    func stop() {
        stopping.store(true, ordering: .releasing)
        let deadline = Date().addingTimeInterval(2)
        while !done.load(ordering: .acquiring) && Date() < deadline { usleep(10_000) }
        close(fd)
    }
}

/// `socat UDP-RECVFROM:PORT,bind=127.0.0.1,fork EXEC:/bin/cat`: a child process per datagram,
/// slow but a real third-party UDP echo. Skipped (XCTSkip) only where socat is not installed.
final class SocatUDPEcho {
    let port: Int
    private let socat: SocatProcess

    init() throws {
        // A free port: bind port 0, read it, close (socat binds it a moment later).
        let port = try TestDatagramSocket().port  // closed again at once
        self.port = port
        // A UDP bind has nothing to connect to: ready once the port is taken.
        socat = try SocatProcess(["UDP-RECVFROM:\(port),bind=127.0.0.1,fork", "EXEC:/bin/cat"],
                                 what: "bind udp 127.0.0.1:\(port)") {
            !SocatProcess.loopback(port, type: Int32(SOCK_DGRAM.rawValue)) { bind($0, $1, $2) }
        }
    }

    func stop() { socat.stop() }
}
