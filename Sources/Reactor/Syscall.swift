// The only file in Reactor that reads errno.
//
// Every wrapper that reads errno is `@inline(never)` so that no ARC traffic or allocation can run
// between the call and the read of errno (SwiftNIO's System.swift does the same, for the same
// reason). The three hot-path calls (read, send, epoll_wait) read no errno: they are made raw
// (`cepoll_raw_*` return the result or -errno), so their fast paths are inlined into the loop and
// everything but success goes out of line.
// EINTR is retried here. EAGAIN becomes `.wouldBlock`. EBADF and EFAULT are programmer errors
// and stop the process. Every other errno comes back typed, with the name of the call.

import CEpoll
import Glibc
import SystemPackage

/// A failed system call: which call, and the `errno` it set.
public struct SyscallError: Error, Sendable, CustomStringConvertible {
    /// The name of the failing call, such as `"bind"`.
    public let call: String
    /// The error number the call set.
    public let errno: Errno

    /// Creates an error for `call` failing with `errno`.
    public init(call: String, errno: Errno) {
        self.call = call
        self.errno = errno
    }

    public var description: String { "\(call): \(errno) (\(Errno.name(errno)))" }

    /// The error in words for a user, as strerror(3) says it, starting lowercase
    /// ("connection refused"); without the call's name.
    public var explanation: String { Syscalls.sentence(errno) }
}

extension Errno {
    /// The symbolic name (`EADDRINUSE`), for logs that must be grep-able.
    static func name(_ e: Errno) -> String {
        switch e {
        case .addressInUse: return "EADDRINUSE"
        case .addressNotAvailable: return "EADDRNOTAVAIL"
        case .permissionDenied: return "EACCES"
        case .tooManyOpenFiles: return "EMFILE"
        case .tooManyOpenFilesInSystem: return "ENFILE"
        case .noBufferSpace: return "ENOBUFS"
        case .noMemory: return "ENOMEM"
        case .connectionReset: return "ECONNRESET"
        case .brokenPipe: return "EPIPE"
        case .connectionAbort: return "ECONNABORTED"
        case .timedOut: return "ETIMEDOUT"
        case .interrupted: return "EINTR"
        case .resourceTemporarilyUnavailable: return "EAGAIN"
        case .invalidArgument: return "EINVAL"
        case .badFileDescriptor: return "EBADF"
        case .noSuchFileOrDirectory: return "ENOENT"
        case .networkUnreachable: return "ENETUNREACH"
        case .connectionRefused: return "ECONNREFUSED"
        default: return "errno \(e.rawValue)"
        }
    }
}

/// The result of a read or write on a non-blocking socket.
@usableFromInline
enum IOResult: Equatable {
    /// This many bytes moved (always > 0).
    case bytes(Int)
    /// Read only: the peer shut down its write side.
    case eof
    /// EAGAIN / EWOULDBLOCK: try again when epoll says so.
    case wouldBlock
    /// A per-connection failure (ECONNRESET, EPIPE, ETIMEDOUT, …).
    case failed(Errno)
}

/// The result of one accept4 call.
@usableFromInline
enum AcceptResult {
    case accepted(CInt)
    case wouldBlock
    case failed(Errno)
}

/// The system calls that can be intercepted: the test seam.
@usableFromInline
enum SyscallName: Sendable, Equatable {
    case accept4, read, write, close, epollCtl, epollWait, shutdown
    /// setsockopt(SO_LINGER {on, 0}) before an abortive close (``Syscalls/resetOnClose(_:)``).
    case linger
    /// The datagram calls; an interposer's `.limit(n)` cuts the batch to n messages.
    case recvmmsg, sendmmsg
    /// The kernel echo (KernelEcho.swift): splice(2) from a connection into the reactor's pipe,
    /// and from the pipe back to the connection. `fd` is the connection's in both; `.limit(n)`
    /// cuts the length.
    case spliceIn, spliceOut
}

/// The result of one recvmmsg or sendmmsg call.
@usableFromInline
enum BatchResult: Equatable {
    /// This many messages moved (always > 0).
    case messages(Int)
    /// EAGAIN: the receive queue is empty, or the send buffer is full.
    case wouldBlock
    /// Any other error, for the message at the head of the batch.
    case failed(Errno)
}

/// What an interposer wants done with one call.
@usableFromInline
enum Interposition: Equatable {
    /// Make the real call.
    case proceed
    /// Make the real call with the length cut to at most this many bytes (short reads and writes).
    case limit(Int)
    /// Do not make the call; fail it with this errno as the kernel would.
    case fail(Errno)
}

/// A test seam: sees every intercepted call first and may fail it or shorten it.
///
/// Production reactors have none. The cost is one predictable branch per call,
/// next to a system call of hundreds of nanoseconds.
@usableFromInline
protocol SyscallInterposer: AnyObject {
    func intercept(_ call: SyscallName, fd: CInt) -> Interposition
    /// Lets a test rewrite the events `epoll_wait` returned (stale events, EPOLLERR without EPOLLIN…).
    func rewriteEvents(_ events: UnsafeMutablePointer<epoll_event>, count: Int, capacity: Int) -> Int
}

