import CEpoll
import Glibc
import SystemPackage

/// An IPv4, IPv6 or Unix-domain socket address.
///
/// IPv4 prints as `127.0.0.1:8887`, IPv6 as `[::1]:8887`, and Unix as its path.
public struct SocketAddress: Sendable, CustomStringConvertible {
    @usableFromInline
    enum Storage: Sendable {
        case inet(sockaddr_in)
        case inet6(sockaddr_in6)
        case unix(String)
    }

    @usableFromInline var storage: Storage

    @usableFromInline init(storage: Storage) { self.storage = storage }

    /// The address of `host` (an IPv4 or IPv6 literal, or a name) and `port`.
    ///
    /// `"::"` means every IPv6 and IPv4 address (dual stack); `"0.0.0.0"` every IPv4 address.
    /// - Throws: ``AddressError`` when the name does not resolve.
    public init(host: String, port: Int) throws(AddressError) {
        guard (0...65535).contains(port) else { throw AddressError("port \(port) is out of range 0-65535") }
        var hints = addrinfo()
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = CEPOLL_SOCK_STREAM
        var result: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &result)
        guard rc == 0, let first = result else {
            throw AddressError("cannot resolve host '\(host)': \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(result) }
        guard let address = SocketAddress(first.pointee.ai_addr) else {
            throw AddressError("host '\(host)' has no IPv4 or IPv6 address")
        }
        self = address
    }

    /// A Unix-domain socket address at `path`.
    public init(unixPath path: String) throws(AddressError) {
        let max = MemoryLayout.size(ofValue: sockaddr_un().sun_path) - 1
        guard !path.isEmpty, path.utf8.count <= max else {
            throw AddressError("unix socket path must be 1 to \(max) bytes long: '\(path)'")
        }
        storage = .unix(path)
    }

    @usableFromInline
    init?(_ address: UnsafePointer<sockaddr>?) {
        guard let address else { return nil }
        switch CInt(address.pointee.sa_family) {
        case AF_INET: storage = .inet(UnsafeRawPointer(address).load(as: sockaddr_in.self))
        case AF_INET6: storage = .inet6(UnsafeRawPointer(address).load(as: sockaddr_in6.self))
        case AF_UNIX:
            let path = UnsafeRawPointer(address).assumingMemoryBound(to: sockaddr_un.self)
            storage = .unix(withUnsafeBytes(of: path.pointee.sun_path) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            })
        default: return nil
        }
    }

/// The peer address accept4 wrote, read in place: an IP address inline (the accept path
    /// copied the whole 128-byte sockaddr_storage and called out of line, about 200 user
    /// instructions per accepted connection, callgrind 2026-12-07), anything else through
    /// ``init(_:)``.
    @inlinable
    init?(accepted address: UnsafePointer<sockaddr_storage>) {
        let raw = UnsafeRawPointer(address)
        switch CInt(address.pointee.ss_family) {
        case AF_INET: self = SocketAddress(storage: .inet(raw.load(as: sockaddr_in.self)))
        case AF_INET6: self = SocketAddress(storage: .inet6(raw.load(as: sockaddr_in6.self)))
        default:
            guard let parsed = SocketAddress(raw.assumingMemoryBound(to: sockaddr.self)) else { return nil }
            self = parsed
        }
    }

    @usableFromInline
    init?(storage address: sockaddr_storage) {
        var copy = address
        let parsed = withUnsafePointer(to: &copy) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { SocketAddress($0) }
        }
        guard let parsed else { return nil }
        self = parsed
    }

    /// The port, or nil for a Unix-domain address.
    public var port: Int? {
        switch storage {
        case .inet(let a): return Int(UInt16(bigEndian: a.sin_port))
        case .inet6(let a): return Int(UInt16(bigEndian: a.sin6_port))
        case .unix: return nil
        }
    }

    /// The host part: an IP literal, or the path of a Unix-domain address.
    public var host: String {
        switch storage {
        case .inet(var a):
            return Self.format(AF_INET, &a.sin_addr, INET_ADDRSTRLEN)
        case .inet6(var a):
            return Self.format(AF_INET6, &a.sin6_addr, INET6_ADDRSTRLEN)
        case .unix(let path):
            return path
        }
    }

    /// Calls `body` with the IP address's bytes in network order (4 for IPv4, 16 for IPv6) and
    /// returns its result; nil for a Unix-domain address. Formats nothing and allocates nothing,
    /// so it suits a check made for every accepted connection (inlinable, so that the caller's
    /// closure is specialised and not called through a context).
    @inlinable
    public func withIPAddressBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R? {
        switch storage {
        case .inet(var a): return withUnsafeBytes(of: &a.sin_addr) { body($0) }
        case .inet6(var a): return withUnsafeBytes(of: &a.sin6_addr) { body($0) }
        case .unix: return nil
        }
    }

    /// True for a Unix-domain address.
    @inlinable public var isUnix: Bool { if case .unix = storage { return true } else { return false } }

    public var description: String {
        switch storage {
        case .inet: return "\(host):\(port ?? 0)"
        case .inet6: return "[\(host)]:\(port ?? 0)"
        case .unix(let path): return path.isEmpty ? "unix" : path
        }
    }

    var family: CInt {
        switch storage {
        case .inet: return AF_INET
        case .inet6: return AF_INET6
        case .unix: return AF_UNIX
        }
    }

    private static func format(_ family: CInt, _ address: UnsafeRawPointer, _ size: CInt) -> String {
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: Int(size)) { buffer in
            guard inet_ntop(family, address, buffer.baseAddress, socklen_t(size)) != nil else { return "?" }
            return String(cString: buffer.baseAddress!)
        }
    }

    /// Calls `body` with this address as a `sockaddr` and its length.
    func withSockAddr<R, E: Error>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws(E) -> R) throws(E) -> R {
        switch storage {
        case .inet(var a):
            return try withUnsafePointer(to: &a) { (p) throws(E) -> R in
                try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(E) -> R in
                    try body(sa, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        case .inet6(var a):
            return try withUnsafePointer(to: &a) { (p) throws(E) -> R in
                try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(E) -> R in
                    try body(sa, socklen_t(MemoryLayout<sockaddr_in6>.size))
                }
            }
        case .unix(let path):
            var a = sockaddr_un()
            a.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &a.sun_path) { raw in
                let bytes = Array(path.utf8.prefix(raw.count - 1))
                raw.copyBytes(from: bytes)
                raw[bytes.count] = 0
            }
            return try withUnsafePointer(to: &a) { (p) throws(E) -> R in
                try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(E) -> R in
                    try body(sa, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
        }
    }
}

/// A host, port or path that cannot be used as a socket address.
public struct AddressError: Error, Sendable, CustomStringConvertible {
    /// What is wrong, in words fit for a user.
    public let description: String
    init(_ description: String) { self.description = description }
}

extension Connection {
    /// This end's address (getsockname(2)): which of the host's addresses and which port the
    /// peer reached, for example on a server listening on `::`. Nil for an fd that is not an
    /// IPv4, IPv6 or Unix socket (a pipe given to ``Reactor/adopt(fd:state:)``). Asks the kernel
    /// each time: the reactor keeps no copy per connection.
    public var localAddress: SocketAddress? {
        let fd = reactor._withUnsafeGuaranteedRef { $0.slots[Int(id.index)].pointee.fd }
        guard let storage = try? Syscalls.localAddress(fd) else { return nil }
        return SocketAddress(storage: storage)
    }
}
