import CEpoll
import Glibc
import SystemPackage

// Connections the reactor did not accept: outbound connects, and fds handed to it (a client's
// stdin). They use the same table, handler and write path as accepted ones.

extension Reactor {
    /// Starts a non-blocking connect to `address`. The handler's ``ConnectionHandler/onOpen(_:state:)``
    /// runs once the connection is established; if it fails, ``ConnectionHandler/onClose(_:state:reason:)``
    /// runs with the error (for example `ECONNREFUSED`). Bytes written before then are queued.
    ///
    /// - Parameters:
    ///   - address: where to connect.
    ///   - source: a local address to bind first (port 0 picks one), for example to spread
    ///     load-test connections over several loopback addresses.
    ///   - state: the connection's initial state; by default ``ConnectionHandler/makeState()``.
    /// - Throws: ``SyscallError`` if the socket cannot be made or the connect fails at once.
    @discardableResult
    public func connect(to address: SocketAddress, from source: SocketAddress? = nil,
                        state: Handler.ConnectionState? = nil) throws(SyscallError) -> ConnectionID {
        let fd = FileDescriptor(try Syscalls.socket(family: address.family))
        if let source {
            // Let connect() choose the port, so that (source, destination) pairs and not source
            // ports alone limit how many connections can exist.
            _ = try? Syscalls.setOption(fd.raw, CInt(IPPROTO_IP), IP_BIND_ADDRESS_NO_PORT, 1, "setsockopt(IP_BIND_ADDRESS_NO_PORT)")
            try source.withSockAddr { (sa, len) throws(SyscallError) in try Syscalls.bind(fd.raw, sa, len) }
        }
        if !address.isUnix && configuration.noDelay {
            try Syscalls.setOption(fd.raw, CInt(IPPROTO_TCP), TCP_NODELAY, 1, "setsockopt(TCP_NODELAY)")
        }
        try Syscalls.connect(fd.raw, address)
        return try install(fd.take(), peer: address, state: state ?? handler.makeState(), origin: .outbound)
    }

    /// connecting → open: EPOLLOUT on a connecting socket (connected, or SO_ERROR says why
    /// not), or the first event of an adopted fd (not asked: it may not be a socket).
    @usableFromInline
    func connectFinished(_ i: Int32) {
        let slot = slots[Int(i)]
        if slot.pointee.life.origin == .outbound {
            let error = Syscalls.getOption(slot.pointee.fd, SOL_SOCKET, SO_ERROR)
            guard error == 0 else {
                requestClose(i, .error(Errno(rawValue: error)), abort: true)
                return
            }
        }
        slot.pointee.life.connected()
        markDirty(i)
        opened(ConnectionID(index: i, generation: slot.pointee.generation, fd: slot.pointee.fd))
        if slot.pointee.output != nil && slot.pointee.life.phase == .open { flush(i) }
    }

    /// Drives an fd this process already has (a pipe, a terminal, a connected socket) as a
    /// connection: the reactor makes it non-blocking, owns it, and closes it at the end.
    /// ``ConnectionHandler/onOpen(_:state:)`` runs on the next loop iteration.
    ///
    /// - Throws: ``SyscallError`` with `EPERM` for a regular file or a device epoll cannot watch
    ///   (such as /dev/null; they are always "ready": read them directly instead); the fd is
    ///   then left open and still the caller's. For other errors (no slot, ENOMEM) it is closed.
    @discardableResult
    public func adopt(fd: CInt, state: Handler.ConnectionState? = nil) throws(SyscallError) -> ConnectionID {
        let type = try Syscalls.fileType(of: fd)
        if type == S_IFREG || type == S_IFDIR {
            throw SyscallError(call: "epoll_ctl (fd \(fd) is a regular file or directory)", errno: .notPermitted)
        }
        if let e = Syscalls.epollAccepts(epfd, fd) {
            throw SyscallError(call: "epoll_ctl (fd \(fd) cannot be watched)", errno: e)
        }
        try Syscalls.setNonBlocking(fd)
        // Connecting until its first event (EPOLLIN or EPOLLOUT), so that onOpen runs from the
        // loop, not inside this call. A read-only fd (stdin) may never be writable; its onOpen
        // then comes with its first input.
        return try install(fd, peer: nil, state: state ?? handler.makeState(), origin: .adopted)
    }
}
