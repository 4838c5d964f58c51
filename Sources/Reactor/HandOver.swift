import CEpoll
import Glibc
import SystemPackage

// Handing listeners and established connections from one process to another (a binary upgrade
// without dropping a connection). The reactor's part is small: take a connection out of the
// loop without closing its fd or telling the handler (`detachForHandOver`), and put an fd back
// in as an ordinary accepted connection with the state it had (`installHandedOver`). Moving the
// fds between processes (SCM_RIGHTS on a socketpair, `HandOverChannel`) and the wire format of
// the state belong to the application.

/// A connection taken out of a reactor by ``Reactor/detachForHandOver(where:)``: its fd (now
/// owned by the caller, still open, no longer in any epoll set) and everything the reactor knew
/// about it. The handler's ``ConnectionHandler/onClose(_:state:reason:)`` was not called.
public struct HandedOverConnection<State> {
    /// The connection's socket. The caller owns it: pass it on, or close it.
    public var fd: CInt
    /// The handler's state as it was. Timers of the connection were cancelled, so any
    /// ``TimerID`` in it names nothing any more.
    public var state: State
    /// Output written by the handler and not yet taken by the kernel, in order.
    public var pendingOutput: [UInt8]
    /// The peer's address.
    public var peer: SocketAddress
    /// The connection held a place of ``ReactorConfiguration/connectionLimit`` (given back on
    /// detach; ``Reactor/installHandedOver(_:resume:)`` takes one again).
    public var holdsLimitPlace: Bool
    /// read() returned 0: the peer shut down its writing side.
    public var readEOF: Bool
    /// The handler paused reading (``Action/pauseReading``).
    public var pausedByHandler: Bool
    /// Its pending output passed ``ReactorConfiguration/highWatermark`` and has not drained below
    /// ``ReactorConfiguration/lowWatermark`` yet: reading waits, and the handler hears
    /// ``ConnectionHandler/onWritable(_:state:)`` once it drains, in the new process too (a
    /// handler that paused until then is not stranded when the output carried is between the
    /// watermarks).
    public var backpressure: Bool
    /// A close was requested (flush, then close) with this reason; nil for an open connection.
    public var closing: CloseReason?
    /// The connection is lingering: output flushed, write side shut down, onClose already ran;
    /// input is discarded until the peer closes or the linger time passes.
    public var lingering: Bool
    /// ``ReactorContext/shutdownWrite(_:)`` was requested and waits for the output to drain.
    public var shutdownPending: Bool
    /// Whole seconds since the last traffic, for the idle timeout (0 without one).
    public var idleSeconds: UInt32

    /// A connection to install in a new process (see ``Reactor/installHandedOver(_:resume:)``).
    public init(fd: CInt, state: State, pendingOutput: [UInt8] = [], peer: SocketAddress,
                holdsLimitPlace: Bool = false, readEOF: Bool = false, pausedByHandler: Bool = false,
                backpressure: Bool = false, closing: CloseReason? = nil, lingering: Bool = false, shutdownPending: Bool = false,
                idleSeconds: UInt32 = 0) {
        self.fd = fd
        self.state = state
        self.pendingOutput = pendingOutput
        self.peer = peer
        self.holdsLimitPlace = holdsLimitPlace
        self.readEOF = readEOF
        self.pausedByHandler = pausedByHandler
        self.backpressure = backpressure
        self.closing = closing
        self.lingering = lingering
        self.shutdownPending = shutdownPending
        self.idleSeconds = idleSeconds
    }
}

/// A listening socket taken out of a reactor by ``Reactor/detachListenersForHandOver()``.
public struct HandedOverListener: Sendable {
    /// The socket, owned by the caller (still open and listening: connections wait in its backlog).
    public var fd: CInt
    /// Its local address.
    public var address: SocketAddress
    /// Whether its connections count toward the connection limit.
    public var limited: Bool
    /// Whether the reactor created its socket file and so removes it when it stops.
    public var ownsUnixPath: Bool

    /// A listener to attach with ``Reactor/attachHandedOverListener(_:)``.
    public init(fd: CInt, address: SocketAddress, limited: Bool, ownsUnixPath: Bool) {
        self.fd = fd
        self.address = address
        self.limited = limited
        self.ownsUnixPath = ownsUnixPath
    }
}

