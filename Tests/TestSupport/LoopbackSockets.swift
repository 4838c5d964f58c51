// Socket addresses and small socket calls for tests: numeric IPv4/IPv6 and Unix-domain
// addresses, ports, socket options, and a bounded poll. What TestSocket, TestListener and the
// tests that look at a socket directly share.

import Glibc

/// Socket creation, addresses and bounded waits on loopback.
public enum LoopbackSockets {
    /// A non-blocking, close-on-exec stream socket of `family`.
    public static func socket(_ family: CInt) throws -> CInt {
        let fd = Glibc.socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SocketFailure(operation: "socket", code: errno) }
        return fd
    }

    /// A numeric IPv4 or IPv6 address and port as a sockaddr_storage and its length.
    public static func address(host: String, port: Int) throws -> (sockaddr_storage, socklen_t) {
        var storage = sockaddr_storage()
        if host.contains(":") {
            var a = sockaddr_in6()
            a.sin6_family = sa_family_t(AF_INET6)
            a.sin6_port = in_port_t(UInt16(port).bigEndian)
            guard inet_pton(AF_INET6, host, &a.sin6_addr) == 1 else { throw TestFailure("bad IPv6 literal \(host)") }
            withUnsafeBytes(of: &a) { source in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: source) } }
            return (storage, socklen_t(MemoryLayout<sockaddr_in6>.size))
        }
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, host, &a.sin_addr) == 1 else { throw TestFailure("bad IPv4 literal \(host)") }
        withUnsafeBytes(of: &a) { source in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: source) } }
        return (storage, socklen_t(MemoryLayout<sockaddr_in>.size))
    }

    /// A Unix-domain address for `path` (cut to fit sun_path).
    public static func unixAddress(_ path: String) -> (sockaddr_storage, socklen_t) {
        var a = sockaddr_un()
        a.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &a.sun_path) { raw in
            let bytes = Array(path.utf8.prefix(raw.count - 1))
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        var storage = sockaddr_storage()
        withUnsafeBytes(of: &a) { source in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: source) } }
        return (storage, socklen_t(MemoryLayout<sockaddr_un>.size))
    }

    /// The port of a sockaddr_storage holding an IPv4 or IPv6 address.
    public static func port(of storage: sockaddr_storage) -> Int? {
        var copy = storage
        return withUnsafeBytes(of: &copy) { raw -> Int? in
            switch CInt(storage.ss_family) {
            case AF_INET: return Int(UInt16(bigEndian: raw.load(as: sockaddr_in.self).sin_port))
            case AF_INET6: return Int(UInt16(bigEndian: raw.load(as: sockaddr_in6.self).sin6_port))
            default: return nil
            }
        }
    }

    /// The port at the end of `127.0.0.1:8887` or `[::1]:8887`.
    public static func port(of address: String) -> Int? {
        guard let colon = address.lastIndex(of: ":") else { return nil }
        return Int(address[address.index(after: colon)...].prefix(while: \.isNumber))
    }

    /// The address `fd` is bound to (getsockname), or nil.
    public static func localAddress(_ fd: CInt) -> sockaddr_storage? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return rc == 0 ? storage : nil
    }

    /// The address `fd` is connected to (getpeername), or nil.
    public static func peerAddress(_ fd: CInt) -> sockaddr_storage? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &length) }
        }
        return rc == 0 ? storage : nil
    }

    /// An integer socket option of `fd` (getsockopt), or nil if the call failed.
    public static func intOption(_ fd: CInt, _ level: CInt, _ name: CInt) -> CInt? {
        var value: CInt = 0
        var length = socklen_t(MemoryLayout<CInt>.size)
        return getsockopt(fd, level, name, &value, &length) == 0 ? value : nil
    }

    /// Starts a non-blocking connect; true when it completed at once or is in progress.
    public static func startConnect(_ fd: CInt, _ address: (sockaddr_storage, socklen_t)) -> Bool {
        var storage = address.0
        let rc = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, address.1) }
        }
        return rc == 0 || errno == EINPROGRESS || errno == EAGAIN
    }

    /// Waits for `events` on `fd` until `deadline` (monotonic seconds); returns the revents (0 on
    /// timeout).
    public static func wait(_ fd: CInt, _ events: Int16, until deadline: Double) -> Int16 {
        var p = pollfd(fd: fd, events: events, revents: 0)
        while true {
            let rc = poll(&p, 1, millisecondsLeft(deadline))
            if rc > 0 { return p.revents }
            if rc == 0 { return 0 }
            if errno != EINTR { return Int16(POLLERR) }
        }
    }

    /// True when a socket can bind to ::1 (IPv6 loopback is configured).
    public static func ipv6Available() -> Bool {
        guard let fd = try? socket(AF_INET6) else { return false }
        defer { Glibc.close(fd) }
        var address = sockaddr_in6()
        address.sin6_family = sa_family_t(AF_INET6)
        address.sin6_addr = in6addr_loopback
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) == 0
            }
        }
    }

    /// A TCP port on 127.0.0.1 that nothing listens on right now (bound to port 0, then closed).
    public static func unusedPort() throws -> Int {
        let listener = try TestListener(host: "127.0.0.1")
        let port = listener.port
        listener.close()
        return port
    }

    /// True when something accepts TCP connections on `host:port`.
    public static func somethingListens(host: String = "127.0.0.1", port: Int) -> Bool {
        guard let client = try? TestSocket.connect(host: host, port: port, timeout: 1) else { return false }
        client.close()
        return true
    }
}
