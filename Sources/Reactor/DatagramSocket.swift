import CEpoll
import Glibc
import SystemPackage

// Datagram sockets: a slot like a listener. Readable means: recvmmsg a batch into the reactor's
// receive area, hand the batch to the socket's handler, sendmmsg the replies it asked for. A full
// send buffer drops the rest of the replies and counts them; nothing blocks and nothing queues.

/// A datagram socket registered on a reactor.
@usableFromInline
struct DatagramSocket {
    let fd: CInt
    let slot: Int32
    let address: SocketAddress
    let handler: any DatagramHandler
    /// The kernel's drop count (SO_RXQ_OVFL) as last seen, to count only what is new.
    var kernelDrops: UInt32 = 0
}

/// A reactor's datagram sockets and the receive area they share (made with the first socket,
/// so a reactor without datagrams pays nothing).
@usableFromInline
struct DatagramSockets {
    var sockets: [DatagramSocket] = []
    var area: DatagramArea?
}

/// A datagram socket taken out of a reactor by ``Reactor/detachDatagramSocketsForHandOver()``.
public struct HandedOverDatagramSocket {
    /// The socket, owned by the caller (still bound: datagrams wait in its receive buffer).
    public var fd: CInt
    /// Its local address.
    public var address: SocketAddress
    /// The handler that served it, to give it back with ``Reactor/adoptDatagram(fd:handler:)``.
    public var handler: any DatagramHandler
}

/// Creating datagram sockets.
enum DatagramSocketFactory {
    /// socket(SOCK_DGRAM) → (SO_REUSEPORT) → IPV6_V6ONLY off for `::` → bind, non-blocking and
    /// close-on-exec.
    ///
    /// No SO_REUSEADDR: for UDP it lets a second socket bind the same port and silently take
    /// part of its datagrams (socket(7)); SO_REUSEPORT shares only between sockets that all ask,
    /// as the reactors of one server do.
    static func make(_ address: SocketAddress, reusePort: Bool) throws(SyscallError) -> (CInt, SocketAddress) {
        guard !address.isUnix else {
            throw SyscallError(call: "bind (datagram sockets are IPv4 or IPv6)", errno: .invalidArgument)
        }
        let fd = FileDescriptor(try Syscalls.datagramSocket(family: address.family))
        if reusePort { try Syscalls.setOption(fd.raw, SOL_SOCKET, SO_REUSEPORT, 1, "setsockopt(SO_REUSEPORT)") }
        if address.family == AF_INET6 {
            // Make `::` dual stack whatever net.ipv6.bindv6only says.
            try Syscalls.setOption(fd.raw, CInt(IPPROTO_IPV6), IPV6_V6ONLY, 0, "setsockopt(IPV6_V6ONLY)")
        }
        try address.withSockAddr { (sa, len) throws(SyscallError) in try Syscalls.bind(fd.raw, sa, len) }
        let bound = SocketAddress(storage: try Syscalls.localAddress(fd.raw)) ?? address
        return (fd.take(), bound)
    }
}

extension SocketAddress {
    /// Checks that no UDP socket is bound to this address yet, by binding one without
    /// SO_REUSEPORT and closing it: use it before several reactors bind the address with
    /// `reusePort`, which would otherwise share the port with another process of the same user.
    /// Returns the address with the port a port-0 bind chose.
    public func checkDatagramAvailable() throws(SyscallError) -> SocketAddress {
        let (fd, bound) = try DatagramSocketFactory.make(self, reusePort: false)
        Syscalls.closeQuietly(fd)
        return bound
    }
}

extension Reactor {
    /// Binds a UDP socket on `address` and hands every datagram that arrives to `handler`.
    ///
    /// - Parameters:
    ///   - address: an IPv4 or IPv6 address and port; `::` is dual stack (IPv4 sources appear as
    ///     `::ffff:a.b.c.d`).
    ///   - reusePort: set SO_REUSEPORT, so several reactors can each bind the same address and
    ///     the kernel spreads datagrams among them by source address and port.
    ///   - handler: called with each batch on this reactor's thread.
    /// - Returns: the address actually bound (the real port when `address` has port 0).
    /// - Throws: ``SyscallError`` naming the failed call; `.addressInUse` when the port is taken.
    @discardableResult
    public func bindDatagram(on address: SocketAddress, reusePort: Bool = false,
                             handler: some DatagramHandler) throws(SyscallError) -> SocketAddress {
        let (fd, bound) = try DatagramSocketFactory.make(address, reusePort: reusePort)
        do {
            try addDatagramSocket(fd, address: bound, handler: handler)
        } catch {
            Syscalls.closeQuietly(fd)
            throw error
        }
        return bound
    }

