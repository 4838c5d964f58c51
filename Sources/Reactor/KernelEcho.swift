// The kernel echo: a connection whose handler writes back every byte unchanged
// (``ConnectionHandler/echoesUnchanged(_:state:)``) and that streams in bulk is echoed with two
// splice(2) calls through one pipe of the reactor, socket → pipe → socket, instead of a read into
// the shared buffer and a send from it. The pipe holds references to the kernel's pages, so
// neither copy between the kernel and user space happens: those two copies are 30–50 % of a
// server's CPU per MB of a loopback bulk echo (benchmarks/results/2026-12-07-bulk-harness.md).
// Same system calls per chunk as read + send.
//
// Invariants:
// - The pipe is empty between calls: whatever a short splice back to the connection leaves in it
//   is read out at once and goes through the ordinary write path (queued in the connection's
//   output buffer like a short send's remainder). So one pipe serves every connection of the
//   reactor, bytes of one connection can never reach another, an upgrade has nothing in it to
//   hand over, and the memory bound per connection is the same as for reads.
// - Only while nothing is pending for the connection: bytes echoed in the kernel may not overtake
//   queued ones. With output pending the reactor reads as usual.
// - Only bulk: a connection starts after a read that filled the read buffer, handled with the
//   connection still open and reading and nothing pending, and stops after a splice smaller
//   than `Budget.kernelEchoMinimum`. Message-sized exchanges never splice, and the read path of
//   a message pays nothing for this (the check sits where a full read loops; a test of the
//   slot's bookkeeping byte before each read is all: 221 user instructions per echoed
//   message against 217 before, callgrind; testing the read size after every read cost 254).
// - Only while SIGPIPE is ignored: splice to a reset socket has no MSG_NOSIGNAL.
//
// Why not MSG_ZEROCOPY: on loopback the kernel copies zerocopy pages when it delivers the segment
// locally, and each send adds a completion to read from the error queue (the bulk-harness note).

extension Reactor {
    /// After a read that filled the read buffer, handled with the connection still open, reading
    /// and with nothing pending: if the handler says it echoes unchanged, the connection's next
    /// reads are echoed in the kernel.
    @usableFromInline @inline(never)
    func mayEchoInKernel(_ i: Int32) {
        guard !hot.pointee.kernelEchoUnavailable else { return }
        let slot = slots[Int(i)]
        guard slot.pointee.output == nil, slot.pointee.life.phase == .open, slot.pointee.life.isReading,
              !slot.pointee.book.contains(.kernelEcho) else { return }
        let id = ConnectionID(index: i, generation: slot.pointee.generation, fd: slot.pointee.fd)
        if handler.echoesUnchanged(Connection(reactor: self, id: id), state: &slot.pointee.state) {
            slot.pointee.book.insert(.kernelEcho)
        }
    }

    /// One turn of `readReady` for a streaming connection, echoed in the kernel: true to read
    /// again (the splice filled the read buffer's size), false when done for this event (would
    /// block, end of input, a failure, backpressure), nil when it cannot be done now (output
    /// pending, no pipe): the caller then reads as usual.
    @usableFromInline @inline(never)
    func echoedInKernel(_ i: Int32, _ id: ConnectionID) -> Bool? {
        guard let result = echoInKernel(i) else { return nil }
        let slot = slots[Int(i)]
        switch result {
        case .bytes(let n):
            counters.pointee.bytesIn &+= n
            slot.pointee.lastActive = hot.pointee.tick
            guard n == readBuffer.count, slot.pointee.life.isReading else { return false }
            if let out = slot.pointee.output, out.count > configuration.highWatermark { return false }
            return true
        case .eof:
            readEnded(i, id)
            return false
        case .wouldBlock:
            return false
        case .failed(let e):
            requestClose(i, .failure(e), abort: true)
            return false
        }
    }

