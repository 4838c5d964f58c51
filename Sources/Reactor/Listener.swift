import CEpoll
import Glibc
import SystemPackage

/// A listening socket registered on a reactor.
struct Listener {
    let fd: CInt
    /// Its slot in the reactor's table.
    let slot: Int32
    let address: SocketAddress
    /// Whether its connections count toward the connection limit.
    let limited: Bool
    /// Whether the reactor created the socket file, and so removes it when it stops.
    let ownsUnixPath: Bool
    /// The socket file this reactor bound (device and inode), so that it removes only that file:
    /// another server may have replaced it since.
    var unixFile: FileIdentity? = nil
}

/// A file's device and inode: the same path may name another file later.
struct FileIdentity: Equatable {
    let device: UInt
    let inode: UInt

    /// The identity of what `path` names now (without following a symlink), or nil.
    init?(path: String) {
        guard let identity = Syscalls.fileIdentity(atPath: path) else { return nil }
        (device, inode) = identity
    }
}

/// Creating listening sockets.
enum ListeningSocket {
    /// socket → SO_REUSEADDR → (SO_REUSEPORT) → bind → listen, all non-blocking and close-on-exec.
    ///
    /// SO_REUSEADDR is set before bind so a restarted server can bind while connections of the
    /// previous run sit in TIME_WAIT. Linux still refuses (EADDRINUSE) a port that another socket
    /// is listening on, which is how "port in use" is detected.
    ///
    /// A Unix socket file gets `unixMode` (if given) after bind and before listen, so no client can
    /// connect while it still has the umask's mode.
    static func make(_ address: SocketAddress, backlog: CInt, reusePort: Bool,
                     unixMode: mode_t? = nil) throws(SyscallError) -> (CInt, SocketAddress) {
        if case .unix(let path) = address.storage { try removeStaleSocketFile(path) }
        let fd = FileDescriptor(try Syscalls.socket(family: address.family))
        if !address.isUnix {
            try Syscalls.setOption(fd.raw, SOL_SOCKET, SO_REUSEADDR, 1, "setsockopt(SO_REUSEADDR)")
            if reusePort { try Syscalls.setOption(fd.raw, SOL_SOCKET, SO_REUSEPORT, 1, "setsockopt(SO_REUSEPORT)") }
            if address.family == AF_INET6 {
                // Make `::` dual stack whatever net.ipv6.bindv6only says.
                try Syscalls.setOption(fd.raw, CInt(IPPROTO_IPV6), IPV6_V6ONLY, 0, "setsockopt(IPV6_V6ONLY)")
            }
        }
        try address.withSockAddr { (sa, len) throws(SyscallError) in try Syscalls.bind(fd.raw, sa, len) }
        if let unixMode, case .unix(let path) = address.storage {
            do {
                try Syscalls.chmod(path, unixMode)
            } catch {
                Syscalls.unlink(path)
                throw error
            }
        }
        try Syscalls.listen(fd.raw, backlog: backlog)
        let bound = address.isUnix ? address : (SocketAddress(storage: try Syscalls.localAddress(fd.raw)) ?? address)
        return (fd.take(), bound)
    }

    /// A socket file left by a server that died is replaced; one that a live server still
    /// accepts on is not (that is "address in use").
    static func removeStaleSocketFile(_ path: String) throws(SyscallError) {
        guard let type = Syscalls.fileType(atPath: path) else { return }
        guard type == S_IFSOCK else {
            throw SyscallError(call: "bind (\(path) exists and is not a socket)", errno: .fileExists)
        }
        let probe = FileDescriptor(try Syscalls.socket(family: AF_UNIX))
        let address = try? SocketAddress(unixPath: path)
        let live = address.map { Syscalls.somethingAccepts(probe.raw, $0) } ?? false
        probe.close()
        if live { throw SyscallError(call: "bind", errno: .addressInUse) }
        Syscalls.unlink(path)
    }
}

