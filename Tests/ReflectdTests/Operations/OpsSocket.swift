// Client sockets for the operations tests: TCP over IPv4 or IPv6, Unix-domain, and thousands at
// once. Every socket is non-blocking and every wait goes through poll(2) with a deadline, so no
// test can hang on a socket.

import TestSupport
import Glibc

/// Socket creation and addresses.
enum OpsSockets {
    static func socket(_ family: CInt) throws -> CInt {
        let fd = Glibc.socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw OpsFailure("socket: \(String(cString: strerror(errno)))") }
        return fd
    }

    /// A numeric IPv4 or IPv6 address and port as a sockaddr_storage and its length.
    static func address(host: String, port: Int) throws -> (sockaddr_storage, socklen_t) {
        var storage = sockaddr_storage()
        if host.contains(":") {
            var a = sockaddr_in6()
            a.sin6_family = sa_family_t(AF_INET6)
            a.sin6_port = in_port_t(UInt16(port).bigEndian)
            guard inet_pton(AF_INET6, host, &a.sin6_addr) == 1 else { throw OpsFailure("bad IPv6 literal \(host)") }
            withUnsafeBytes(of: &a) { source in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: source) } }
            return (storage, socklen_t(MemoryLayout<sockaddr_in6>.size))
        }
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, host, &a.sin_addr) == 1 else { throw OpsFailure("bad IPv4 literal \(host)") }
        withUnsafeBytes(of: &a) { source in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: source) } }
        return (storage, socklen_t(MemoryLayout<sockaddr_in>.size))
    }

    static func unixAddress(_ path: String) -> (sockaddr_storage, socklen_t) {
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
    static func port(of storage: sockaddr_storage) -> Int? {
        var copy = storage
        return withUnsafeBytes(of: &copy) { raw -> Int? in
            switch CInt(storage.ss_family) {
            case AF_INET: return Int(UInt16(bigEndian: raw.load(as: sockaddr_in.self).sin_port))
            case AF_INET6: return Int(UInt16(bigEndian: raw.load(as: sockaddr_in6.self).sin6_port))
            default: return nil
            }
        }
    }

    static func localAddress(_ fd: CInt) -> sockaddr_storage? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return rc == 0 ? storage : nil
    }

    static func peerAddress(_ fd: CInt) -> sockaddr_storage? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &length) }
        }
        return rc == 0 ? storage : nil
    }

    static func intOption(_ fd: CInt, _ level: CInt, _ name: CInt) -> CInt? {
        var value: CInt = 0
        var length = socklen_t(MemoryLayout<CInt>.size)
        return getsockopt(fd, level, name, &value, &length) == 0 ? value : nil
    }

    /// Starts a non-blocking connect; true when it completed at once or is in progress.
    static func startConnect(_ fd: CInt, _ address: (sockaddr_storage, socklen_t)) -> Bool {
        var storage = address.0
        let rc = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, address.1) }
        }
        return rc == 0 || errno == EINPROGRESS || errno == EAGAIN
    }

    /// Milliseconds left until `deadline` (monotonic seconds), for poll(2).
    static func millisecondsLeft(_ deadline: Double) -> CInt {
        CInt(max(0, min(Double(Int32.max), (deadline - Ops.now()) * 1000).rounded(.up)))
    }

    /// Waits for `events` on `fd` until `deadline`; returns the revents (0 on timeout).
    static func wait(_ fd: CInt, _ events: Int16, until deadline: Double) -> Int16 {
        var p = pollfd(fd: fd, events: events, revents: 0)
        while true {
            let rc = poll(&p, 1, millisecondsLeft(deadline))
            if rc > 0 { return p.revents }
            if rc == 0 { return 0 }
            if errno != EINTR { return Int16(POLLERR) }
        }
    }
}

/// How a stream ended, as seen by a client.
enum OpsStreamEnd: Equatable, CustomStringConvertible {
    case eof
    case reset
    case stillOpen
    case error(CInt)

    var description: String {
        switch self {
        case .eof: return "EOF"
        case .reset: return "reset"
        case .stillOpen: return "still open"
        case .error(let e): return "error \(String(cString: strerror(e)))"
        }
    }
}

/// One non-blocking client connection; closed on deinit if the test did not close it.
final class OpsClient {
    private(set) var fd: CInt

    private init(fd: CInt) { self.fd = fd }
    deinit { close() }

    /// Connects to a numeric IPv4 or IPv6 `host` within `timeout` seconds, from the local
    /// address `source` if given (another loopback address, such as 127.0.0.2, is another client).
    static func connect(host: String, port: Int, from source: String? = nil, timeout: Double = 3) throws -> OpsClient {
        let address = try OpsSockets.address(host: host, port: port)
        return try connect(address, family: CInt(address.0.ss_family), timeout: timeout, name: "\(host):\(port)", source: source)
    }

    /// Connects to the Unix-domain socket at `path`.
    static func connect(unixPath path: String, timeout: Double = 3) throws -> OpsClient {
        try connect(OpsSockets.unixAddress(path), family: AF_UNIX, timeout: timeout, name: path)
    }

