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
        return try install(fd.take(), peer: address, state: state ?? handler.makeState(), connecting: true)
    }

    /// EPOLLOUT on a connecting socket: it is connected, or SO_ERROR says why not.
@usableFromInline
    func connectFinished(_ i: Int32) {
        let slot = slots[Int(i)]
        let error = Syscalls.getOption(slot.pointee.fd, SOL_SOCKET, SO_ERROR)
        guard error == 0 else {
            requestClose(i, .error(Errno(rawValue: error)), abort: true)
            return
        }
        slot.pointee.flags.remove(.connecting)
        opened(ConnectionID(index: i, generation: slot.pointee.generation, fd: slot.pointee.fd))
        if slot.pointee.output != nil && !slot.pointee.flags.contains(.closing) { flush(i) }
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
        // Registered as "connecting" so that onOpen runs from the loop (EPOLLOUT), not inside this call.
        // A read-only fd (stdin) may never be writable; its onOpen then comes with its first input.
        let id = try install(fd, peer: nil, state: state ?? handler.makeState(), connecting: true)
        let slot = slots[Int(id.index)]
        slot.pointee.flags.insert(.adopted)
        slot.pointee.registered = CEPOLL_IN | CEPOLL_OUT
        _ = sys.epollCtl(epfd, EPOLL_CTL_MOD, fd, events: CEPOLL_IN | CEPOLL_OUT, data: id.epollData)
        return id
    }
}