extension SocketAddress {
    /// Checks that no socket listens on this address yet, by binding (with SO_REUSEADDR but not
    /// SO_REUSEPORT) and closing a socket. Use it before several reactors bind the address with
    /// `reusePort`: SO_REUSEPORT would otherwise silently share the port with another process of
    /// the same user. Returns the address with the port a port-0 bind chose.
    public func checkAvailable() throws(SyscallError) -> SocketAddress {
        let (fd, bound) = try ListeningSocket.make(self, backlog: 1, reusePort: false)
        Syscalls.closeQuietly(fd)
        if isUnix { Syscalls.unlink(host) }
        return bound
    }
}

extension Reactor {
    /// Listens on `address` and accepts connections for this reactor's handler.
    ///
    /// - Parameters:
    ///   - address: the address to bind: an IP address and port, or a Unix-domain path.
    ///   - backlog: the kernel's queue of connections not yet accepted (capped by
    ///     `net.core.somaxconn`).
    ///   - reusePort: set SO_REUSEPORT, so several reactors can each listen on the same address
    ///     and the kernel spreads connections among them.
    ///   - limited: whether connections accepted here count toward
    ///     ``ReactorConfiguration/connectionLimit``; pass false for an admin or metrics port that
    ///     must stay reachable when the server is full.
    ///   - unixMode: for a Unix-domain path, the socket file's permission bits (such as `0o660`),
    ///     set after bind and before listen; nil leaves the umask's mode.
    /// - Returns: the address actually bound (the real port when `address` has port 0).
    /// - Throws: ``SyscallError`` naming the failed call; `errno` is `.addressInUse` when another
    ///   socket listens there.
    ///
    /// A Unix socket file is removed when the reactor stops, but only if the path still names the
    /// file this reactor bound (same device and inode): a server that replaced it keeps its file.
    @discardableResult
    public func listen(on address: SocketAddress, backlog: Int = Int(SOMAXCONN), reusePort: Bool = false,
                       limited: Bool = true, unixMode: mode_t? = nil) throws(SyscallError) -> SocketAddress {
        let (fd, bound) = try ListeningSocket.make(address, backlog: CInt(clamping: backlog), reusePort: reusePort,
                                                   unixMode: unixMode)
        let slot: Int32
        do {
            try configureListener(fd)
            slot = try register(special: fd, kind: .listener)
        } catch {
            Syscalls.closeQuietly(fd)
            if bound.isUnix { Syscalls.unlink(bound.host) }
            throw error
        }
        var listener = Listener(fd: fd, slot: slot, address: bound, limited: limited, ownsUnixPath: bound.isUnix)
        if bound.isUnix { listener.unixFile = FileIdentity(path: bound.host) }
        listeners.append(listener)
        return bound
    }

    /// Accepts connections on a listening socket this process inherited (systemd socket
    /// activation passes them from fd 3 on). The reactor takes ownership and closes it when it stops.
    ///
    /// - Returns: the socket's local address.
    @discardableResult
    public func adoptListener(fd: CInt) throws(SyscallError) -> SocketAddress {
        try Syscalls.setNonBlocking(fd)
        try Syscalls.setCloseOnExec(fd)
        let storage = try Syscalls.localAddress(fd)
        guard let address = SocketAddress(storage: storage) else {
            throw SyscallError(call: "getsockname (fd \(fd) is not an IPv4, IPv6 or Unix socket)", errno: .invalidArgument)
        }
        guard Syscalls.getOption(fd, SOL_SOCKET, SO_ACCEPTCONN) != 0 else {
            throw SyscallError(call: "adopt (fd \(fd) is not a listening socket)", errno: .invalidArgument)
        }
        try configureListener(fd)
        let slot = try register(special: fd, kind: .listener)
        listeners.append(Listener(fd: fd, slot: slot, address: address, limited: true, ownsUnixPath: false))
        return address
    }