    private static func connect(_ address: (sockaddr_storage, socklen_t), family: CInt, timeout: Double, name: String,
                                source: String? = nil) throws -> OpsClient {
        let client = OpsClient(fd: try OpsSockets.socket(family))
        if let source {
            var (local, length) = try OpsSockets.address(host: source, port: 0)
            let bound = withUnsafePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(client.fd, $0, length) }
            }
            guard bound == 0 else { throw OpsFailure("bind \(source): \(String(cString: strerror(errno)))") }
        }
        guard OpsSockets.startConnect(client.fd, address) else {
            throw OpsFailure("connect \(name): \(String(cString: strerror(errno)))")
        }
        let revents = OpsSockets.wait(client.fd, Int16(POLLOUT), until: Ops.now() + timeout)
        guard revents != 0 else { throw OpsFailure("connect \(name): no answer within \(timeout) s") }
        if let error = OpsSockets.intOption(client.fd, SOL_SOCKET, SO_ERROR), error != 0 {
            throw OpsFailure("connect \(name): \(String(cString: strerror(error)))")
        }
        return client
    }

    /// Adopts a connected (or connecting) non-blocking fd.
    static func adopt(_ fd: CInt) -> OpsClient { OpsClient(fd: fd) }

    var localPort: Int? { OpsSockets.localAddress(fd).flatMap(OpsSockets.port(of:)) }

    /// Sends every byte within `timeout` seconds.
    func send(_ bytes: [UInt8], timeout: Double = 3) throws {
        let deadline = Ops.now() + timeout
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
            if n > 0 { offset += n; continue }
            if n < 0 && (errno == EAGAIN || errno == EINTR) {
                guard OpsSockets.wait(fd, Int16(POLLOUT), until: deadline) != 0 else {
                    throw OpsFailure("send: \(bytes.count - offset) of \(bytes.count) bytes not taken within \(timeout) s")
                }
                continue
            }
            throw OpsFailure("send: \(String(cString: strerror(errno)))")
        }
    }

    func send(_ text: String, timeout: Double = 3) throws { try send(Array(text.utf8), timeout: timeout) }

    /// Reads exactly `count` bytes within `timeout` seconds.
    func receive(exactly count: Int, timeout: Double = 3) throws -> [UInt8] {
        let deadline = Ops.now() + timeout
        var result: [UInt8] = []
        result.reserveCapacity(count)
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while result.count < count {
            let want = min(buffer.count, count - result.count)
            let n = buffer.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, want, 0) }
            if n > 0 { result += buffer[..<n]; continue }
            if n == 0 { throw OpsFailure("EOF after \(result.count) of \(count) bytes") }
            if errno == EAGAIN || errno == EINTR {
                guard OpsSockets.wait(fd, Int16(POLLIN), until: deadline) != 0 else {
                    throw OpsFailure("only \(result.count) of \(count) bytes within \(timeout) s")
                }
                continue
            }
            throw OpsFailure("recv after \(result.count) of \(count) bytes: \(String(cString: strerror(errno)))")
        }
        return result
    }

    /// Sends `text` and expects exactly it back.
    func expectEcho(_ text: String, timeout: Double = 3) throws {
        try send(text, timeout: timeout)
        let back = try receive(exactly: text.utf8.count, timeout: timeout)
        guard back == Array(text.utf8) else {
            throw OpsFailure("echo mismatch: sent \(text.debugDescription), got \(String(decoding: back, as: UTF8.self).debugDescription)")
        }
    }

    /// Reads (and discards) until the stream ends or `timeout` seconds pass.
    /// Returns how it ended and how many bytes came before.
    func waitForEnd(timeout: Double) -> (OpsStreamEnd, Int) {
        let deadline = Ops.now() + timeout
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        var received = 0
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 { received += n; continue }
            if n == 0 { return (.eof, received) }
            if errno == EAGAIN || errno == EINTR {
                if OpsSockets.wait(fd, Int16(POLLIN), until: deadline) == 0 { return (.stillOpen, received) }
                continue
            }
            return (errno == ECONNRESET ? .reset : .error(errno), received)
        }
    }

    /// True when nothing shows the stream ended (no EOF, no reset) right now.
    var looksOpen: Bool {
        var byte: UInt8 = 0
        let n = Glibc.recv(fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT))
        return n > 0 || (n < 0 && errno == EAGAIN)
    }

    func shutdownWrite() { _ = Glibc.shutdown(fd, Int32(SHUT_WR)) }

    /// Closes with an RST instead of a FIN (SO_LINGER with a zero timeout).
    func closeWithReset() {
        guard fd >= 0 else { return }
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        close()
    }

    func close() {
        guard fd >= 0 else { return }
        Glibc.close(fd)
        fd = -1
    }
}

