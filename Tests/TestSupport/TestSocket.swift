// Blocking-style loopback client sockets for tests, with a deadline on every operation.
//
// The socket itself is non-blocking; every wait goes through poll(2) with the time left, so no
// test can hang on a socket. Every send uses MSG_NOSIGNAL: a peer that went away gives EPIPE,
// never a SIGPIPE that would kill the test process.

import Foundation
import Glibc

/// A socket call that failed in a test.
public struct SocketFailure: Error, CustomStringConvertible {
    public let operation: String
    public let code: CInt
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
    /// recv failed (ECONNRESET: the peer sent RST).
    case failed(CInt)
    /// The deadline passed first.
    case timeout
    /// More bytes arrived than the caller allowed.
    case tooMuch

    public var description: String {
        switch self {
        case .eof: return "EOF"
        case .failed(let e): return "error \(String(cString: strerror(e))) (errno \(e))"
        case .timeout: return "timeout"
        case .tooMuch: return "more bytes than expected"
        }
    }
}

/// Seconds on the monotonic clock.
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Milliseconds left until `deadline`, for poll(2); never negative.
private func millisecondsLeft(_ deadline: Double) -> CInt {
    CInt(max(0, min(Double(CInt.max), ((deadline - monotonicSeconds()) * 1000).rounded(.up))))
}

/// Deterministic, non-periodic test bytes: a reordered, lost or duplicated chunk never matches.
public func testPattern(count: Int, seed: UInt64 = 0x9E37_79B9_7F4A_7C15) -> [UInt8] {
    var state = seed
    var out = [UInt8](repeating: 0, count: count)
    var i = 0
    while i < count {
        // SplitMix64
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        for shift in stride(from: 0, to: 64, by: 8) where i < count {
            out[i] = UInt8(truncatingIfNeeded: z >> UInt64(shift))
            i += 1
        }
    }
    return out
}

/// The index of the first byte where `a` and `b` differ (or the shorter length), nil if equal.
public func firstDifference(_ a: [UInt8], _ b: [UInt8]) -> Int? {
    let n = min(a.count, b.count)
    var i = 0
    while i < n {
        if a[i] != b[i] { return i }
        i += 1
    }
    return a.count == b.count ? nil : n
}

/// A connected TCP client socket. Thread-safe enough for one sender thread and one reader thread.
public final class TestSocket: @unchecked Sendable {
    public let fd: CInt
    private var closed = false

    private init(fd: CInt) { self.fd = fd }

    deinit { if !closed { Glibc.close(fd) } }

    /// Connects to `host` (an IPv4 or IPv6 loopback literal) and `port` within `timeout` seconds.
    /// `receiveBuffer` sets SO_RCVBUF before connecting, to make a slow reader; `maxSegment`
    /// sets TCP_MAXSEG, so the peer is told a small MSS and its kernel sends (and frees its
    /// send buffer) in small steps. `source` (an IPv4 literal, e.g. `127.0.0.2`: all of 127/8 is
    /// loopback) binds the client's own address first.
    public static func connect(host: String = "127.0.0.1", port: Int, timeout: Double = 5, receiveBuffer: Int? = nil,
                               maxSegment: Int? = nil, source: String? = nil) throws -> TestSocket {
        let family = host.contains(":") ? AF_INET6 : AF_INET
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SocketFailure(operation: "socket", code: errno) }
        let sock = TestSocket(fd: fd)
        if let receiveBuffer {
            var size = CInt(receiveBuffer)
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<CInt>.size))
        }
        if let source {
            var s = sockaddr_in()
            s.sin_family = sa_family_t(AF_INET)
            guard family == AF_INET, inet_pton(AF_INET, source, &s.sin_addr) == 1 else {
                throw SocketFailure(operation: "inet_pton \(source)", code: EINVAL)
            }
            let bound = withUnsafePointer(to: &s) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard bound == 0 else { throw SocketFailure(operation: "bind to \(source)", code: errno) }
        }
        if let maxSegment {
            var size = CInt(maxSegment)
            setsockopt(fd, CInt(IPPROTO_TCP), TCP_MAXSEG, &size, socklen_t(MemoryLayout<CInt>.size))
        }
        let rc: CInt
        if family == AF_INET {
            var a = sockaddr_in()
            a.sin_family = sa_family_t(AF_INET)
            a.sin_port = in_port_t(UInt16(port)).bigEndian
            guard inet_pton(AF_INET, host, &a.sin_addr) == 1 else { throw SocketFailure(operation: "inet_pton \(host)", code: EINVAL) }
            rc = withUnsafePointer(to: &a) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        } else {
            var a = sockaddr_in6()
            a.sin6_family = sa_family_t(AF_INET6)
            a.sin6_port = in_port_t(UInt16(port)).bigEndian
            guard inet_pton(AF_INET6, host, &a.sin6_addr) == 1 else { throw SocketFailure(operation: "inet_pton \(host)", code: EINVAL) }
            rc = withUnsafePointer(to: &a) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
        }
        if rc != 0 {
            let e = errno
            guard e == EINPROGRESS else { throw SocketFailure(operation: "connect to \(host):\(port)", code: e) }
            var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            guard poll(&p, 1, millisecondsLeft(monotonicSeconds() + timeout)) == 1 else {
                throw SocketFailure(operation: "connect to \(host):\(port) (timed out)", code: ETIMEDOUT)
            }
            var error: CInt = 0
            var len = socklen_t(MemoryLayout<CInt>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len)
            guard error == 0 else { throw SocketFailure(operation: "connect to \(host):\(port)", code: error) }
        }
        return sock
    }

    /// The local port (how the server's logs name this client).
    public var localPort: Int {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        let family = storage.ss_family
        return withUnsafeBytes(of: storage) { raw -> Int in
            if family == sa_family_t(AF_INET6) {
                return Int(UInt16(bigEndian: raw.loadUnaligned(as: sockaddr_in6.self).sin6_port))
            }
            return Int(UInt16(bigEndian: raw.loadUnaligned(as: sockaddr_in.self).sin_port))
        }
    }

    /// Sends every byte within `timeout` seconds, or throws (with the count sent so far in the message).
    public func send(_ bytes: [UInt8], timeout: Double = 10) throws {
        let sent = bytes.withUnsafeBytes { sendAll($0, timeout: timeout) }
        if case .failure(let failure) = sent { throw failure }
    }

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
            var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            let left = millisecondsLeft(deadline)
            if left == 0 || poll(&p, 1, left) == 0 {
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
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let left = millisecondsLeft(deadline)
            if left == 0 || poll(&p, 1, left) == 0 {
                throw SocketFailure(operation: "recv: timed out after \(got) of \(count) bytes: \(Self.preview(out[..<got]))", code: ETIMEDOUT)
            }
        }
        return out
    }

    public func receiveString(exactly count: Int, timeout: Double = 5) throws -> String {
        String(decoding: try receive(exactly: count, timeout: timeout), as: UTF8.self)
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
            guard e == EAGAIN || e == EWOULDBLOCK else { return (out, .failed(e)) }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let left = millisecondsLeft(deadline)
            if left == 0 || poll(&p, 1, left) == 0 { return (out, .timeout) }
        }
    }

    /// True if nothing arrives (no byte, no EOF) within `seconds`.
    public func staysQuiet(for seconds: Double) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, millisecondsLeft(monotonicSeconds() + seconds)) == 0
    }

    /// shutdown(SHUT_WR): the peer reads EOF, and we can still read.
    public func shutdownWrite() {
        Glibc.shutdown(fd, Int32(SHUT_WR))
    }

    /// Closes with SO_LINGER {1, 0}: the kernel sends RST instead of FIN.
    public func closeWithReset() {
        var l = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
        close()
    }

    public func close() {
        guard !closed else { return }
        closed = true
        Glibc.close(fd)
    }

    public static func preview<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        let shown = String(decoding: bytes.prefix(80), as: UTF8.self).debugDescription
        return bytes.count > 80 ? "\(shown)… (\(bytes.count) bytes)" : shown
    }
}

