// A listening socket made by a test: to occupy a port, to find a free one, or to hand to a
// server as systemd would (socket activation).

import Glibc

/// A listening TCP (IPv4 or IPv6) or Unix-domain socket, closed on deinit.
public final class TestListener {
    public private(set) var fd: CInt
    /// The bound port (0 for a Unix-domain socket).
    public let port: Int

    /// Listens on `host` (a numeric IPv4 or IPv6 literal) and `port` (0: any free port), with
    /// SO_REUSEADDR and a queue of `backlog`.
    public init(host: String = "127.0.0.1", port: Int = 0, backlog: CInt = 128) throws {
        let address = try LoopbackSockets.address(host: host, port: port)
        let fd = try LoopbackSockets.socket(CInt(address.0.ss_family))
        var one: CInt = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<CInt>.size))
        var storage = address.0
        let rc = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, address.1) }
        }
        guard rc == 0, Glibc.listen(fd, backlog) == 0,
              let bound = LoopbackSockets.localAddress(fd).flatMap(LoopbackSockets.port(of:)) else {
            let e = errno
            Glibc.close(fd)
            throw SocketFailure(operation: "listen on \(host):\(port)", code: e)
        }
        self.fd = fd
        self.port = bound
    }

    /// A listening Unix-domain socket at `path` (port is 0).
    public init(unixPath path: String, backlog: CInt = 128) throws {
        let fd = try LoopbackSockets.socket(AF_UNIX)
        let address = LoopbackSockets.unixAddress(path)
        var storage = address.0
        let rc = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, address.1) }
        }
        guard rc == 0, Glibc.listen(fd, backlog) == 0 else {
            let e = errno
            Glibc.close(fd)
            throw SocketFailure(operation: "listen on \(path)", code: e)
        }
        self.fd = fd
        self.port = 0
    }

    deinit { close() }

    /// Closes the socket (at most once; deinit closes it otherwise).
    public func close() {
        guard fd >= 0 else { return }
        Glibc.close(fd)
        fd = -1
    }
}