@inline(__always)
private func isProgrammerError(_ e: CInt) -> Bool { e == EBADF || e == EFAULT }

/// The system calls the reactor makes, all in one place.
@usableFromInline
struct Syscalls {
    @usableFromInline var interposer: SyscallInterposer?

    @usableFromInline init(interposer: SyscallInterposer? = nil) { self.interposer = interposer }

    @inline(__always)
    private func consult(_ call: SyscallName, _ fd: CInt) -> Interposition {
        // Compare with nil before binding: binding would retain the existential on every call.
        if _fastPath(interposer == nil) { return .proceed }
        return interposer!.intercept(call, fd: fd)
    }

    // MARK: data path

    /// read(2) into `buffer`. Inlined: one raw system call and a compare when bytes came; end of
    /// input, errors, EINTR and a test's interposer go out of line.
    @inlinable @inline(__always)
    func read(_ fd: CInt, into buffer: UnsafeMutableRawBufferPointer) -> IOResult {
        guard _fastPath(interposer == nil) else { return read(fd, into: buffer, first: nil) }
        let n = cepoll_raw_read(fd, buffer.baseAddress, buffer.count)
        if _fastPath(n > 0) { return .bytes(n) }
        return read(fd, into: buffer, first: n)
    }

    /// The rest of ``read(_:into:)``: `first` is the raw result of the call already made (nil
    /// when none was, because an interposer must be consulted first).
    @usableFromInline @inline(never)
    func read(_ fd: CInt, into buffer: UnsafeMutableRawBufferPointer, first: Int?) -> IOResult {
        receive(.read, fd, length: buffer.count, first: first, what: "read(\(fd))") { cepoll_raw_read(fd, buffer.baseAddress, $0) }
    }

    /// A call that moves bytes from `fd` (read, a splice from it): the test seam's answer for
    /// `call` first, then `make(length)` (the raw result, or -errno), retried on EINTR; 0 is the
    /// peer's end of input. `first` is the raw result of a call already made (nil when none was).
    private func receive(_ call: SyscallName, _ fd: CInt, length: Int, first: Int?, what: @autoclosure () -> String,
                         _ make: (Int) -> Int) -> IOResult {
        var made = first
        while true {
            let n: Int
            if let r = made {
                n = r
                made = nil
            } else {
                var allowed = length
                switch consult(call, fd) {
                case .proceed: break
                case .limit(let n): allowed = min(allowed, max(n, 1))
                case .fail(let e):
                    if e == .interrupted { continue }
                    if e == .resourceTemporarilyUnavailable { return .wouldBlock }
                    return .failed(e)
                }
                n = make(allowed)
            }
            if n > 0 { return .bytes(n) }
            if n == 0 { return .eof }
            let e = CInt(truncatingIfNeeded: -n)
            switch e {
            case EINTR: continue
            case EAGAIN: return .wouldBlock
            default:
                precondition(!isProgrammerError(e), "\(what()) failed with errno \(e): a reactor bug")
                return .failed(Errno(rawValue: e))
            }
        }
    }

    /// Writes with MSG_NOSIGNAL, so a peer that vanished gives EPIPE, never SIGPIPE. Inlined like
    /// ``read(_:into:)``: one raw system call and a compare when the kernel took bytes.
    @inlinable @inline(__always)
    func write(_ fd: CInt, _ bytes: UnsafeRawBufferPointer) -> IOResult {
        guard _fastPath(interposer == nil) else { return write(fd, bytes, first: nil) }
        let n = cepoll_raw_send(fd, bytes.baseAddress, bytes.count, CEPOLL_MSG_NOSIGNAL)
        if _fastPath(n >= 0) { return .bytes(n) }
        return write(fd, bytes, first: n)
    }

    /// The rest of ``write(_:_:)``: `first` is the raw result of the send already made (nil when
    /// none was, because an interposer must be consulted first).
    @usableFromInline @inline(never)
    func write(_ fd: CInt, _ bytes: UnsafeRawBufferPointer, first: Int?) -> IOResult {
        var made = first
        while true {
            var length = bytes.count
            let n: Int
            if let r = made {
                n = r
                made = nil
            } else {
                switch consult(.write, fd) {
                case .proceed: break
                case .limit(let n): length = min(length, max(n, 1))
                case .fail(let e):
                    if e == .interrupted { continue }
                    if e == .resourceTemporarilyUnavailable { return .wouldBlock }
                    return .failed(e)
                }
                n = cepoll_raw_send(fd, bytes.baseAddress, length, CEPOLL_MSG_NOSIGNAL)
            }
            if n >= 0 { return .bytes(n) }
            let e = CInt(truncatingIfNeeded: -n)
            switch e {
            case EINTR: continue
            case EAGAIN: return .wouldBlock
            case ENOTSOCK: return writePlain(fd, bytes, length)  // pipes and ttys (the client's stdout)
            default:
                precondition(!isProgrammerError(e), "send(\(fd)) failed with errno \(e): a reactor bug")
                return .failed(Errno(rawValue: e))
            }
        }
    }

