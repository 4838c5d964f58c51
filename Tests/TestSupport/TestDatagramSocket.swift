// A UDP client for tests: a real socket on loopback, bound where the test says, with every
// receive bounded in time.

import Glibc

/// A UDP socket bound to `host` (IPv4 or IPv6 literal) and `port` (0: any), for sending
/// datagrams to a server on loopback and reading its replies with a deadline.
public final class TestDatagramSocket {
    /// The socket.
    public let fd: CInt
    /// AF_INET or AF_INET6.
    public let family: CInt
    /// The port this socket is bound to.
    public private(set) var port: Int = 0

    /// Binds a UDP socket. Ports below 1024 need root; the caller may catch the EACCES.
    public init(host: String = "127.0.0.1", port: Int = 0, receiveBuffer: Int? = nil, sendBuffer: Int? = nil) throws {
        let v6 = host.contains(":")
        family = v6 ? AF_INET6 : AF_INET
        fd = socket(family, CInt(SOCK_DGRAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SocketFailure(operation: "socket", code: errno) }
        if let receiveBuffer {
            var size = CInt(receiveBuffer)
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<CInt>.size))
        }
        if let sendBuffer {
            var size = CInt(sendBuffer)
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<CInt>.size))
        }
        var storage = try Self.address(host, port)
        let rc = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_storage>.size)) }
        }
        guard rc == 0 else {
            let e = errno
            Glibc.close(fd)
            throw SocketFailure(operation: "bind \(host):\(port)", code: e)
        }
        var bound = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &bound) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        self.port = withUnsafeBytes(of: &bound) { Int(UInt16(bigEndian: $0.load(fromByteOffset: 2, as: UInt16.self))) }
    }

    deinit { Glibc.close(fd) }

    /// A sockaddr_storage for an IP literal and port.
    public static func address(_ host: String, _ port: Int) throws -> sockaddr_storage {
        var storage = sockaddr_storage()
        if host.contains(":") {
            var a = sockaddr_in6()
            a.sin6_family = sa_family_t(AF_INET6)
            a.sin6_port = UInt16(port).bigEndian
            guard inet_pton(AF_INET6, host, &a.sin6_addr) == 1 else { throw SocketFailure(operation: "inet_pton \(host)", code: EINVAL) }
            withUnsafeMutableBytes(of: &storage) { raw in withUnsafeBytes(of: a) { raw.copyMemory(from: $0) } }
        } else {
            var a = sockaddr_in()
            a.sin_family = sa_family_t(AF_INET)
            a.sin_port = UInt16(port).bigEndian
            guard inet_pton(AF_INET, host, &a.sin_addr) == 1 else { throw SocketFailure(operation: "inet_pton \(host)", code: EINVAL) }
            withUnsafeMutableBytes(of: &storage) { raw in withUnsafeBytes(of: a) { raw.copyMemory(from: $0) } }
        }
        return storage
    }

    /// Sends one datagram to `host`:`port`.
    public func send(_ bytes: [UInt8], to host: String, port: Int) throws {
        var target = try Self.address(host, port)
        let length = socklen_t(host.contains(":") ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size)
        let n = bytes.withUnsafeBytes { raw in
            withUnsafePointer(to: &target) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, raw.baseAddress, raw.count, 0, $0, length) }
            }
        }
        guard n == bytes.count else { throw SocketFailure(operation: "sendto", code: n < 0 ? errno : EMSGSIZE) }
    }

    /// The next datagram and its source port, or nil if none arrives within `timeout` seconds.
    public func receive(timeout: Double = 2) -> (bytes: [UInt8], port: Int)? {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let deadline = monotonicSeconds() + timeout
        while true {
            let left = Int32(max(0, (deadline - monotonicSeconds()) * 1000))
            let ready = poll(&pfd, 1, left)
            if ready < 0 && errno == EINTR { continue }
            guard ready > 0 else { return nil }
            var buffer = [UInt8](repeating: 0, count: 65_536)
            var source = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let n = buffer.withUnsafeMutableBytes { raw in
                withUnsafeMutablePointer(to: &source) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        recvfrom(fd, raw.baseAddress, raw.count, CInt(MSG_DONTWAIT), $0, &length)
                    }
                }
            }
            if n < 0 { if errno == EAGAIN || errno == EINTR { continue }; return nil }
            let port = withUnsafeBytes(of: &source) { Int(UInt16(bigEndian: $0.load(fromByteOffset: 2, as: UInt16.self))) }
            return (Array(buffer[..<n]), port)
        }
    }

    /// Every datagram that arrives until none has for `quiet` seconds.
    public func receiveAll(quiet: Double = 0.3) -> [[UInt8]] {
        var all: [[UInt8]] = []
        while let next = receive(timeout: quiet) { all.append(next.bytes) }
        return all
    }
}