extension Reactor {
    /// Takes every listener out of the loop without closing it or removing its socket file:
    /// nothing more is accepted here, and new connections wait in the kernel's backlog for
    /// whoever polls the socket next. Call it on the reactor's thread, outside any callback
    /// (in a closure given to ``ReactorHandle/execute(_:)``, for instance).
    public func detachListenersForHandOver() -> [HandedOverListener] {
        let taken = listeners.map { l in
            _ = sys.epollCtl(epfd, EPOLL_CTL_DEL, l.fd, events: 0, data: 0)
            slots.release(l.slot)
            return HandedOverListener(fd: l.fd, address: l.address, limited: l.limited, ownsUnixPath: l.ownsUnixPath)
        }
        listeners.removeAll()
        return taken
    }

    /// Accepts again on a listener (one of ``detachListenersForHandOver()``, or one received from
    /// another process). The socket's options (non-blocking, TCP_NODELAY, keepalive) travel with
    /// it, so it is registered as it is. A Unix socket file it owns is identified (device and
    /// inode) as it is now, so that stopping removes it only while it is still that file.
    /// Returns its address.
    /// - Throws: when epoll refuses the fd (the fd stays open, owned by the caller).
    @discardableResult
    public func attachHandedOverListener(_ listener: HandedOverListener) throws(SyscallError) -> SocketAddress {
        let slot = try register(special: listener.fd, kind: .listener)
        var attached = Listener(fd: listener.fd, slot: slot, address: listener.address,
                                limited: listener.limited, ownsUnixPath: listener.ownsUnixPath)
        if listener.ownsUnixPath && listener.address.isUnix { attached.unixFile = FileIdentity(path: listener.address.host) }
        listeners.append(attached)
        return listener.address
    }

    /// Takes out of the loop every accepted connection whose state `include` accepts, and
    /// returns them: reading stops at once (the fd leaves the epoll set), so no byte the kernel
    /// still holds is read here, and nothing pending is written any more. The fds stay open and
    /// belong to the caller; the handler hears nothing (no onClose); the connection's timers are
    /// cancelled; its place of the connection limit is given back; ``ReactorStatistics/open``
    /// drops, and no close is counted.
    ///
    /// Connections being cut (abortive close pending), still connecting, or adopted with
    /// ``adopt(fd:state:)`` or made by ``connect(to:from:state:)`` stay, as do those `include`
    /// rejects. Call it on the reactor's thread, outside any callback (in a closure given to
    /// ``ReactorHandle/execute(_:)``, for instance).
    public func detachForHandOver(where include: (Handler.ConnectionState) -> Bool) -> [HandedOverConnection<Handler.ConnectionState>] {
        // What callbacks asked for so far is done first: each connection leaves in a settled state.
        if !dirty.pointee.isEmpty { settleDirty() }
        var taken: [HandedOverConnection<Handler.ConnectionState>] = []
        for i in 0..<slots.used where slots[Int(i)].pointee.kind == .connection {
            let slot = slots[Int(i)]
            let life = slot.pointee.life
            let book = slot.pointee.book
            guard life.origin == .accepted, !life.conditions.contains(.abort), include(slot.pointee.state) else { continue }
            switch life.phase {
            case .open, .closing, .lingering: break
            case .connecting, .closed: continue
            }
            if slot.pointee.wheelBucket >= 0 { wheelRemove(i) }
            if slot.pointee.timerHead != 0 { cancelConnectionTimers(i) }
            if slot.pointee.registered != outOfEpollSet {
                // The fd stays open here, so close(2) will not take it out of the epoll set: do it now.
                _ = sys.epollCtl(epfd, EPOLL_CTL_DEL, slot.pointee.fd, events: 0, data: 0)
            }
            var pending: [UInt8] = []
            if let out = slot.pointee.output {
                pending = Array(out.unsent)
                slot.pointee.output = nil
                pool.give(out)
            }
            let idle = wheel.map { min(hot.pointee.tick &- slot.pointee.lastActive, $0.timeout) } ?? 0
            let reason = takeCloseReason(i)
            peerCloseReasons.removeValue(forKey: i)
            let closing = life.phase == .open ? nil : (reason ?? .eof)
            taken.append(HandedOverConnection(
                fd: slot.pointee.fd, state: slot.pointee.state, pendingOutput: pending, peer: slot.pointee.peer,
                holdsLimitPlace: book.contains(.holdsLimitPlace), readEOF: life.gate.contains(.eof),
                pausedByHandler: life.gate.contains(.handler), backpressure: life.gate.contains(.backpressure), closing: closing,
                lingering: life.phase == .lingering, shutdownPending: life.conditions.contains(.shutdownPending),
                idleSeconds: idle))
            if book.contains(.holdsLimitPlace) { configuration.connectionLimit?.release() }
            counters.pointee.open &-= 1
            let generation = slot.pointee.generation
            slot.deinitialize(count: 1)
            slot.pointee.generation = generation
            slots.release(i)
        }
        return taken
    }