    /// writev(2) for pipes and ttys. The interposer's `.write` answers apply to it too (a limit
    /// cuts the total length), so fault tests cover both write paths.
    @usableFromInline @inline(never)
    func write(_ fd: CInt, gathering iov: UnsafeMutablePointer<iovec>, count: Int, total: Int) -> IOResult {
        while true {
            var entries = count
            switch consult(.write, fd) {
            case .proceed: break
            case .limit(let n):
                // Keep the first max(n, 1) bytes: whole entries, then a cut one.
                var left = max(n, 1)
                entries = 0
                while entries < count && left > 0 {
                    if iov[entries].iov_len > left { iov[entries].iov_len = left }
                    left -= iov[entries].iov_len
                    entries += 1
                }
            case .fail(let e):
                if e == .interrupted { continue }
                if e == .resourceTemporarilyUnavailable { return .wouldBlock }
                return .failed(e)
            }
            var message = msghdr()
            message.msg_iov = iov
            message.msg_iovlen = entries
            let n = Glibc.sendmsg(fd, &message, CEPOLL_MSG_NOSIGNAL)
            if n >= 0 { return .bytes(n) }
            let e = cepoll_errno()
            switch e {
            case EINTR: continue
            case EAGAIN: return .wouldBlock
            case ENOTSOCK: return writevPlain(fd, iov, entries)
            default:
                precondition(!isProgrammerError(e), "sendmsg(\(fd)) failed with errno \(e): a reactor bug")
                return .failed(Errno(rawValue: e))
            }
        }
    }

    @inline(never)
    private func writevPlain(_ fd: CInt, _ iov: UnsafeMutablePointer<iovec>, _ count: Int) -> IOResult {
        while true {
            let n = Glibc.writev(fd, iov, CInt(count))
            if n >= 0 { return .bytes(n) }
            let e = cepoll_errno()
            if e == EINTR { continue }
            if e == EAGAIN { return .wouldBlock }
            precondition(!isProgrammerError(e), "writev(\(fd)) failed with errno \(e): a reactor bug")
            return .failed(Errno(rawValue: e))
        }
    }

    @inline(never)
    private func writePlain(_ fd: CInt, _ bytes: UnsafeRawBufferPointer, _ length: Int) -> IOResult {
        while true {
            let n = Glibc.write(fd, bytes.baseAddress, length)
            if n >= 0 { return .bytes(n) }
            let e = cepoll_errno()
            if e == EINTR { continue }
            if e == EAGAIN { return .wouldBlock }
            precondition(!isProgrammerError(e), "write(\(fd)) failed with errno \(e): a reactor bug")
            return .failed(Errno(rawValue: e))
        }
    }

    /// recvmmsg(2) of up to `count` datagrams, without blocking. The caller resets each header's
    /// `msg_namelen` (the kernel overwrites it). Errors other than EAGAIN are returned: on an
    /// unconnected UDP socket they are a pending ICMP error (ECONNREFUSED…) or ENOMEM, which say
    /// nothing about the next datagram.
    @usableFromInline @inline(never)
    func receiveBatch(_ fd: CInt, _ headers: UnsafeMutablePointer<cepoll_mmsghdr>, count: Int) -> BatchResult {
        while true {
            var n = count
            switch consult(.recvmmsg, fd) {
            case .proceed: break
            case .limit(let m): n = min(n, max(m, 1))
            case .fail(let e):
                if e == .interrupted { continue }
                if e == .resourceTemporarilyUnavailable { return .wouldBlock }
                return .failed(e)
            }
            let got = cepoll_sys_recvmmsg(fd, headers, CUnsignedInt(n), CEPOLL_MSG_DONTWAIT)
            if got > 0 { return .messages(Int(got)) }
            if got == 0 { return .wouldBlock }
            let e = cepoll_errno()
            switch e {
            case EINTR: continue
            case EAGAIN: return .wouldBlock
            default:
                precondition(!isProgrammerError(e) && e != EINVAL, "recvmmsg(\(fd)) failed with errno \(e): a reactor bug")
                return .failed(Errno(rawValue: e))
            }
        }
    }

