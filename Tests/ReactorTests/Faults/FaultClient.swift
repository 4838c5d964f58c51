// Loopback client sockets for the fault tests, and a pump that drives several clients at once
// through poll(2), sending and reading at the same time so that no echo can deadlock, with a
// deadline on everything.

import CEpoll
import Glibc

/// A socket call that failed in a fault test.
struct FaultSocketError: Error, CustomStringConvertible {
    let operation: String
    let code: CInt
    var description: String { "\(operation): \(String(cString: strerror(code))) (errno \(code))" }
}

/// How a client's conversation ended.
enum FaultEnd: Equatable, CustomStringConvertible {
    /// Still going (the pump stops at its deadline).
    case open
    /// The server closed cleanly: recv returned 0.
    case eof
    /// recv or send failed, usually ECONNRESET or EPIPE.
    case failed(CInt)

    var description: String {
        switch self {
        case .open: return "open"
        case .eof: return "EOF"
        case .failed(let e): return "error \(String(cString: strerror(e))) (errno \(e))"
        }
    }

    var isClosed: Bool { self != .open }
}

/// One non-blocking client socket connected to 127.0.0.1.
final class FaultClient {
    private(set) var fd: CInt
    /// The client's own port: the server sees it as the peer port.
    let localPort: Int

    init(port: Int) throws {
        let s = socket(AF_INET, CEPOLL_SOCK_STREAM, 0)
        guard s >= 0 else { throw FaultSocketError(operation: "socket", code: errno) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        // A blocking connect: on loopback it completes (into the listen backlog) at once, even
        // when the server is not accepting.
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard rc == 0 else {
            let e = errno
            Glibc.close(s)
            throw FaultSocketError(operation: "connect to 127.0.0.1:\(port)", code: e)
        }
        var local = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(s, $0, &length) }
        }
        _ = fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK)
        fd = s
        localPort = Int(UInt16(bigEndian: local.sin_port))
    }

    deinit { if fd >= 0 { Glibc.close(fd) } }

    func shutdownWrite() { _ = shutdown(fd, CInt(SHUT_WR)) }

    func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }

    /// Closes with SO_LINGER {on, 0}: the kernel sends RST instead of FIN.
    func reset() {
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        close()
    }

    /// Sends as much of `bytes` as the socket takes now. Returns the count, or the errno.
    func sendSome(_ bytes: ArraySlice<UInt8>) -> Result<Int, FaultSocketError> {
        let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        if n >= 0 { return .success(n) }
        if errno == EAGAIN || errno == EINTR { return .success(0) }
        return .failure(FaultSocketError(operation: "send", code: errno))
    }

    /// Sends all of `bytes` (waiting with poll), up to `timeout` seconds.
    func sendAll(_ bytes: [UInt8], timeout: Double = 10) throws {
        let deadline = faultNow() + timeout
        var offset = 0
        while offset < bytes.count {
            switch sendSome(bytes[offset...]) {
            case .success(let n):
                offset += n
                if n == 0 {
                    guard faultNow() < deadline else { throw FaultSocketError(operation: "send (timeout)", code: ETIMEDOUT) }
                    var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                    _ = poll(&p, 1, 50)
                }
            case .failure(let e): throw e
            }
        }
    }

    /// Reads exactly `count` bytes (or until EOF/error/timeout).
    func receive(_ count: Int, timeout: Double = 10) -> (bytes: [UInt8], end: FaultEnd) {
        let deadline = faultNow() + timeout
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while out.count < count && faultNow() < deadline {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, min($0.count, count - out.count), 0) }
            if n > 0 { out.append(contentsOf: buffer[..<n]); continue }
            if n == 0 { return (out, .eof) }
            if errno == EAGAIN || errno == EINTR {
                var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                _ = poll(&p, 1, 50)
                continue
            }
            return (out, .failed(errno))
        }
        return (out, .open)
    }

    /// Reads until EOF or an error (or `timeout`), returning what arrived.
    func readToEnd(timeout: Double = 10) -> (bytes: [UInt8], end: FaultEnd) {
        let deadline = faultNow() + timeout
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while faultNow() < deadline {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 { out.append(contentsOf: buffer[..<n]); continue }
            if n == 0 { return (out, .eof) }
            if errno == EAGAIN || errno == EINTR {
                var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                _ = poll(&p, 1, 50)
                continue
            }
            return (out, .failed(errno))
        }
        return (out, .open)
    }
}

