// The one client socket of the tests: TCP over IPv4 or IPv6 (from a chosen local address if
// asked), or Unix-domain, with a deadline on every operation.
//
// The socket itself is non-blocking; every wait goes through poll(2) with the time left, so no
// test can hang on a socket. Every send uses MSG_NOSIGNAL: a peer that went away gives EPIPE,
// never a SIGPIPE that would kill the test process.

import Glibc

/// A socket call that failed in a test.
public struct SocketFailure: Error, CustomStringConvertible {
    /// The call and what it was doing.
    public let operation: String
    /// The errno (0 for an unexpected EOF).
    public let code: CInt
    /// A failure of `operation` with errno `code`.
    public init(operation: String, code: CInt) {
        self.operation = operation
        self.code = code
    }
    public var description: String { "\(operation) failed: \(String(cString: strerror(code))) (errno \(code))" }
}

/// How a read-until-the-end finished.
public enum StreamEnd: Equatable, CustomStringConvertible {
    /// recv returned 0: the peer closed cleanly (FIN).
    case eof
    /// recv failed with ECONNRESET: the peer sent RST.
    case reset
    /// recv failed with another error.
    case failed(CInt)
    /// The deadline passed first: the stream is still open.
    case timeout
    /// More bytes arrived than the caller allowed.
    case tooMuch

    /// The end of a stream whose recv failed with `code`.
    public static func error(_ code: CInt) -> StreamEnd { code == ECONNRESET ? .reset : .failed(code) }

    /// The peer ended the stream (EOF, reset or another error), rather than the deadline passing.
    public var isClosed: Bool { self == .eof || self == .reset || { if case .failed = self { return true }; return false }() }

    public var description: String {
        switch self {
        case .eof: return "EOF"
        case .reset: return "reset"
        case .failed(let e): return "error \(String(cString: strerror(e))) (errno \(e))"
        case .timeout: return "still open (timeout)"
        case .tooMuch: return "more bytes than expected"
        }
    }
}

/// A connected client socket. Thread-safe enough for one sender thread and one reader thread.
public final class TestSocket: @unchecked Sendable {
    /// The socket (non-blocking).
    public let fd: CInt
    private var closed = false
    /// The local port, kept once known: the test may ask for it after closing the socket.
    private var knownLocalPort: Int?

    private init(fd: CInt) { self.fd = fd }

    deinit { if !closed { Glibc.close(fd) } }

    /// Connects to `host` (an IPv4 or IPv6 literal) and `port` within `timeout` seconds, from the
    /// local address `source` if given (another loopback address, such as 127.0.0.2, is another
    /// client). `receiveBuffer` sets SO_RCVBUF before connecting, to make a slow reader;
    /// `maxSegment` sets TCP_MAXSEG, so the peer is told a small MSS and its kernel sends (and
    /// frees its send buffer) in small steps.
    public static func connect(host: String = "127.0.0.1", port: Int, from source: String? = nil, timeout: Double = 5,
                               receiveBuffer: Int? = nil, maxSegment: Int? = nil) throws -> TestSocket {
        let address = try LoopbackSockets.address(host: host, port: port)
        return try connect(address, timeout: timeout, name: "\(host):\(port)", source: source, receiveBuffer: receiveBuffer,
                           maxSegment: maxSegment)
    }

    /// Connects from the local address `source` (another loopback address, such as 127.0.0.2, is
    /// another client): the same as ``connect(host:port:from:timeout:receiveBuffer:)``, under the
    /// argument order tests written before it use.
    public static func connect(host: String = "127.0.0.1", port: Int, timeout: Double = 5, receiveBuffer: Int? = nil,
                               maxSegment: Int? = nil, source: String) throws -> TestSocket {
        try connect(host: host, port: port, from: source, timeout: timeout, receiveBuffer: receiveBuffer, maxSegment: maxSegment)
    }

    /// Connects to the Unix-domain socket at `path` within `timeout` seconds.
    public static func connect(unixPath path: String, timeout: Double = 5) throws -> TestSocket {
        try connect(LoopbackSockets.unixAddress(path), timeout: timeout, name: path)
    }

