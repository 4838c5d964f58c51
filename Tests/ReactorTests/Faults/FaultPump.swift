// A pump that drives several clients (TestSupport's TestSocket) at once through poll(2),
// sending and reading at the same time so that no echo can deadlock, with a deadline on
// everything.

import TestSupport
import Glibc

/// When a pumped client shuts down its writing side.
enum FaultHalfClose {
    /// As soon as every byte is sent: the server sees EOF behind the data.
    case afterSend
    /// Never: the connection stays open (the pump stops once the echo is complete).
    case never
}

/// One client's part in a pump, and what happened to it.
final class FaultConversation {
    let client: TestSocket
    let payload: [UInt8]
    let halfClose: FaultHalfClose
    /// Send in chunks of at most this many bytes, so segments vary.
    let chunk: Int
    private(set) var sent = 0
    private(set) var received: [UInt8] = []
    private(set) var end = StreamEnd.timeout
    private var shutDown = false

    init(_ client: TestSocket, payload: [UInt8], halfClose: FaultHalfClose = .afterSend, chunk: Int = 16 * 1024) {
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
            case .failure(let e): end = .error(e.code)
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
                end = .error(errno)
            }
        }
    }
}

enum FaultPump {
    /// Drives every conversation at once until each is done or `timeout` seconds pass.
    /// Returns false on timeout.
    @discardableResult
    static func run(_ conversations: [FaultConversation], timeout: Double = 30) -> Bool {
        let deadline = monotonicSeconds() + timeout
        var readBuffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let active = conversations.filter { !$0.isDone }
            if active.isEmpty { return true }
            if monotonicSeconds() >= deadline { return false }
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