    /// Installs a connection handed over from another process (or taken back after a failed
    /// hand-over) as an ordinary accepted connection: its state, its pending output (written
    /// first, with EPOLLOUT and backpressure as usual), its close or linger in progress, its idle
    /// time, and a place of the connection limit if it held one (taken even past the limit: the
    /// connection exists already). The handler's ``ConnectionHandler/onOpen(_:state:)`` is not
    /// called (the connection opened long ago); its onClose will be, unless the connection was
    /// lingering.
    ///
    /// `resume` runs once the connection is in the table and before it is settled: the place to
    /// re-arm the handler's own timers (they did not travel) or to take back what its state
    /// holds outside the reactor. Call it on the reactor's thread, outside any callback.
    ///
    /// - Returns: the connection's id. A connection that can finish at once (closing, nothing
    ///   pending, peer gone) may already be closed when this returns.
    /// - Throws: when there is no slot or epoll refuses the fd; the fd is closed then, and
    ///   `resume` does not run.
    @discardableResult
    public func installHandedOver(
        _ connection: HandedOverConnection<Handler.ConnectionState>,
        resume: ((borrowing Connection<Handler>, inout Handler.ConnectionState) -> Void)? = nil
    ) throws(SyscallError) -> ConnectionID {
        let id = try install(connection.fd, peer: connection.peer, state: connection.state, origin: .accepted)
        let i = id.index
        let slot = slots[Int(i)]
        if connection.holdsLimitPlace, let limit = configuration.connectionLimit {
            limit.forceAcquire()
            slot.pointee.book.insert(.holdsLimitPlace)
        }
        if let wheel, connection.idleSeconds > 0 {
            wheelRemove(i)
            slot.pointee.lastActive = hot.pointee.tick &- min(connection.idleSeconds, wheel.timeout)
            wheelInsert(i)
        }
        if !connection.pendingOutput.isEmpty && !connection.lingering {
            let out = pool.take()
            connection.pendingOutput.withUnsafeBytes { out.append($0) }
            slot.pointee.output = out
            if configuration.sendTimeout != nil { startSendClock(i) }
        }
        // The state comes back through the same transitions that made it in the old process.
        if connection.readEOF { slot.pointee.life.readEOF() }
        if connection.pausedByHandler { slot.pointee.life.pauseReading() }
        if connection.backpressure { slot.pointee.life.restoreBackpressure() }
        if connection.shutdownPending { slot.pointee.life.requestShutdownWrite() }
        if let resume { resume(Connection(reactor: self, id: id), &slot.pointee.state) }
        if connection.lingering {
            // The write side was shut down by the process that started the linger (the socket
            // keeps that state), and onClose ran there (a lingering connection's onClose has run):
            // only the discard-until-EOF and its deadline live here.
            if slot.pointee.timerHead != 0 { cancelConnectionTimers(i) }
            _ = slot.pointee.life.requestClose(abort: false)
            slot.pointee.life.linger()
            if slot.pointee.book.contains(.holdsLimitPlace) {
                slot.pointee.book.remove(.holdsLimitPlace)  // a lingering connection holds no place
                configuration.connectionLimit?.release()
            }
            setCloseReason(i, connection.closing ?? .eof)
            _ = addTimer(after: Budget.lingerNs, interval: nil, .lingerDeadline(id))
        } else if let reason = connection.closing {
            _ = slot.pointee.life.requestClose(abort: false)
            setCloseReason(i, reason)
        }
        markDirty(i)
        settleDirty()
        return id
    }
}

