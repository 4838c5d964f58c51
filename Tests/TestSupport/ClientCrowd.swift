// Many client connections at once, for load and scale: opened in batches of non-blocking
// connects, and echoed concurrently through one poll(2) over all of them.

import Glibc

/// Thousands of TestSockets at once.
public enum ClientCrowd {
    /// Opens `count` connections to `host:port`, `batch` connects in flight at a time, within
    /// `timeout` seconds.
    public static func connect(count: Int, host: String = "127.0.0.1", port: Int, batch: Int = 500,
                               timeout: Double = 30) throws -> [TestSocket] {
        let address = try LoopbackSockets.address(host: host, port: port)
        let deadline = monotonicSeconds() + timeout
        var clients: [TestSocket] = []
        clients.reserveCapacity(count)
        while clients.count < count {
            var pending: [pollfd] = []
            for _ in 0..<min(batch, count - clients.count) {
                let fd = try LoopbackSockets.socket(CInt(address.0.ss_family))
                guard LoopbackSockets.startConnect(fd, address) else {
                    let e = errno
                    Glibc.close(fd)
                    pending.forEach { if $0.fd >= 0 { Glibc.close($0.fd) } }
                    throw SocketFailure(operation: "connect #\(clients.count + pending.count)", code: e)
                }
                pending.append(pollfd(fd: fd, events: Int16(POLLOUT), revents: 0))
            }
            var done = 0
            while done < pending.count {
                let rc = poll(&pending, nfds_t(pending.count), millisecondsLeft(deadline))
                if rc < 0 && errno == EINTR { continue }
                guard rc > 0 else {
                    pending.forEach { if $0.fd >= 0 { Glibc.close($0.fd) } }
                    throw TestFailure("only \(clients.count + done) of \(count) connects completed within \(timeout) s")
                }
                for i in pending.indices where pending[i].fd >= 0 && pending[i].revents != 0 {
                    let fd = pending[i].fd
                    if let error = LoopbackSockets.intOption(fd, SOL_SOCKET, SO_ERROR), error != 0 {
                        pending.forEach { if $0.fd >= 0 { Glibc.close($0.fd) } }
                        throw SocketFailure(operation: "connect #\(clients.count + done)", code: error)
                    }
                    clients.append(TestSocket.adopt(fd))
                    pending[i].fd = -1  // poll ignores negative fds
                    done += 1
                }
            }
        }
        return clients
    }

    /// Every client sends its message at once, then every echo is read back concurrently (one
    /// poll over all of them). Returns the indices of clients whose echo was wrong or missing.
    public static func echoAtOnce(_ clients: [TestSocket], timeout: Double = 10, message: (Int) -> [UInt8]) throws -> [Int] {
        let deadline = monotonicSeconds() + timeout
        let messages = clients.indices.map(message)
        for (i, client) in clients.enumerated() {
            try client.send(messages[i], timeout: max(0.1, deadline - monotonicSeconds()))
        }
        var received = Array(repeating: [UInt8](), count: clients.count)
        var polls = clients.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
        var remaining = clients.count
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        var bad = Set<Int>()
        while remaining > 0 {
            let rc = poll(&polls, nfds_t(polls.count), millisecondsLeft(deadline))
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