    private static func connect(_ address: (sockaddr_storage, socklen_t), timeout: Double, name: String,
                                source: String? = nil, receiveBuffer: Int? = nil, maxSegment: Int? = nil) throws -> TestSocket {
        let sock = TestSocket(fd: try LoopbackSockets.socket(CInt(address.0.ss_family)))
        if let receiveBuffer {
            var size = CInt(receiveBuffer)
            setsockopt(sock.fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<CInt>.size))
        }
        if let maxSegment {
            var size = CInt(maxSegment)
            setsockopt(sock.fd, CInt(IPPROTO_TCP), TCP_MAXSEG, &size, socklen_t(MemoryLayout<CInt>.size))
        }
        if let source {
            var (local, length) = try LoopbackSockets.address(host: source, port: 0)
            let bound = withUnsafePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(sock.fd, $0, length) }
            }
            guard bound == 0 else { throw SocketFailure(operation: "bind \(source)", code: errno) }
        }
        guard LoopbackSockets.startConnect(sock.fd, address) else {
            throw SocketFailure(operation: "connect to \(name)", code: errno)
        }
        guard LoopbackSockets.wait(sock.fd, Int16(POLLOUT), until: monotonicSeconds() + timeout) != 0 else {
            throw SocketFailure(operation: "connect to \(name) (timed out)", code: ETIMEDOUT)
        }
        if let error = LoopbackSockets.intOption(sock.fd, SOL_SOCKET, SO_ERROR), error != 0 {
            throw SocketFailure(operation: "connect to \(name)", code: error)
        }
        sock.knownLocalPort = sock.queryLocalPort()
        return sock
    }

    /// Adopts a connected (or connecting) non-blocking fd; it is closed with the socket.
    public static func adopt(_ fd: CInt) -> TestSocket { TestSocket(fd: fd) }

    /// The local port (how the server's logs name this client); 0 for a Unix-domain socket.
    /// Still known after ``close()``.
    public var localPort: Int { knownLocalPort ?? queryLocalPort() }

    private func queryLocalPort() -> Int { LoopbackSockets.localAddress(fd).flatMap(LoopbackSockets.port(of:)) ?? 0 }

    /// Sends every byte within `timeout` seconds, or throws (with the count sent so far in the message).
    public func send(_ bytes: [UInt8], timeout: Double = 10) throws {
        let sent = bytes.withUnsafeBytes { sendAll($0, timeout: timeout) }
        if case .failure(let failure) = sent { throw failure }
    }

    /// Sends `text` as UTF-8 within `timeout` seconds.
    public func send(_ text: String, timeout: Double = 10) throws { try send(Array(text.utf8), timeout: timeout) }

    /// Sends as much of `bytes` as it can within `timeout`; returns the count sent and the error that stopped it.
    public func sendAll(_ bytes: UnsafeRawBufferPointer, timeout: Double) -> Result<Int, SocketFailure> {
        let deadline = monotonicSeconds() + timeout
        var offset = 0
        while offset < bytes.count {
            let n = Glibc.send(fd, bytes.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
            if n > 0 {
                offset += n
                continue
            }
            let e = errno
            if n < 0 && e == EINTR { continue }
            guard n < 0 && (e == EAGAIN || e == EWOULDBLOCK) else {
                return .failure(SocketFailure(operation: "send (after \(offset) of \(bytes.count) bytes)", code: e))
            }
            if LoopbackSockets.wait(fd, Int16(POLLOUT), until: deadline) == 0 {
                return .failure(SocketFailure(operation: "send (after \(offset) of \(bytes.count) bytes, timed out)", code: ETIMEDOUT))
            }
        }
        return .success(offset)
    }

    /// One non-blocking send; returns the bytes taken (0 when the socket buffer is full), nil on error.
    public func sendNow(_ bytes: UnsafeRawBufferPointer) -> Int? {
        let n = Glibc.send(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT))
        if n >= 0 { return n }
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : nil
    }

    /// One non-blocking send of what the socket takes now: the count (0 when full), or the error.
    public func sendSome(_ bytes: ArraySlice<UInt8>) -> Result<Int, SocketFailure> {
        let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT)) }
        if n >= 0 { return .success(n) }
        if errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR { return .success(0) }
        return .failure(SocketFailure(operation: "send", code: errno))
    }

    /// One non-blocking read of whatever is there: nil when nothing is, [] at EOF; throws on error.
    public func receiveNow(max: Int = 65536) throws -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: max)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, max, Int32(MSG_DONTWAIT)) }
        if n > 0 { return Array(buffer[..<n]) }
        if n == 0 { return [] }
        let e = errno
        if e == EAGAIN || e == EWOULDBLOCK || e == EINTR { return nil }
        throw SocketFailure(operation: "recv", code: e)
    }

    /// Receives exactly `count` bytes within `timeout` seconds, or throws (EOF, error, timeout).
    public func receive(exactly count: Int, timeout: Double = 5) throws -> [UInt8] {
        let deadline = monotonicSeconds() + timeout
        var out = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            let n = out.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + got, count - got, 0) }
            if n > 0 {
                got += n
                continue
            }
            if n == 0 {
                throw SocketFailure(operation: "recv: EOF after \(got) of \(count) bytes: \(Self.preview(out[..<got]))", code: 0)
            }
            let e = errno
            if e == EINTR { continue }
            guard e == EAGAIN || e == EWOULDBLOCK else {
                throw SocketFailure(operation: "recv (after \(got) of \(count) bytes)", code: e)
            }
            if LoopbackSockets.wait(fd, Int16(POLLIN), until: deadline) == 0 {
                throw SocketFailure(operation: "recv: timed out after \(got) of \(count) bytes: \(Self.preview(out[..<got]))", code: ETIMEDOUT)
            }
        }
        return out
    }

    /// Receives exactly `count` bytes as UTF-8 text within `timeout` seconds.
    public func receiveString(exactly count: Int, timeout: Double = 5) throws -> String {
        String(decoding: try receive(exactly: count, timeout: timeout), as: UTF8.self)
    }

    /// Reads up to `count` bytes, until EOF, an error or `timeout`: what arrived and how it ended
    /// (`.timeout` when the stream is still open, whether or not every byte came).
    public func receive(upTo count: Int, timeout: Double = 10) -> (bytes: [UInt8], end: StreamEnd) {
        let deadline = monotonicSeconds() + timeout
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while out.count < count {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, min($0.count, count - out.count), 0) }
            if n > 0 { out += buffer[..<n]; continue }
            if n == 0 { return (out, .eof) }
            let e = errno
            if e == EINTR { continue }
            guard e == EAGAIN || e == EWOULDBLOCK else { return (out, .error(e)) }
            if LoopbackSockets.wait(fd, Int16(POLLIN), until: deadline) == 0 { break }
        }
        return (out, .timeout)
    }

    /// Sends `text` and expects exactly it back within `timeout` seconds.
    public func expectEcho(_ text: String, timeout: Double = 5) throws {
        try send(text, timeout: timeout)
        let back = try receive(exactly: text.utf8.count, timeout: timeout)
        guard back == Array(text.utf8) else {
            throw TestFailure("echo mismatch: sent \(text.debugDescription), got \(String(decoding: back, as: UTF8.self).debugDescription)")
        }
    }

    /// Reads until the peer closes, an error, `timeout` seconds, or more than `limit` bytes.
    public func receiveUntilEnd(timeout: Double = 5, limit: Int = 64 << 20) -> (bytes: [UInt8], end: StreamEnd) {
        let deadline = monotonicSeconds() + timeout
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                out += chunk[..<n]
                if out.count > limit { return (out, .tooMuch) }
                continue
            }
            if n == 0 { return (out, .eof) }
            let e = errno
            if e == EINTR { continue }
            guard e == EAGAIN || e == EWOULDBLOCK else { return (out, .error(e)) }
            if LoopbackSockets.wait(fd, Int16(POLLIN), until: deadline) == 0 { return (out, .timeout) }
        }
    }

    /// Reads (and discards) until the stream ends or `timeout` seconds pass: how it ended
    /// (`.timeout`: still open) and how many bytes came before.
    public func waitForEnd(timeout: Double) -> (StreamEnd, Int) {
        let deadline = monotonicSeconds() + timeout
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        var received = 0
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 { received += n; continue }
            if n == 0 { return (.eof, received) }
            let e = errno
            if e == EAGAIN || e == EWOULDBLOCK || e == EINTR {
                if LoopbackSockets.wait(fd, Int16(POLLIN), until: deadline) == 0 { return (.timeout, received) }
                continue
            }
            return (.error(e), received)
        }
    }

    /// True if nothing arrives (no byte, no EOF) within `seconds`.
    public func staysQuiet(for seconds: Double) -> Bool {
        LoopbackSockets.wait(fd, Int16(POLLIN), until: monotonicSeconds() + seconds) == 0
    }

    /// True when nothing shows the stream ended (no EOF, no reset) right now.
    public var looksOpen: Bool {
        var byte: UInt8 = 0
        let n = Glibc.recv(fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT))
        return n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
    }

    /// shutdown(SHUT_WR): the peer reads EOF, and we can still read.
    public func shutdownWrite() {
        Glibc.shutdown(fd, Int32(SHUT_WR))
    }

    /// Closes with SO_LINGER {1, 0}: the kernel sends RST instead of FIN.
    public func closeWithReset() {
        guard !closed else { return }
        var l = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
        close()
    }

    /// Closes the socket (at most once; deinit closes it otherwise).
    public func close() {
        guard !closed else { return }
        if knownLocalPort == nil { knownLocalPort = queryLocalPort() }
        closed = true
        Glibc.close(fd)
    }

    /// The first 80 bytes as a quoted string, for failure messages.
    public static func preview<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        let shown = String(decoding: bytes.prefix(80), as: UTF8.self).debugDescription
        return bytes.count > 80 ? "\(shown)… (\(bytes.count) bytes)" : shown
    }
}