extension CloseReason {
    /// Rebuilds a reason from its parts (``name``, ``errno``, ``detail``), as a hand-over
    /// carries it between processes.
    public static func handedOver(name: String, errno code: Errno?, detail: String?) -> CloseReason {
        CloseReason(name, errno: code, detail: detail)
    }
}

extension SocketAddress {
    /// The address as raw `sockaddr` bytes, to carry it to another process.
    public var sockaddrBytes: [UInt8] {
        withSockAddr { sa, len in Array(UnsafeRawBufferPointer(start: sa, count: Int(len))) }
    }

    /// An address from raw `sockaddr` bytes (see ``sockaddrBytes``); nil if they are not an
    /// IPv4, IPv6 or Unix address.
    public init?(sockaddrBytes bytes: [UInt8]) {
        guard bytes.count >= 2, bytes.count <= MemoryLayout<sockaddr_storage>.size else { return nil }
        var storage = sockaddr_storage()
        withUnsafeMutableBytes(of: &storage) { $0.copyBytes(from: bytes) }
        guard let address = SocketAddress(storage: storage) else { return nil }
        self = address
    }
}

// MARK: moving fds between processes

/// One end of a `SOCK_SEQPACKET` Unix socketpair that carries messages and fds (SCM_RIGHTS)
/// between two processes: each ``send(_:fds:)`` is one message, received whole by one
/// ``receive()``. Blocking, with a timeout on both directions. Use it from one thread at a time
/// (the kernel makes each message atomic; the class holds no other state).
public final class HandOverChannel: @unchecked Sendable {
    /// The socket; closed with the channel.
    public let fd: CInt
    /// Why 253: SCM_MAX_FD, the most fds one message may carry (include/net/scm.h).
    public static let maxFDsPerMessage = 253
    /// The largest message ``receive()`` accepts.
    public static let maxMessage = 256 * 1024

    /// Wraps an fd inherited from the other process (its number came in an environment
    /// variable). It is made close-on-exec.
    public init(inherited fd: CInt) throws(SyscallError) {
        let type = Syscalls.getOption(fd, SOL_SOCKET, SO_TYPE)
        guard type == CInt(SOCK_SEQPACKET.rawValue) else {
            throw SyscallError(call: "hand-over fd \(fd) is not a SOCK_SEQPACKET socket", errno: .invalidArgument)
        }
        try Syscalls.setCloseOnExec(fd)
        self.fd = fd
    }

    private init(owning fd: CInt) { self.fd = fd }

    /// A connected pair: this process keeps the channel; the other end is an fd without
    /// close-on-exec, for a child to inherit (close it here once the child is started).
    public static func pair() throws(SyscallError) -> (HandOverChannel, childFD: CInt) {
        let (kept, given) = try Syscalls.seqpacketPair()
        let fds = [kept, given]
        try Syscalls.clearCloseOnExec(given)
        // Room for a batch of records with its output: larger than the default 208 KiB.
        for option in [SO_SNDBUF, SO_RCVBUF] {
            try? Syscalls.setOption(fds[0], SOL_SOCKET, option, CInt(maxMessage * 2), "setsockopt")
            try? Syscalls.setOption(fds[1], SOL_SOCKET, option, CInt(maxMessage * 2), "setsockopt")
        }
        return (HandOverChannel(owning: fds[0]), fds[1])
    }

    deinit { Syscalls.closeQuietly(fd) }

    /// How long a send or receive may block before it fails with EAGAIN (reported as a timeout).
    public func setTimeout(_ timeout: Duration) throws(SyscallError) {
        try Syscalls.setTimeouts(fd, milliseconds: timeout.nanoseconds / 1_000_000)
    }