    /// sendmmsg(2) of up to `count` datagrams, without blocking. It returns how many the kernel
    /// took; when that is fewer than `count`, the next call reports why the next one failed.
    @usableFromInline @inline(never)
    func sendBatch(_ fd: CInt, _ headers: UnsafeMutablePointer<cepoll_mmsghdr>, count: Int) -> BatchResult {
        while true {
            var n = count
            switch consult(.sendmmsg, fd) {
            case .proceed: break
            case .limit(let m): n = min(n, max(m, 1))
            case .fail(let e):
                if e == .interrupted { continue }
                if e == .resourceTemporarilyUnavailable { return .wouldBlock }
                return .failed(e)
            }
            let sent = cepoll_sys_sendmmsg(fd, headers, CUnsignedInt(n), CEPOLL_MSG_DONTWAIT | CEPOLL_MSG_NOSIGNAL)
            if sent > 0 { return .messages(Int(sent)) }
            if sent == 0 { return .wouldBlock }
            let e = cepoll_errno()
            switch e {
            case EINTR: continue
            case EAGAIN, ENOBUFS: return .wouldBlock  // ENOBUFS: the device queue is full; UDP drops too
            default:
                precondition(!isProgrammerError(e), "sendmmsg(\(fd)) failed with errno \(e): a reactor bug")
                return .failed(Errno(rawValue: e))
            }
        }
    }

    /// sendto(2) of one datagram to `address`, without blocking (consulting the interposer as
    /// `.sendmmsg`: both are the datagram send path).
    @usableFromInline @inline(never)
    func sendDatagram(_ fd: CInt, _ bytes: UnsafeRawBufferPointer, to address: UnsafePointer<sockaddr>, _ length: socklen_t) -> BatchResult {
        while true {
            switch consult(.sendmmsg, fd) {
            case .proceed, .limit: break
            case .fail(let e):
                if e == .interrupted { continue }
                if e == .resourceTemporarilyUnavailable { return .wouldBlock }
                return .failed(e)
            }
            let n = Glibc.sendto(fd, bytes.baseAddress, bytes.count, CEPOLL_MSG_DONTWAIT | CEPOLL_MSG_NOSIGNAL, address, length)
            if n >= 0 { return .messages(1) }
            let e = cepoll_errno()
            switch e {
            case EINTR: continue
            case EAGAIN, ENOBUFS: return .wouldBlock
            default:
                precondition(!isProgrammerError(e), "sendto(\(fd)) failed with errno \(e): a reactor bug")
                return .failed(Errno(rawValue: e))
            }
        }
    }

    /// Reads and clears a socket's pending error (SO_ERROR): after EPOLLERR on a datagram socket,
    /// which level triggering would otherwise report forever.
    @usableFromInline
    static func clearSocketError(_ fd: CInt) -> Errno? {
        let v = getOption(fd, SOL_SOCKET, SO_ERROR)
        return v == 0 ? nil : Errno(rawValue: v)
    }