/// Many client connections at once, for load and scale.
enum OpsCrowd {
    /// Opens `count` connections to `host:port`, `batch` connects in flight at a time.
    static func connect(count: Int, host: String, port: Int, batch: Int = 500, timeout: Double = 30) throws -> [OpsClient] {
        let address = try OpsSockets.address(host: host, port: port)
        let deadline = Ops.now() + timeout
        var clients: [OpsClient] = []
        clients.reserveCapacity(count)
        while clients.count < count {
            var pending: [pollfd] = []
            for _ in 0..<min(batch, count - clients.count) {
                let fd = try OpsSockets.socket(CInt(address.0.ss_family))
                guard OpsSockets.startConnect(fd, address) else {
                    let e = errno
                    Glibc.close(fd)
                    throw OpsFailure("connect #\(clients.count + pending.count): \(String(cString: strerror(e)))")
                }
                pending.append(pollfd(fd: fd, events: Int16(POLLOUT), revents: 0))
            }
            var done = 0
            while done < pending.count {
                let rc = poll(&pending, nfds_t(pending.count), OpsSockets.millisecondsLeft(deadline))
                if rc < 0 && errno == EINTR { continue }
                guard rc > 0 else {
                    pending.forEach { if $0.fd >= 0 { Glibc.close($0.fd) } }
                    throw OpsFailure("only \(clients.count + done) of \(count) connects completed within \(timeout) s")
                }
                for i in pending.indices where pending[i].fd >= 0 && pending[i].revents != 0 {
                    let fd = pending[i].fd
                    if let error = OpsSockets.intOption(fd, SOL_SOCKET, SO_ERROR), error != 0 {
                        pending.forEach { if $0.fd >= 0 { Glibc.close($0.fd) } }
                        throw OpsFailure("connect #\(clients.count + done): \(String(cString: strerror(error)))")
                    }
                    clients.append(OpsClient.adopt(fd))
                    pending[i].fd = -1  // poll ignores negative fds
                    done += 1
                }
            }
        }
        return clients
    }

    /// Every client sends its message at once, then every echo is read back concurrently (one
    /// poll over all of them). Returns the indices of clients whose echo was wrong or missing.
    static func echoAtOnce(_ clients: [OpsClient], timeout: Double = 10, message: (Int) -> [UInt8]) throws -> [Int] {
        let deadline = Ops.now() + timeout
        let messages = clients.indices.map(message)
        for (i, client) in clients.enumerated() {
            try client.send(messages[i], timeout: max(0.1, deadline - Ops.now()))
        }
        var received = Array(repeating: [UInt8](), count: clients.count)
        var polls = clients.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
        var remaining = clients.count
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        var bad = Set<Int>()
        while remaining > 0 {
            let rc = poll(&polls, nfds_t(polls.count), OpsSockets.millisecondsLeft(deadline))
            if rc < 0 && errno == EINTR { continue }
            if rc <= 0 { break }
            for i in polls.indices where polls[i].fd >= 0 && polls[i].revents != 0 {
                let want = messages[i].count - received[i].count
                let n = buffer.withUnsafeMutableBytes { Glibc.recv(polls[i].fd, $0.baseAddress, want, 0) }
                if n > 0 { received[i] += buffer[..<n] }
                if n < 0 && (errno == EAGAIN || errno == EINTR) { continue }
                if n <= 0 { bad.insert(i) }
                if n <= 0 || received[i].count == messages[i].count {
                    polls[i].fd = -1
                    remaining -= 1
                }
            }
        }
        for i in clients.indices where received[i] != messages[i] { bad.insert(i) }
        return bad.sorted()
    }
}

/// A listening TCP socket made by a test (for socket activation, or to find a free port).
final class OpsListener {
    private(set) var fd: CInt
    let port: Int

    init(host: String, port: Int = 0) throws {
        let address = try OpsSockets.address(host: host, port: port)
        let fd = try OpsSockets.socket(CInt(address.0.ss_family))
        var one: CInt = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<CInt>.size))
        var storage = address.0
        let rc = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, address.1) }
        }
        guard rc == 0, Glibc.listen(fd, 128) == 0,
              let bound = OpsSockets.localAddress(fd).flatMap(OpsSockets.port(of:)) else {
            let e = errno
            Glibc.close(fd)
            throw OpsFailure("listen on \(host):\(port): \(String(cString: strerror(e)))")
        }
        self.fd = fd
        self.port = bound
    }

    /// A listening Unix-domain socket at `path` (port is 0).
    init(unixPath path: String) throws {
        let fd = try OpsSockets.socket(AF_UNIX)
        let address = OpsSockets.unixAddress(path)
        var storage = address.0
        let rc = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, address.1) }
        }
        guard rc == 0, Glibc.listen(fd, 128) == 0 else {
            let e = errno
            Glibc.close(fd)
            throw OpsFailure("listen on \(path): \(String(cString: strerror(e)))")
        }
        self.fd = fd
        self.port = 0
    }

    deinit { close() }

    func close() {
        guard fd >= 0 else { return }
        Glibc.close(fd)
        fd = -1
    }
}
