// A small threaded TCP server on 127.0.0.1 whose behaviour a test chooses: a server that
// records what it was sent, or one that corrupts the echo.

import Foundation
import Glibc

/// Listens on 127.0.0.1 and a free port; each connection runs `serve(fd)` on its own thread,
/// which owns and closes the fd.
final class TinyServer: @unchecked Sendable {
    let port: Int
    private let listener: Int32

    init(serve: @escaping @Sendable (Int32) -> Void) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestError("socket: errno \(errno)") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                bind(fd, sa, length) == 0 && listen(fd, 64) == 0 && getsockname(fd, sa, &length) == 0
            }
        }
        guard ok else {
            close(fd)
            throw TestError("cannot listen on 127.0.0.1: errno \(errno)")
        }
        listener = fd
        port = Int(UInt16(bigEndian: address.sin_port))
        Thread.detachNewThread {
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 {
                    if errno == EINTR { continue }
                    return  // shut down
                }
                Thread.detachNewThread { serve(client) }
            }
        }
    }

    /// Stops accepting (the accept loop sees EINVAL and ends).
    func stop() {
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }

    /// Sends all of `bytes`; false if the peer went away.
    @discardableResult
    static func sendAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = send(fd, bytes.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return false }
            offset += n
        }
        return true
    }
}

/// Bytes shared between a server thread and the test.
final class Recorder: @unchecked Sendable {
    private let lock = NSLock()
    private var bytes: [UInt8] = []

    func append(_ new: UnsafeRawBufferPointer) { lock.withLock { bytes.append(contentsOf: new) } }
    var text: String { lock.withLock { String(decoding: bytes, as: UTF8.self) } }
    /// Everything recorded so far, byte for byte.
    var snapshot: [UInt8] { lock.withLock { bytes } }
}

/// A port on 127.0.0.1 where nothing listens: bound (so no one else gets it at once), not listening.
/// Connecting to it is refused. Close the returned fd when done.
func refusingPort() throws -> (port: Int, fd: Int32) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &address) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
            bind(fd, sa, length) == 0 && getsockname(fd, sa, &length) == 0
        }
    }
    guard ok else { throw TestError("cannot bind a port: errno \(errno)") }
    return (Int(UInt16(bigEndian: address.sin_port)), fd)
}

extension TinyServer {
    /// A plain RFC 862 echo server: every byte comes back, `exit` is data, and the connection
    /// closes when the client half-closes (EOF). `record` sees every byte it was sent, and
    /// `delay` (seconds) holds each read back before echoing it.
    /// `receiveBuffer` fixes SO_RCVBUF (and SO_SNDBUF) of each connection, with no autotuning.
    /// `stall` holds each connection still once: it stops reading for `stall.seconds`, `stall.after`
    /// seconds after it was accepted (a server pause: a GC, a page fault storm, a slow disk).
    static func plainEcho(record: Recorder? = nil, recordLimit: Int = Int.max, delay: Double = 0,
                          receiveBuffer: Int? = nil, stall: (after: Double, seconds: Double)? = nil) throws -> TinyServer {
        try TinyServer { fd in
            let accepted = Date()
            var stalled = false
            if var size = receiveBuffer.map(Int32.init) {
                setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
                setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
            }
            var buffer = [UInt8](repeating: 0, count: 256 * 1024)
            var recorded = 0
            while true {
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { break }
                if let record, recorded < recordLimit {
                    let keep = min(n, recordLimit - recorded)
                    buffer.withUnsafeBytes { record.append(UnsafeRawBufferPointer(rebasing: $0[..<keep])) }
                    recorded += keep
                }
                if delay > 0 { usleep(UInt32(delay * 1e6)) }
                if let stall, !stalled, Date().timeIntervalSince(accepted) >= stall.after {
                    stalled = true
                    usleep(UInt32(stall.seconds * 1e6))
                }
                guard buffer.withUnsafeBytes({ TinyServer.sendAll(fd, UnsafeRawBufferPointer(rebasing: $0[..<n])) }) else { break }
            }
            close(fd)
        }
    }
}
