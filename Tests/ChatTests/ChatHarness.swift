import Foundation
import Glibc
import TestSupport
import XCTest

/// The `chat` binary, run as a child process listening on an ephemeral loopback port (the
/// shared harness in TestSupport).
typealias ChatServer = ChildServer

extension ChildServer {
    /// Starts `chat --host 127.0.0.1 --port 0 --verbose ARGUMENTS` and waits (at most 10 s) for
    /// its `listening on HOST:PORT` line.
    convenience init(_ arguments: [String] = [], stderr: StderrSink = .file) throws {
        try self.init(binary: try ChildServer.binary("chat"),
                      arguments: ["--host", "127.0.0.1", "--port", "0", "--verbose"] + arguments, stderr: stderr)
    }
}

typealias Failure = HarnessFailure

/// A chat client that speaks lines, on the shared TestSocket, with a timeout on every read.
final class ChatClient {
    enum Event: Equatable {
        case line(String)
        case eof
        case timeout
    }

    let socket: TestSocket
    var fd: CInt { socket.fd }
    /// The name the server gave this client in its welcome line.
    private(set) var name = ""
    /// Bytes received so far, lines or not.
    private(set) var bytesReceived = 0
    private var buffer: [UInt8] = []
    /// Where the unread part of `buffer` starts.
    private var head = 0
    private var chunk = [UInt8](repeating: 0, count: 65536)

    /// Connects and reads the welcome line, so that the client is in the room when this returns.
    /// `receiveBuffer` sets SO_RCVBUF before connecting, to make a slow reader's window small.
    init(_ server: ChatServer, receiveBuffer: Int? = nil) throws {
        socket = try TestSocket.connect(port: server.port, receiveBuffer: receiveBuffer)
        guard case .line(let welcome) = next(timeout: 5), welcome.hasPrefix("* welcome ") else {
            throw Failure("no welcome line from the server")
        }
        name = String(welcome.dropFirst("* welcome ".count).prefix { $0 != ";" })
    }

    deinit { close() }

    func close() { socket.close() }

    func send(_ text: String) { send(Array(text.utf8)) }

    /// Sends every byte, waiting while the server does not take them (at most 60 s, as long as
    /// any test here may block a writer); stops quietly if the server went away.
    func send(_ bytes: [UInt8]) { _ = try? socket.send(bytes, timeout: 60) }

    /// The next line (without its `\n`), EOF, or `.timeout` after `timeout` seconds.
    func next(timeout: Double = 5) -> Event {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if let line = takeLine() { return .line(line) }
            let left = deadline.timeIntervalSinceNow
            guard left > 0 else { return .timeout }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, CInt(min(left * 1000 + 1, 1000))) > 0 else { continue }
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && (errno == EAGAIN || errno == EINTR) { continue }
            if n <= 0 { return .eof }  // 0: the server closed; -1: reset
            bytesReceived += n
            if head > 0 && head == buffer.count {
                buffer.removeAll(keepingCapacity: true)
                head = 0
            } else if head > 1 << 20 {
                buffer.removeSubrange(..<head)
                head = 0
            }
            buffer.append(contentsOf: chunk[..<n])
        }
    }

    /// A complete line from the buffer, found with memchr (the tests move megabytes).
    private func takeLine() -> String? {
        guard head < buffer.count else { return nil }
        return buffer.withUnsafeBytes { raw -> String? in
            guard let found = memchr(raw.baseAddress! + head, Int32(UInt8(ascii: "\n")), raw.count - head) else { return nil }
            let end = raw.baseAddress!.distance(to: UnsafeRawPointer(found))
            let line = String(decoding: UnsafeRawBufferPointer(rebasing: raw[head..<end]), as: UTF8.self)
            head = end + 1
            return line
        }
    }

    /// The next line that is not a server notice (`* …`), EOF, or a timeout.
    func nextMessage(timeout: Double = 5) -> Event {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let event = next(timeout: max(0, deadline.timeIntervalSinceNow))
            if case .line(let text) = event, text.hasPrefix("* ") { continue }
            return event
        }
    }

    /// Reads until a line satisfying `match` arrives and returns it; nil on EOF or timeout.
    @discardableResult
    func waitFor(timeout: Double = 5, _ match: (String) -> Bool) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            switch next(timeout: max(0, deadline.timeIntervalSinceNow)) {
            case .line(let text): if match(text) { return text }
            case .eof, .timeout: return nil
            }
        }
    }

    /// Reads until exactly `line` arrives; false on EOF or timeout.
    func waitFor(_ line: String, timeout: Double = 5) -> Bool { waitFor(timeout: timeout) { $0 == line } != nil }

    /// Reads and drops everything until the server closes; false if it does not within `timeout`.
    func drainUntilEOF(timeout: Double = 10) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            switch next(timeout: max(0, deadline.timeIntervalSinceNow)) {
            case .line: continue
            case .eof: return true
            case .timeout: return false
            }
        }
    }
}