    /// accept4 with SOCK_NONBLOCK | SOCK_CLOEXEC. ECONNABORTED (the peer gave up while queued) and
    /// EINTR are retried: neither says anything about the listener.
    @usableFromInline @inline(never)
    func accept(_ fd: CInt, _ address: UnsafeMutablePointer<sockaddr_storage>) -> AcceptResult {
        while true {
            switch consult(.accept4, fd) {
            case .proceed, .limit: break
            case .fail(let e):
                if e == .interrupted || e == .connectionAbort { continue }
                if e == .resourceTemporarilyUnavailable { return .wouldBlock }
                return .failed(e)
            }
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            // The raw call (result or -errno): glibc's accept4 is a cancellation point.
            let client = address.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                cepoll_raw_accept4(fd, $0, &length, CEPOLL_SOCK_NONBLOCK | CEPOLL_SOCK_CLOEXEC)
            }
            if client >= 0 { return .accepted(CInt(truncatingIfNeeded: client)) }
            let e = CInt(truncatingIfNeeded: -client)
            switch e {
            case EINTR, ECONNABORTED: continue
            case EAGAIN: return .wouldBlock
            default:
                precondition(!isProgrammerError(e), "accept4(\(fd)) failed with errno \(e): a reactor bug")
                return .failed(Errno(rawValue: e))
            }
        }
    }

    // MARK: kernel echo

    /// splice(2) of at most `length` bytes from `source` to `sink`, one of them a pipe, without
    /// blocking. `call` names the direction for the test seam (`.spliceIn`: socket → pipe,
    /// `.spliceOut`: pipe → socket) and `fd` the connection. 0 bytes from a socket is its end of
    /// input; EINVAL, ENOSYS and EOPNOTSUPP mean this file cannot splice (the caller falls back).
    @usableFromInline @inline(never)
    func splice(_ call: SyscallName, from source: CInt, to sink: CInt, connection fd: CInt, length: Int) -> IOResult {
        receive(call, fd, length: length, first: nil, what: "splice(\(source) → \(sink))") { cepoll_raw_splice(source, sink, $0) }
    }

    /// Whether a splice failure means the file cannot splice at all (rather than a failed
    /// connection).
    @usableFromInline
    static func cannotSplice(_ e: Errno) -> Bool {
        e == .invalidArgument || e == .noFunction || e == .notSupportedOnSocket
    }

    /// A non-blocking, close-on-exec pipe of at least `size` bytes when the kernel allows
    /// (a smaller one otherwise), or the error. Only when SIGPIPE is ignored: a splice to a reset
    /// socket raises it (splice has no MSG_NOSIGNAL), so without that the pipe is refused with
    /// EPIPE and the caller does not splice.
    static func splicePipe(size: Int) -> Result<(read: CInt, write: CInt), Errno> {
        guard cepoll_sigpipe_ignored() != 0 else { return .failure(.brokenPipe) }
        var fds: (CInt, CInt) = (-1, -1)
        let rc = withUnsafeMutableBytes(of: &fds) { cepoll_raw_pipe($0.baseAddress!.assumingMemoryBound(to: CInt.self)) }
        if rc < 0 { return .failure(Errno(rawValue: CInt(truncatingIfNeeded: -rc))) }
        _ = cepoll_set_pipe_size(fds.1, CInt(clamping: size))  // the default (64 KiB) will do otherwise
        return .success((fds.0, fds.1))
    }

    /// Reads what is left in the reactor's pipe into `buffer`: the bytes a short splice to the
    /// connection left behind. Returns the bytes read, or nil on a failure no pipe should have.
    @usableFromInline @inline(never)
    static func drainPipe(_ fd: CInt, into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        var total = 0
        while total < buffer.count {
            let n = cepoll_raw_read(fd, buffer.baseAddress! + total, buffer.count - total)
            if n > 0 { total += n; continue }
            if n == -Int(EINTR) { continue }
            if n == -Int(EAGAIN) || n == 0 { break }
            return nil
        }
        return total
    }

    /// close(2). Linux always frees the fd, even when close reports EINTR or EIO, so it is never
    /// retried (retrying could close an fd another thread just opened).
    @usableFromInline @inline(never)
    func close(_ fd: CInt) {
        if case .fail = consult(.close, fd) { Glibc.close(fd); return }
        // The raw call (0 or -errno): glibc's close is a cancellation point.
        let rc = cepoll_raw_close(fd)
        precondition(rc != -Int(EBADF), "close(\(fd)): EBADF, the fd was closed twice: a reactor bug")
    }

    /// SO_LINGER {on, 0}: the close(2) that follows resets the connection (RST) and drops what
    /// the kernel still holds to send, instead of a FIN after it. For a close that discards
    /// output the peer has not received: the peer must see ECONNRESET, never a clean EOF after a
    /// shortened stream. A failure (ENOTSOCK for an adopted pipe, a socket already reset) leaves
    /// a plain close, which is all that is left to do.
    @usableFromInline @inline(never)
    func resetOnClose(_ fd: CInt) {
        if case .fail = consult(.linger, fd) { return }
        var value = linger(l_onoff: 1, l_linger: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &value, socklen_t(MemoryLayout<linger>.size))
    }

    /// Bytes the kernel holds for a TCP socket that the peer has not acknowledged yet (sent or
    /// not: SIOCOUTQ), or nil when it cannot tell (not a TCP socket).
    func unacknowledgedBytes(_ fd: CInt) -> Int? {
        let n = cepoll_send_queue(fd)
        return n >= 0 ? Int(n) : nil
    }

    @usableFromInline @inline(never)
    func shutdownWrite(_ fd: CInt) {
        if case .fail = consult(.shutdown, fd) { return }
        _ = Glibc.shutdown(fd, CInt(SHUT_WR))  // ENOTCONN after a reset is harmless here
    }

    // MARK: epoll

    @usableFromInline @inline(never)
    func epollCtl(_ epfd: CInt, _ op: CInt, _ fd: CInt, events: UInt32, data: UInt64) -> Errno? {
        if case .fail(let e) = consult(.epollCtl, fd) { return e }
        var event = epoll_event()
        cepoll_event_set(&event, events, data)
        if epoll_ctl(epfd, op, fd, &event) == 0 { return nil }
        let e = cepoll_errno()
        // EBADF, EINVAL, EEXIST, ENOENT from epoll_ctl mean the reactor's bookkeeping is wrong.
        precondition(e == ENOMEM || e == ENOSPC, "epoll_ctl(op \(op), fd \(fd)) failed with errno \(e): a reactor bug")
        return Errno(rawValue: e)
    }

    /// Whether epoll can watch `fd`: nil if so, else the errno (EPERM for regular files and
    /// some devices). Adds and removes a registration; for adopt(fd:) only.
    static func epollAccepts(_ epfd: CInt, _ fd: CInt) -> Errno? {
        var event = epoll_event()
        cepoll_event_set(&event, 0, 0)
        guard epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &event) == 0 else { return Errno(rawValue: cepoll_errno()) }
        _ = epoll_ctl(epfd, EPOLL_CTL_DEL, fd, &event)
        return nil
    }

    /// Returns the number of ready events (0 on timeout or EINTR). Inlined like ``read(_:into:)``.
    @inlinable @inline(__always)
    func epollWait(_ epfd: CInt, _ events: UnsafeMutablePointer<epoll_event>, capacity: Int, timeoutMs: CInt) -> Int {
        guard _fastPath(interposer == nil) else { return epollWaitInterposed(epfd, events, capacity: capacity, timeoutMs: timeoutMs) }
        let n = cepoll_raw_epoll_wait(epfd, events, CInt(capacity), timeoutMs)
        if _fastPath(n >= 0) { return n }
        return epollWaitFailed(n)
    }

    @usableFromInline @inline(never)
    func epollWaitFailed(_ n: Int) -> Int {
        precondition(n == -Int(EINTR), "epoll_wait failed with errno \(-n): a reactor bug")
        return 0
    }

    @usableFromInline @inline(never)
    func epollWaitInterposed(_ epfd: CInt, _ events: UnsafeMutablePointer<epoll_event>, capacity: Int, timeoutMs: CInt) -> Int {
        if case .fail = consult(.epollWait, epfd) { return 0 }
        let n = cepoll_raw_epoll_wait(epfd, events, CInt(capacity), timeoutMs)
        if n < 0 { return epollWaitFailed(n) }
        guard let interposer else { return n }
        return interposer.rewriteEvents(events, count: n, capacity: capacity)
    }

    // MARK: setup calls (not on the hot path): these throw

    static func check(_ rc: CInt, _ call: String) throws(SyscallError) -> CInt {
        if rc >= 0 { return rc }
        throw SyscallError(call: call, errno: Errno(rawValue: cepoll_errno()))
    }

    static func epollCreate() throws(SyscallError) -> CInt {
        try check(epoll_create1(CInt(EPOLL_CLOEXEC)), "epoll_create1")
    }

    static func eventfd() throws(SyscallError) -> CInt {
        try check(CEpoll.eventfd(0, CEPOLL_EFD_NONBLOCK | CEPOLL_EFD_CLOEXEC), "eventfd")
    }

    static func timerfd() throws(SyscallError) -> CInt {
        try check(timerfd_create(CLOCK_MONOTONIC, CEPOLL_TFD_NONBLOCK | CEPOLL_TFD_CLOEXEC), "timerfd_create")
    }

    /// Arms a CLOCK_MONOTONIC timerfd for an absolute deadline in nanoseconds (0 disarms).
    static func timerfdSetAbsolute(_ fd: CInt, deadlineNs: Int64) {
        let rc = cepoll_timerfd_set_absolute_ns(fd, deadlineNs)
        precondition(rc == 0, "timerfd_settime failed with errno \(cepoll_errno())")
    }

    static func signalfd(_ signals: [CInt]) throws(SyscallError) -> CInt {
        try check(signals.withUnsafeBufferPointer { cepoll_signalfd($0.baseAddress, CInt($0.count)) }, "signalfd")
    }

    static func signalfdUpdate(_ fd: CInt, _ signals: [CInt]) throws(SyscallError) {
        _ = try check(signals.withUnsafeBufferPointer { cepoll_signalfd_update(fd, $0.baseAddress, CInt($0.count)) }, "signalfd")
    }

    /// signal(SIGPIPE, SIG_IGN) for the whole process.
    static func ignoreSIGPIPE() { cepoll_ignore_sigpipe() }

    static func blockSignals(_ signals: [CInt]) {
        var set = sigset_t()
        _ = signals.withUnsafeBufferPointer { cepoll_block_signals($0.baseAddress, CInt($0.count), &set) }
    }

    /// Reads and discards an eventfd / timerfd / signalfd payload. Returns false on EAGAIN.
    @discardableResult
    static func drain(_ fd: CInt, size: Int) -> Bool {
        withUnsafeTemporaryAllocation(byteCount: size, alignment: 8) { buffer in
            while true {
                let n = Glibc.read(fd, buffer.baseAddress, size)
                if n >= 0 { return true }
                if cepoll_errno() == EINTR { continue }
                return false
            }
        }
    }

    /// Writes 1 to an eventfd (the wake-up). EAGAIN means the counter is already non-zero: enough.
    static func signalEventfd(_ fd: CInt) {
        var one: UInt64 = 1
        while Glibc.write(fd, &one, 8) < 0 && cepoll_errno() == EINTR {}
    }

    static func socket(family: CInt) throws(SyscallError) -> CInt {
        try check(Glibc.socket(family, CEPOLL_SOCK_STREAM | CEPOLL_SOCK_NONBLOCK | CEPOLL_SOCK_CLOEXEC, 0), "socket")
    }

    /// The datagrams the kernel dropped so far on `fd` for a full receive queue (SO_MEMINFO), or 0.
    static func socketDrops(_ fd: CInt) -> UInt32 {
        var value: UInt32 = 0
        return cepoll_socket_drops(fd, &value) == 0 ? value : 0
    }

    static func datagramSocket(family: CInt) throws(SyscallError) -> CInt {
        try check(Glibc.socket(family, CEPOLL_SOCK_DGRAM | CEPOLL_SOCK_NONBLOCK | CEPOLL_SOCK_CLOEXEC, 0), "socket")
    }

    static func setOption(_ fd: CInt, _ level: CInt, _ name: CInt, _ value: CInt, _ call: String) throws(SyscallError) {
        var v = value
        _ = try check(setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<CInt>.size)), call)
    }

    static func getOption(_ fd: CInt, _ level: CInt, _ name: CInt) -> CInt {
        var v: CInt = 0
        var len = socklen_t(MemoryLayout<CInt>.size)
        _ = getsockopt(fd, level, name, &v, &len)
        return v
    }

    /// The pending error of a socket that epoll flagged with EPOLLERR.