    /// Serves a datagram socket this process inherited (systemd `ListenDatagram=`, or a
    /// hand-over). The reactor takes ownership and closes it when it stops.
    ///
    /// - Returns: the socket's local address.
    /// - Throws: ``SyscallError`` when `fd` is not a bound IPv4 or IPv6 datagram socket.
    @discardableResult
    public func adoptDatagram(fd: CInt, handler: some DatagramHandler) throws(SyscallError) -> SocketAddress {
        guard Syscalls.getOption(fd, SOL_SOCKET, SO_TYPE) == CEPOLL_SOCK_DGRAM else {
            throw SyscallError(call: "adopt (fd \(fd) is not a datagram socket)", errno: .invalidArgument)
        }
        let storage = try Syscalls.localAddress(fd)
        guard let address = SocketAddress(storage: storage), !address.isUnix else {
            throw SyscallError(call: "getsockname (fd \(fd) is not an IPv4 or IPv6 socket)", errno: .invalidArgument)
        }
        try Syscalls.setNonBlocking(fd)
        try Syscalls.setCloseOnExec(fd)
        try addDatagramSocket(fd, address: address, handler: handler)
        return address
    }

    /// The addresses of this reactor's datagram sockets.
    public var datagramAddresses: [SocketAddress] { datagrams.sockets.map(\.address) }

    /// The fds of this reactor's datagram sockets, in bind order (for a hand-over).
    public var datagramDescriptors: [CInt] { datagrams.sockets.map(\.fd) }

    private func addDatagramSocket(_ fd: CInt, address: SocketAddress, handler: any DatagramHandler) throws(SyscallError) {
        // Best effort: without it (an old kernel) only the kernel's own drops go uncounted.
        try? Syscalls.setOption(fd, SOL_SOCKET, CEPOLL_SO_RXQ_OVFL, 1, "setsockopt(SO_RXQ_OVFL)")
        let slot = try register(special: fd, kind: .datagram)
        if datagrams.area == nil { datagrams.area = DatagramArea() }
        // Drops from before (an adopted or handed-over socket) were not this reactor's.
        datagrams.sockets.append(DatagramSocket(fd: fd, slot: slot, address: address, handler: handler,
                                                kernelDrops: Syscalls.socketDrops(fd)))
    }

    /// A datagram socket is readable (or has a pending error): up to `datagramBatchesPerEvent`
    /// batches, each received, handed to the handler and answered.
    @usableFromInline
    func datagramReady(_ slot: Int32, _ mask: UInt32) {
        guard let index = datagrams.sockets.firstIndex(where: { $0.slot == slot }), let area = datagrams.area else { return }
        let socket = datagrams.sockets[index]
        let fd = socket.fd
        if mask & CEPOLL_ERR != 0, Syscalls.clearSocketError(fd) != nil {
            // An ICMP error queued on the socket (IP_RECVERR is off, so rarely): it concerns an
            // earlier reply, never the next datagram; clearing it stops level triggering repeating it.
            counters.pointee.datagramReceiveErrors &+= 1
        }
        for _ in 0..<Budget.datagramBatchesPerEvent {
            area.prepareReceive()
            switch sys.receiveBatch(fd, area.receive, count: area.capacity) {
            case .messages(let n):
                counters.pointee.datagramBatches &+= 1
                counters.pointee.datagramsIn &+= n
                area.startBatch(n)
                var truncated = false
                for i in 0..<n {
                    counters.pointee.datagramBytesIn &+= Int(area.receive[i].msg_len)
                    if area.receive[i].msg_hdr.msg_flags & CEPOLL_MSG_TRUNC != 0 {
                        counters.pointee.datagramDrops[.truncated] &+= 1
                        truncated = true
                    }
                }
                if let dropped = area.kernelDrops(n), dropped != datagrams.sockets[index].kernelDrops {
                    counters.pointee.datagramDrops[.receiveQueueFull] &+= Int(dropped &- datagrams.sockets[index].kernelDrops)
                    datagrams.sockets[index].kernelDrops = dropped
                }
                socket.handler.onDatagrams(DatagramBatch(area: area, count: n, counters: counters))
                sendReplies(fd, area, skippingTruncated: truncated)
                if n < area.capacity { return }  // the queue is empty: recvmmsg would say EAGAIN
            case .wouldBlock:
                return
            case .failed:
                // A pending error reported by recvmmsg instead of a datagram (ECONNREFUSED from
                // an earlier ICMP, ENOMEM): it is consumed; the next datagram is fine.
                counters.pointee.datagramReceiveErrors &+= 1
            }
        }
    }