/// A listening socket made by a test (to occupy a port).
public final class TestListener {
    public let fd: CInt
    public let port: Int

    public init(host: String = "127.0.0.1", port: Int = 0) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SocketFailure(operation: "socket", code: errno) }
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = in_port_t(UInt16(port)).bigEndian
        inet_pton(AF_INET, host, &a.sin_addr)
        let rc = withUnsafePointer(to: &a) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0, listen(fd, 16) == 0 else {
            let e = errno
            Glibc.close(fd)
            throw SocketFailure(operation: "bind/listen \(host):\(port)", code: e)
        }
        var bound = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &bound) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        self.fd = fd
        self.port = Int(UInt16(bigEndian: bound.sin_port))
    }

    deinit { Glibc.close(fd) }
}

/// Runs `body` on a new thread; `join` waits for it with a deadline.
public final class TestThread: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)

    public init(_ body: @escaping @Sendable () -> Void) {
        let done = self.done
        let thread = Thread {
            body()
            done.signal()
        }
        thread.start()
    }

    /// True if the thread finished within `timeout` seconds.
    public func join(timeout: Double) -> Bool {
        done.wait(timeout: .now() + timeout) == .success
    }
}

/// Polls `condition` every 10 ms until it holds or `timeout` seconds pass; returns whether it held.
public func eventually(timeout: Double = 5, _ condition: () -> Bool) -> Bool {
    let deadline = monotonicSeconds() + timeout
    while true {
        if condition() { return true }
        if monotonicSeconds() >= deadline { return false }
        usleep(10_000)
    }
}

/// An endless test byte stream: a non-periodic block of prime length, repeated. Cheap to send
/// and to check at any offset, and a lost, duplicated or reordered chunk does not match.
public struct PatternStream: Sendable {
    public let block: [UInt8]

    public init(period: Int = 1_048_573) { block = testPattern(count: period) }

    /// `count` bytes of the stream from `offset`.
    public func bytes(from offset: Int, count: Int) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(count)
        var position = offset % block.count
        var left = count
        while left > 0 {
            let take = min(left, block.count - position)
            out += block[position..<(position + take)]
            left -= take
            position = 0
        }
        return out
    }

    /// The offset of the first byte of `received` (stream offset `offset` onwards) that is not the
    /// stream's, or nil if all match.
    public func firstMismatch(_ received: [UInt8], at offset: Int = 0) -> Int? {
        block.withUnsafeBufferPointer { b in
            received.withUnsafeBufferPointer { r in
                var position = offset % b.count
                for i in 0..<r.count {
                    if r[i] != b[position] { return offset + i }
                    position += 1
                    if position == b.count { position = 0 }
                }
                return nil
            }
        }
    }
}