    /// Options that accepted TCP sockets inherit from their listener on Linux (TCP_NODELAY,
    /// SO_KEEPALIVE and the keepalive timings are copied to each accepted socket), so they cost
    /// nothing per connection.
    private func configureListener(_ fd: CInt) throws(SyscallError) {
        let domain = Syscalls.getOption(fd, SOL_SOCKET, SO_DOMAIN)
        guard domain == AF_INET || domain == AF_INET6 else { return }
        if configuration.noDelay {
            try Syscalls.setOption(fd, CInt(IPPROTO_TCP), TCP_NODELAY, 1, "setsockopt(TCP_NODELAY)")
        }
        if let idle = configuration.keepAlive {
            try Syscalls.setOption(fd, SOL_SOCKET, SO_KEEPALIVE, 1, "setsockopt(SO_KEEPALIVE)")
            try Syscalls.setOption(fd, CInt(IPPROTO_TCP), TCP_KEEPIDLE, CInt(clamping: idle), "setsockopt(TCP_KEEPIDLE)")
            try Syscalls.setOption(fd, CInt(IPPROTO_TCP), TCP_KEEPINTVL, CInt(clamping: max(1, idle / 3)), "setsockopt(TCP_KEEPINTVL)")
            try Syscalls.setOption(fd, CInt(IPPROTO_TCP), TCP_KEEPCNT, 3, "setsockopt(TCP_KEEPCNT)")
        }
    }

    /// The addresses this reactor listens on.
    public var listeningAddresses: [SocketAddress] { listeners.map(\.address) }

    /// Accepts up to the listener's `acceptBatch` connections, then adapts the batch (kept in the
    /// listener's slot: `Slot.acceptBatch`).
    ///
    /// Draining the backlog until accept4 says EAGAIN costs one failed accept4 per wakeup, and
    /// when connections arrive one at a time (the common case below saturation) that is one
    /// wasted system call per connection. The listener is level-triggered, so a connection left
    /// in the backlog is reported again by the next epoll_wait, which the loop makes anyway. So
    /// the batch starts at one connection (nginx's `multi_accept off`); once a few turns in a row
    /// have each taken a whole batch it doubles every turn, up to `Budget.acceptsPerWakeup`, so a
    /// connect storm is still drained in a few turns; EAGAIN brings it back to one.
    /// Measured 2026-12-07 (connect/echo/close churn, 50 clients): C epoll's accept4 calls per
    /// connection went from 1.9 to 1.0 and its CPU per cycle to 0.96x (median of 10 pairs).
    @inlinable
    func acceptReady(_ slot: Int32) {
        let listenerSlot = slots[Int(slot)]
        let listenFD = listenerSlot.pointee.fd
        let listener = listenerIndex(slot: slot)
        let batch = listenerSlot.pointee.acceptBatch
        var address = sockaddr_storage()
        var accepted = 0
        while accepted < batch {
            switch sys.accept(listenFD, &address) {
            case .accepted(let fd):
                accepted += 1
                open(fd, peer: SocketAddress(accepted: &address), listener: listener)
            case .wouldBlock:
                // The backlog ran dry: connections arrive one at a time.
                listenerSlot.pointee.acceptBatch = 1
                listenerSlot.pointee.fullAcceptTurns = 0
                return
            case .failed(let e):
                acceptFailed(e)
                return
            }
        }
        // A whole batch, maybe with more left: double it after a few such turns in a row. "In a
        // row" skips the turns whose wait came back full: with more fds ready than one wait
        // returns, epoll reports them in rotation, and a listener with a backlog every other turn
        // or so (its batch would stay at one: a storm accepted one per two full turns).
        // `lastRoomyTurn` is before this turn, so the last full batch was the turn before, or
        // every turn since it was full.
        let turn = counters.pointee.loopIterations
        let streak = listenerSlot.pointee.lastFullAcceptTurn >= hot.pointee.lastRoomyTurn
            ? listenerSlot.pointee.fullAcceptTurns + 1 : 1
        if streak >= Budget.fullAcceptTurnsBeforeGrowing {
            listenerSlot.pointee.acceptBatch = min(batch * 2, Budget.acceptsPerWakeup)
        }
        listenerSlot.pointee.fullAcceptTurns = streak
        listenerSlot.pointee.lastFullAcceptTurn = turn
    }

    // These two read the listeners in place (`books.pointee`): through the `listeners`
    // property each call copied the array (a retain and a release, about 100 user instructions
    // per accepted connection with the closure of firstIndex, callgrind 2026-12-07).
    @usableFromInline
    func listenerIsLimited(_ index: Int) -> Bool {
        index >= 0 && index < books.pointee.listeners.count && books.pointee.listeners[index].limited
    }

    @usableFromInline
    func listenerIndex(slot: Int32) -> Int {
        for k in 0..<books.pointee.listeners.count where books.pointee.listeners[k].slot == slot { return k }
        return -1
    }

