import CEpoll
import Glibc

// A write of several buffers in one system call (sendmsg, or writev for pipes and ttys): a
// header and a body, or many small messages, without first copying them into one buffer.
// Like a single write it goes straight to the kernel when nothing is pending, and only what
// the kernel does not take is copied into the connection's output buffer.

extension Connection {
    /// Sends `buffers` in order, as one gathered write, or queues what the kernel did not take
    /// (see ``write(_:)-(UnsafeRawBufferPointer)``). The buffers may be reused as soon as this returns.
    ///
    /// ```swift
    /// header.withUnsafeBytes { h in body.withUnsafeBytes { b in connection.write(contentsOf: [h, b]) } }
    /// ```
    @inlinable @discardableResult
    public func write<Buffers: Collection>(contentsOf buffers: Buffers) -> WriteOutcome
        where Buffers.Element == UnsafeRawBufferPointer {
        reactor._withUnsafeGuaranteedRef { $0.write(slot: id.index, gathering: buffers) }
    }
}

extension Reactor {
    /// Writes `buffers` in order to a connection as one gathered write, from anywhere on the
    /// reactor's thread (see ``Connection/write(contentsOf:)``). Returns ``WriteOutcome/closed``
    /// when the connection is gone.
    @inlinable @discardableResult
    func write<Buffers: Collection>(to id: ConnectionID, contentsOf buffers: Buffers) -> WriteOutcome
        where Buffers.Element == UnsafeRawBufferPointer {
        guard slots.isLive(id) else { return .closed }
        return write(slot: id.index, gathering: buffers)
    }

    @inlinable
    func write<Buffers: Collection>(slot i: Int32, gathering buffers: Buffers) -> WriteOutcome
        where Buffers.Element == UnsafeRawBufferPointer {
        let slot = slots[Int(i)]
        guard slot.pointee.life.acceptsWrites else { return .closed }
        // Behind pending output, while connecting, or for one buffer, the single-buffer path
        // does the same thing: append, queue, or send.
        if slot.pointee.output != nil || slot.pointee.life.phase == .connecting || buffers.count < 2 {
            var outcome = WriteOutcome.sent
            for bytes in buffers {
                outcome = write(slot: i, bytes)
                if outcome == .closed { return .closed }
            }
            return outcome
        }
        slot.pointee.lastActive = hot.pointee.tick
        let entries = min(buffers.count, Budget.buffersPerGatheredWrite)
        var total = 0
        let result = withUnsafeTemporaryAllocation(of: iovec.self, capacity: entries) { iov in
            var k = 0
            for bytes in buffers.prefix(entries) {
                iov[k] = iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)
                total += bytes.count
                k += 1
            }
            return sys.write(slot.pointee.fd, gathering: iov.baseAddress!, count: entries, total: total)
        }
        guard let sent = taken(result, i) else { return .closed }
        if sent == total && entries == buffers.count { return .sent }
        // Queue everything after the first `sent` bytes, including buffers past the iovec budget.
        let out = pool.take()
        var skip = sent
        for bytes in buffers {
            if skip >= bytes.count {
                skip -= bytes.count
                continue
            }
            out.append(UnsafeRawBufferPointer(rebasing: bytes[skip...]))
            skip = 0
        }
        if out.isEmpty {
            pool.give(out)
            return .sent
        }
        return queue(out, i)
    }
}