    /// Sends one message carrying `fds` (at most ``maxFDsPerMessage``). The fds stay open here.
    public func send(_ bytes: [UInt8], fds: [CInt] = []) throws(SyscallError) {
        precondition(fds.count <= Self.maxFDsPerMessage, "too many fds for one message")
        precondition(bytes.count <= Self.maxMessage, "message too large")
        let header = MemoryLayout<cmsghdr>.size
        let space = header + align(fds.count * MemoryLayout<CInt>.size)
        let control = UnsafeMutableRawPointer.allocate(byteCount: max(space, header), alignment: 8)
        defer { control.deallocate() }
        control.initializeMemory(as: UInt8.self, repeating: 0, count: max(space, header))
        if !fds.isEmpty {
            let cmsg = control.assumingMemoryBound(to: cmsghdr.self)
            cmsg.pointee.cmsg_len = header + fds.count * MemoryLayout<CInt>.size
            cmsg.pointee.cmsg_level = SOL_SOCKET
            cmsg.pointee.cmsg_type = CInt(SCM_RIGHTS)
            fds.withUnsafeBytes { (control + header).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        }
        var bytes = bytes
        var message = msghdr()
        var iov = iovec()
        if !fds.isEmpty {
            message.msg_control = control
            message.msg_controllen = space
        }
        let sent = bytes.withUnsafeMutableBytes { buffer -> Result<Int, SyscallError> in
            iov = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
            return withUnsafeMutablePointer(to: &iov) { iovp -> Result<Int, SyscallError> in
                message.msg_iov = iovp
                message.msg_iovlen = 1
                return Result { () throws(SyscallError) -> Int in try Syscalls.sendMessage(fd, &message) }
            }
        }
        _ = try sent.get()
    }

    /// Receives one message and the fds it carries (made close-on-exec). Returns nil when the
    /// other process closed its end. Throws on a timeout (EAGAIN) or a truncated message.
    public func receive() throws(SyscallError) -> (bytes: [UInt8], fds: [CInt])? {
        let header = MemoryLayout<cmsghdr>.size
        let space = header + align(Self.maxFDsPerMessage * MemoryLayout<CInt>.size)
        let control = UnsafeMutableRawPointer.allocate(byteCount: space, alignment: 8)
        defer { control.deallocate() }
        var buffer = [UInt8](repeating: 0, count: Self.maxMessage)
        var message = msghdr()
        var iov = iovec()
        let received = buffer.withUnsafeMutableBytes { raw -> Result<Int, SyscallError> in
            iov = iovec(iov_base: raw.baseAddress, iov_len: raw.count)
            return withUnsafeMutablePointer(to: &iov) { iovp -> Result<Int, SyscallError> in
                message.msg_iov = iovp
                message.msg_iovlen = 1
                message.msg_control = control
                message.msg_controllen = space
                return Result { () throws(SyscallError) -> Int in try Syscalls.receiveMessage(fd, &message) }
            }
        }
        let n = try received.get()
        var fds: [CInt] = []
        if message.msg_controllen >= header {
            var offset = 0
            while offset + header <= message.msg_controllen {
                let cmsg = (control + offset).assumingMemoryBound(to: cmsghdr.self)
                let length = cmsg.pointee.cmsg_len
                guard length >= header else { break }
                if cmsg.pointee.cmsg_level == SOL_SOCKET && cmsg.pointee.cmsg_type == CInt(SCM_RIGHTS) {
                    let count = (length - header) / MemoryLayout<CInt>.size
                    for k in 0..<count {
                        fds.append((control + offset + header).load(fromByteOffset: k * MemoryLayout<CInt>.size, as: CInt.self))
                    }
                }
                offset += header + align(length - header)
            }
        }
        if message.msg_flags & CInt(MSG_CTRUNC) != 0 || message.msg_flags & CInt(MSG_TRUNC) != 0 {
            for fd in fds { Syscalls.closeQuietly(fd) }
            throw SyscallError(call: "recvmsg (hand-over message truncated)", errno: .noBufferSpace)
        }
        if n == 0 && fds.isEmpty { return nil }
        return (Array(buffer[..<n]), fds)
    }

    private func align(_ n: Int) -> Int { (n + 7) & ~7 }
}