    /// EMFILE, ENFILE, ENOBUFS and ENOMEM leave the connection queued, so accepting again at once
    /// would spin. Pause every listener for `acceptBackoff` instead; the queued peers wait in the
    /// backlog and are served as soon as fds or memory free up.
@usableFromInline
    func acceptFailed(_ e: Errno) {
        let name = Errno.name(e)
        counters.pointee.acceptErrors[name, default: 0] += 1
        let resource: Set<Errno> = [.tooManyOpenFiles, .tooManyOpenFilesInSystem, .noBufferSpace, .noMemory]
        let pausing = resource.contains(e)
        if pausing && !acceptPaused {
            acceptPaused = true
            counters.pointee.acceptPauses += 1
            for listener in listeners { setListener(listener, enabled: false) }
            _ = addTimer(after: Budget.acceptBackoffNs, interval: nil, .resumeAccepting)
        }
        rateLimitedAcceptLog(e, pausing: pausing)
    }

    /// At most one log line per second, with the number of errors it stands for.
    private func rateLimitedAcceptLog(_ e: Errno, pausing: Bool) {
        suppressedAcceptErrors += 1
        let now = cepoll_monotonic_ns()
        guard now - lastAcceptErrorLog >= 1_000_000_000 else { return }
        lastAcceptErrorLog = now
        let count = suppressedAcceptErrors
        suppressedAcceptErrors = 0
        configuration.logger.warning(
            "accept failed: \(e) (\(Errno.name(e)))\(pausing ? ", pausing accepts for \(Budget.acceptBackoffNs / 1_000_000) ms" : ""); \(count) accept error(s) since the last report")
    }

    func resumeAccepting() {
        acceptPaused = false
        guard !isStopping else { return }
        for listener in listeners { setListener(listener, enabled: true) }
    }

    private func setListener(_ listener: Listener, enabled: Bool) {
        let slot = slots[Int(listener.slot)]
        let mask = enabled ? CEPOLL_IN : 0
        guard slot.pointee.registered != mask else { return }
        slot.pointee.registered = mask
        _ = sys.epollCtl(epfd, EPOLL_CTL_MOD, listener.fd, events: mask,
                         data: ConnectionID(index: listener.slot, generation: slot.pointee.generation).epollData)
    }

@usableFromInline
    func closeListeners() {
        for listener in listeners {
            sys.close(listener.fd)
            slots.release(listener.slot)
            if listener.ownsUnixPath, let bound = listener.unixFile, FileIdentity(path: listener.address.host) == bound {
                Syscalls.unlink(listener.address.host)
            }
        }
        listeners.removeAll()
        closeDatagramSockets()
    }
}

/// A listener's slot keeps its accept batching (`Reactor.acceptReady`) in fields that only
/// connections use otherwise (the idle timer's `lastActive`, the send timeout's `lastProgress`),
/// so the accept path reads and writes them in place, with no array to check or copy.
/// `Reactor.register(special:kind:)` zeroes them: a batch of one, no streak.
extension Slot {
    /// Connections to accept at the listener's next wakeup: 1 while they arrive one at a time, up
    /// to `Budget.acceptsPerWakeup` (stored less one, in the low half of `lastActive`).
    @inlinable var acceptBatch: Int {
        get { Int(lastActive & 0xFFFF) + 1 }
        set { lastActive = (lastActive & 0xFFFF_0000) | UInt32(truncatingIfNeeded: newValue - 1) & 0xFFFF }
    }
    /// Turns in a row, up to `lastFullAcceptTurn`, that each accepted a whole batch (the high half
    /// of `lastActive`).
    @inlinable var fullAcceptTurns: Int {
        get { Int(lastActive >> 16) }
        set { lastActive = (lastActive & 0xFFFF) | UInt32(truncatingIfNeeded: min(newValue, 0xFFFF)) << 16 }
    }
    /// The loop turn (`ReactorStatistics.loopIterations`) of the last wakeup that accepted a whole
    /// batch (in `lastProgress`).
    @inlinable var lastFullAcceptTurn: Int {
        get { Int(lastProgress) }
        set { lastProgress = Int64(newValue) }
    }
}