    /// One splice from streaming connection `i` and back. Returns what the splice in brought,
    /// as ``Syscalls/read(_:into:)`` would, or nil when it cannot be done now.
    @usableFromInline
    func echoInKernel(_ i: Int32) -> IOResult? {
        let slot = slots[Int(i)]
        guard slot.pointee.output == nil, slot.pointee.life.phase == .open else { return nil }
        guard let pipe = kernelEchoPipe() else {
            slot.pointee.book.remove(.kernelEcho)
            return nil
        }
        let fd = slot.pointee.fd
        let moved = sys.splice(.spliceIn, from: fd, to: pipe.write, connection: fd, length: readBuffer.count)
        guard case .bytes(let n) = moved else {
            if case .failed(let e) = moved, Syscalls.cannotSplice(e) {
                // Nothing moved, and this kernel or socket cannot splice: read as usual from now on.
                kernelEchoFailed("splice from a connection failed (\(Syscalls.sentence(e)))")
                slot.pointee.book.remove(.kernelEcho)
                return nil
            }
            return moved  // end of input, would block, or the connection failed
        }
        if n < Budget.kernelEchoMinimum(readBufferSize: readBuffer.count) { slot.pointee.book.remove(.kernelEcho) }
        sendFromPipe(i, n, pipe)
        return .bytes(n)
    }

    /// Sends the `n` bytes just spliced into the pipe back to connection `i`; what the socket
    /// does not take leaves the pipe at once through the ordinary write path.
    @usableFromInline
    func sendFromPipe(_ i: Int32, _ n: Int, _ pipe: (read: CInt, write: CInt)) {
        let slot = slots[Int(i)]
        let fd = slot.pointee.fd
        var sent = 0
        switch sys.splice(.spliceOut, from: pipe.read, to: fd, connection: fd, length: n) {
        case .bytes(let w):
            sent = w
        case .failed(let e) where Syscalls.cannotSplice(e):
            kernelEchoFailed("splice to a connection failed (\(Syscalls.sentence(e)))")
            slot.pointee.book.remove(.kernelEcho)
        case .failed, .wouldBlock, .eof:
            break  // a failure is found again by the write below, which closes the connection
        }
        counters.pointee.bytesOut &+= sent
        counters.pointee.bytesEchoedInKernel &+= sent
        guard sent < n else { return }
        // The socket's buffer is full (or the send failed): empty the pipe into the read buffer,
        // free now, and write that as a short send's remainder is written: queued behind nothing,
        // with backpressure and the send timeout, or the failure found again.
        guard let left = Syscalls.drainPipe(pipe.read, into: UnsafeMutableRawBufferPointer(rebasing: readBuffer[..<(n - sent)])),
              left == n - sent else {
            // A pipe that does not give back what was put in it cannot be trusted for the next
            // connection: a new one is made. This connection's stream has a hole: reset it.
            closeKernelEchoPipe()
            requestClose(i, .error(.ioError), abort: true)
            return
        }
        _ = write(slot: i, UnsafeRawBufferPointer(rebasing: readBuffer[..<left]))
    }

    /// The reactor's pipe, made at first use; nil when the reactor cannot splice.
    @usableFromInline
    func kernelEchoPipe() -> (read: CInt, write: CInt)? {
        if _fastPath(hot.pointee.pipeRead >= 0) { return (hot.pointee.pipeRead, hot.pointee.pipeWrite) }
        if hot.pointee.kernelEchoUnavailable { return nil }
        switch Syscalls.splicePipe(size: readBuffer.count) {
        case .success(let fds):
            hot.pointee.pipeRead = fds.read
            hot.pointee.pipeWrite = fds.write
            return fds
        case .failure(.brokenPipe):
            kernelEchoFailed("SIGPIPE is not ignored (Signals.ignoreSIGPIPE()), and a splice to a reset peer would raise it")
            return nil
        case .failure(let e):
            // Out of fds or memory: no pipe now, reads as usual; the next bulk read tries again.
            configuration.logger.debug("kernel echo: no pipe (\(Syscalls.sentence(e))); reading as usual")
            return nil
        }
    }

    /// The reactor stops echoing in the kernel for good, and says why once.
    func kernelEchoFailed(_ why: String) {
        hot.pointee.kernelEchoUnavailable = true
        configuration.logger.info("kernel echo off: \(why); reading and writing as usual")
    }

    /// Closes the pipe, if there is one (the reactor is going away, or the pipe misbehaved).
    @usableFromInline
    func closeKernelEchoPipe() {
        guard hot.pointee.pipeRead >= 0 else { return }
        sys.close(hot.pointee.pipeRead)
        sys.close(hot.pointee.pipeWrite)
        hot.pointee.pipeRead = -1
        hot.pointee.pipeWrite = -1
    }
}