/// When a pumped client shuts down its writing side.
enum FaultHalfClose {
    /// As soon as every byte is sent: the server sees EOF behind the data.
    case afterSend
    /// Never: the connection stays open (the pump stops once the echo is complete).
    case never
}

/// One client's part in a pump, and what happened to it.
final class FaultConversation {
    let client: FaultClient
    let payload: [UInt8]
    let halfClose: FaultHalfClose
    /// Send in chunks of at most this many bytes, so segments vary.
    let chunk: Int
    private(set) var sent = 0
    private(set) var received: [UInt8] = []
    private(set) var end = FaultEnd.open
    private var shutDown = false

    init(_ client: FaultClient, payload: [UInt8], halfClose: FaultHalfClose = .afterSend, chunk: Int = 16 * 1024) {
        self.client = client
        self.payload = payload
        self.halfClose = halfClose
        self.chunk = chunk
    }

    /// Done: closed by the server, or (when not half-closing) the whole echo is back.
    var isDone: Bool {
        if end.isClosed { return true }
        return halfClose == .never && sent == payload.count && received.count >= payload.count
    }

    /// What arrived equals what was sent, and the connection ended as planned.
    var echoedExactly: Bool { received == payload && (halfClose == .never || end == .eof) }

    /// What arrived is a prefix of what was sent: nothing lost in the middle, duplicated or reordered.
    var receivedIsPrefix: Bool { received.count <= payload.count && payload.starts(with: received) }

    var summary: String {
        "client :\(client.localPort): sent \(sent)/\(payload.count), received \(received.count), end \(end)"
            + (receivedIsPrefix ? "" : ", NOT a prefix of what was sent")
    }

    fileprivate var pollEvents: Int16 {
        var e = Int16(POLLIN)
        if sent < payload.count && !end.isClosed { e |= Int16(POLLOUT) }
        return e
    }

    fileprivate func step(_ revents: Int16, readBuffer: inout [UInt8]) {
        if end.isClosed { return }
        if sent < payload.count && revents & Int16(POLLOUT | POLLERR | POLLHUP) != 0 {
            let upper = min(payload.count, sent + chunk)
            switch client.sendSome(payload[sent..<upper]) {
            case .success(let n): sent += n
            case .failure(let e): end = .failed(e.code)
            }
        }
        if sent == payload.count && halfClose == .afterSend && !shutDown {
            shutDown = true
            client.shutdownWrite()
        }
        if revents & Int16(POLLIN | POLLERR | POLLHUP) != 0 {
            while !end.isClosed {
                let n = readBuffer.withUnsafeMutableBytes { recv(client.fd, $0.baseAddress, $0.count, 0) }
                if n > 0 { received.append(contentsOf: readBuffer[..<n]); continue }
                if n == 0 { end = .eof; break }
                if errno == EAGAIN || errno == EINTR { break }
                end = .failed(errno)
            }
        }
    }
}

enum FaultPump {
    /// Drives every conversation at once until each is done or `timeout` seconds pass.
    /// Returns false on timeout.
    @discardableResult
    static func run(_ conversations: [FaultConversation], timeout: Double = 30) -> Bool {
        let deadline = faultNow() + timeout
        var readBuffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let active = conversations.filter { !$0.isDone }
            if active.isEmpty { return true }
            if faultNow() >= deadline { return false }
            var fds = active.map { pollfd(fd: $0.client.fd, events: $0.pollEvents, revents: 0) }
            let n = poll(&fds, nfds_t(fds.count), 50)
            if n <= 0 { continue }
            for (i, conversation) in active.enumerated() where fds[i].revents != 0 {
                conversation.step(fds[i].revents, readBuffer: &readBuffer)
            }
        }
    }
}

/// A non-periodic payload: a lost, duplicated or reordered chunk never lines up by chance.
func faultPayload(_ count: Int, seed: UInt64, excluding: UInt8? = nil) -> [UInt8] {
    var random = FaultRandom(seed: seed)
    return random.bytes(count, excluding: excluding)
}