@usableFromInline
    static func socketError(_ fd: CInt) -> Errno {
        let v = getOption(fd, SOL_SOCKET, SO_ERROR)
        return Errno(rawValue: v == 0 ? ECONNRESET : v)
    }

    static func bind(_ fd: CInt, _ address: UnsafePointer<sockaddr>, _ length: socklen_t) throws(SyscallError) {
        _ = try check(Glibc.bind(fd, address, length), "bind")
    }

    static func listen(_ fd: CInt, backlog: CInt) throws(SyscallError) {
        _ = try check(Glibc.listen(fd, backlog), "listen")
    }

    static func localAddress(_ fd: CInt) throws(SyscallError) -> sockaddr_storage {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = try withUnsafeMutablePointer(to: &storage) { (p) throws(SyscallError) -> CInt in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(SyscallError) -> CInt in
                try check(getsockname(fd, sa, &length), "getsockname")
            }
        }
        return storage
    }

    /// A non-blocking connect: returns when connected or in progress (EINPROGRESS).
    static func connect(_ fd: CInt, _ address: SocketAddress) throws(SyscallError) {
        let rc = address.withSockAddr { sa, len in Glibc.connect(fd, sa, len) }
        if rc == 0 { return }
        let e = cepoll_errno()
        if e == EINPROGRESS || e == EINTR { return }  // EINTR: the connect goes on asynchronously
        throw SyscallError(call: "connect", errno: Errno(rawValue: e))
    }

    static func unlink(_ path: String) { _ = Glibc.unlink(path) }

    static func chmod(_ path: String, _ mode: mode_t) throws(SyscallError) {
        _ = try check(Glibc.chmod(path, mode), "chmod(\(path), \(String(mode, radix: 8)))")
    }

    /// Whether something accepts at `address`: tells a Unix socket file left behind by a dead
    /// server from one a live server listens on. A Unix-domain connect completes or fails at
    /// once, even on a non-blocking socket; EAGAIN counts as "accepts" (a live listener whose
    /// backlog is full refuses a non-blocking Unix connect that way).
    static func somethingAccepts(_ fd: CInt, _ address: SocketAddress) -> Bool {
        address.withSockAddr { sa, len in Glibc.connect(fd, sa, len) == 0 || cepoll_errno() == EAGAIN }
    }

    /// The file type bits (`st_mode & S_IFMT`) of `path` itself (lstat: a symlink is not
    /// followed), or nil if nothing is there.
    static func fileType(atPath path: String) -> mode_t? {
        var st = stat()
        guard lstat(path, &st) == 0 else { return nil }
        return st.st_mode & S_IFMT
    }

    /// The device and inode of `path` itself (lstat: a symlink is not followed), or nil if
    /// nothing is there.
    static func fileIdentity(atPath path: String) -> (device: UInt, inode: UInt)? {
        var st = stat()
        guard lstat(path, &st) == 0 else { return nil }
        return (UInt(st.st_dev), UInt(st.st_ino))
    }

    /// The file type bits (`st_mode & S_IFMT`) of what `fd` refers to.
    static func fileType(of fd: CInt) throws(SyscallError) -> mode_t {
        var st = stat()
        _ = try check(fstat(fd, &st), "fstat")
        return st.st_mode & S_IFMT
    }

    /// Sets O_NONBLOCK on the file description of `fd` (shared with its duplicates).
    static func setNonBlocking(_ fd: CInt) throws(SyscallError) {
        let flags = try check(fcntl(fd, F_GETFL), "fcntl(F_GETFL)")
        _ = try check(fcntl(fd, F_SETFL, flags | O_NONBLOCK), "fcntl(F_SETFL)")
    }

    /// Sets FD_CLOEXEC on `fd`, so programs this process starts do not inherit it.
    static func setCloseOnExec(_ fd: CInt) throws(SyscallError) {
        _ = try check(fcntl(fd, F_SETFD, FD_CLOEXEC), "fcntl(F_SETFD)")
    }

    /// Reads one pending signal from a signalfd: nil when none is pending (EAGAIN). EINTR is
    /// retried like everywhere else.
    static func readSignal(_ fd: CInt) -> signalfd_siginfo? {
        var info = signalfd_siginfo()
        let size = MemoryLayout<signalfd_siginfo>.size
        while true {
            let n = Glibc.read(fd, &info, size)
            if n == size { return info }
            if n < 0 && cepoll_errno() == EINTR { continue }
            return nil
        }
    }

    /// close(2) for fds that are not connections (setup code, the reactor's own fds), outside
    /// any interposer. Linux frees the fd even on EINTR/EIO, so it is never retried.
    static func closeQuietly(_ fd: CInt) { _ = Glibc.close(fd) }

    // MARK: memory

    /// An anonymous, zero-filled, private mapping of `length` bytes (MAP_NORESERVE: pages cost
    /// memory only once touched), or nil when the kernel refuses it.
    static func mapAnonymous(_ length: Int) -> UnsafeMutableRawPointer? {
        cepoll_mmap_anonymous(length)
    }

    /// Gives back a mapping made by ``mapAnonymous(_:)``.
    static func unmap(_ base: UnsafeMutableRawPointer, _ length: Int) {
        _ = munmap(base, length)
    }

    // MARK: the hand-over channel (HandOver.swift)

    /// A connected pair of close-on-exec `SOCK_SEQPACKET` Unix sockets.
    static func seqpacketPair() throws(SyscallError) -> (CInt, CInt) {
        var fds: [CInt] = [-1, -1]
        _ = try check(socketpair(AF_UNIX, CInt(SOCK_SEQPACKET.rawValue) | CEPOLL_SOCK_CLOEXEC, 0, &fds), "socketpair")
        return (fds[0], fds[1])
    }

    /// Clears FD_CLOEXEC on `fd`, so that a program this process starts inherits it.
    static func clearCloseOnExec(_ fd: CInt) throws(SyscallError) {
        _ = try check(fcntl(fd, F_SETFD, 0), "fcntl(F_SETFD)")
    }

    /// Sets SO_RCVTIMEO and SO_SNDTIMEO of a blocking socket to `milliseconds`.
    static func setTimeouts(_ fd: CInt, milliseconds: Int64) throws(SyscallError) {
        var tv = timeval(tv_sec: Int(milliseconds / 1000), tv_usec: Int((milliseconds % 1000) * 1000))
        for option in [SO_RCVTIMEO, SO_SNDTIMEO] {
            _ = try check(setsockopt(fd, SOL_SOCKET, option, &tv, socklen_t(MemoryLayout<timeval>.size)), "setsockopt(SO_RCVTIMEO)")
        }
    }


    /// sendmsg(2) with MSG_NOSIGNAL on a blocking socket, EINTR retried. Returns the bytes sent.
    /// - Throws: the errno of any other failure (EAGAIN after SO_SNDTIMEO), with `call` as its name.
    static func sendMessage(_ fd: CInt, _ message: UnsafePointer<msghdr>, _ call: String = "sendmsg") throws(SyscallError) -> Int {
        while true {
            let n = Glibc.sendmsg(fd, message, CEPOLL_MSG_NOSIGNAL)
            if n >= 0 { return n }
            let e = cepoll_errno()
            if e == EINTR { continue }
            throw SyscallError(call: call, errno: Errno(rawValue: e))
        }
    }

    /// recvmsg(2) with MSG_CMSG_CLOEXEC (received fds are close-on-exec) on a blocking socket,
    /// EINTR retried. Returns the bytes received (0: the peer closed, unless fds came).
    /// - Throws: the errno of any other failure (EAGAIN after SO_RCVTIMEO).
    static func receiveMessage(_ fd: CInt, _ message: UnsafeMutablePointer<msghdr>) throws(SyscallError) -> Int {
        while true {
            let n = Glibc.recvmsg(fd, message, CInt(MSG_CMSG_CLOEXEC))
            if n >= 0 { return n }
            let e = cepoll_errno()
            if e == EINTR { continue }
            throw SyscallError(call: "recvmsg", errno: Errno(rawValue: e))
        }
    }

    /// strerror, starting lowercase to fit in a sentence ("connection refused"), unless the
    /// text starts with an acronym.
    static func sentence(_ e: Errno) -> String {
        var text = String(cString: strerror(e.rawValue))
        if let first = text.first, first.isUppercase, !text.dropFirst().prefix(1).allSatisfy(\.isUppercase) {
            text = first.lowercased() + text.dropFirst()
        }
        return text
    }

    /// RLIMIT_NOFILE's hard limit (capped at 2^24): no process fd can be numbered above it.
    static func fdHardLimit() -> Int {
        var limit = rlimit()
        guard getrlimit(CInt(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        return Int(min(limit.rlim_max, UInt(1 << 24)))
    }

}