    /// sendmmsg the batch's replies. EAGAIN / ENOBUFS drop what is left (UDP may drop; the loop
    /// never blocks and nothing is queued); another error drops the one reply it concerns.
    @usableFromInline
    func sendReplies(_ fd: CInt, _ area: DatagramArea, skippingTruncated: Bool) {
        // A cut datagram (only with a receive slot smaller than the largest datagram) is never
        // answered: its reply could not be the datagram unchanged. Its drop is already counted.
        var total = area.replies
        var k = 0
        while skippingTruncated && k < total {
            let target = area.send[k].msg_hdr.msg_name!.assumingMemoryBound(to: sockaddr_storage.self)
            let i = target - area.sources
            if area.receive[i].msg_hdr.msg_flags & CEPOLL_MSG_TRUNC != 0 {
                total -= 1
                area.send[k] = area.send[total]
                area.sendVectors[k] = area.sendVectors[total]
                area.send[k].msg_hdr.msg_iov = area.sendVectors + k
                continue
            }
            k += 1
        }
        var next = 0
        while next < total {
            switch sys.sendBatch(fd, area.send + next, count: total - next) {
            case .messages(let m):
                for j in next..<(next + m) { counters.pointee.datagramBytesOut &+= area.sendVectors[j].iov_len }
                counters.pointee.datagramsOut &+= m
                next += m
            case .wouldBlock:
                counters.pointee.datagramDrops[.sendBufferFull] &+= total - next
                return
            case .failed:
                counters.pointee.datagramDrops[.sendFailed] &+= 1
                next += 1
            }
        }
    }

    /// Sends one datagram to `address` from this reactor's datagram socket number `socket` (in
    /// bind order), now: for a client, or a server that speaks first. Like a reply, it never
    /// waits and is never queued: when the send buffer is full it is dropped and counted.
    ///
    /// - Returns: true when the kernel took it; false when it was dropped (counted as
    ///   ``DatagramDrop/sendBufferFull`` or ``DatagramDrop/sendFailed``) or there is no such socket.
    @discardableResult
    public func sendDatagram(_ bytes: UnsafeRawBufferPointer, to address: SocketAddress, from socket: Int = 0) -> Bool {
        guard datagrams.sockets.indices.contains(socket) else { return false }
        let fd = datagrams.sockets[socket].fd
        let result = address.withSockAddr { sa, length in sys.sendDatagram(fd, bytes, to: sa, length) }
        switch result {
        case .messages:
            counters.pointee.datagramsOut &+= 1
            counters.pointee.datagramBytesOut &+= bytes.count
            return true
        case .wouldBlock:
            counters.pointee.datagramDrops[.sendBufferFull] &+= 1
            return false
        case .failed:
            counters.pointee.datagramDrops[.sendFailed] &+= 1
            return false
        }
    }

    /// Takes every datagram socket out of the loop without closing it, for a hand-over to
    /// another process: datagrams that arrive from now on wait in the socket's receive buffer
    /// for whoever polls it next. Call it on the reactor's thread, outside any callback. Give a
    /// socket back with ``adoptDatagram(fd:handler:)``.
    public func detachDatagramSocketsForHandOver() -> [HandedOverDatagramSocket] {
        let taken = datagrams.sockets.map { socket in
            _ = sys.epollCtl(epfd, EPOLL_CTL_DEL, socket.fd, events: 0, data: 0)
            slots.release(socket.slot)
            return HandedOverDatagramSocket(fd: socket.fd, address: socket.address, handler: socket.handler)
        }
        datagrams.sockets.removeAll()
        return taken
    }

    /// Closes every datagram socket (the reactor is stopping).
    func closeDatagramSockets() {
        for socket in datagrams.sockets {
            sys.close(socket.fd)
            slots.release(socket.slot)
        }
        datagrams.sockets.removeAll()
    }
}

extension ReactorContext {
    /// Sends one datagram from the reactor's datagram socket number `socket` (see
    /// ``Reactor/sendDatagram(_:to:from:)``).
    @discardableResult
    public func sendDatagram(_ bytes: UnsafeRawBufferPointer, to address: SocketAddress, from socket: Int = 0) -> Bool {
        reactor._withUnsafeGuaranteedRef { $0.sendDatagram(bytes, to: address, from: socket) }
    }
}
