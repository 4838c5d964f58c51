import CEpoll
import Glibc

// The reactor's one receive area for datagrams, and the send headers of the replies.
//
// Everything is allocated once, when the reactor binds its first datagram socket, and reused by
// every batch of every datagram socket of that reactor (they are served one at a time on its
// thread): receiving, handing to the handler and replying allocate nothing per datagram.
//
// Layout: `Budget.datagramsPerBatch` slots of `Budget.maxDatagramSize` bytes in one anonymous
// mapping (2 MiB of address space; only the pages datagrams touch become resident), one source
// address per slot, and one recvmmsg and one sendmmsg header per slot. A reply's header points
// at its datagram's source address and at the reply bytes (for an echo, the datagram itself).

/// The receive area and reply headers shared by a reactor's datagram sockets.
@usableFromInline
final class DatagramArea {
    @usableFromInline let capacity: Int
    @usableFromInline let slotSize: Int
    @usableFromInline let data: UnsafeMutableRawPointer
    @usableFromInline let sources: UnsafeMutablePointer<sockaddr_storage>
    @usableFromInline let receive: UnsafeMutablePointer<cepoll_mmsghdr>
    @usableFromInline let receiveVectors: UnsafeMutablePointer<iovec>
    @usableFromInline let send: UnsafeMutablePointer<cepoll_mmsghdr>
    @usableFromInline let sendVectors: UnsafeMutablePointer<iovec>
    /// Per slot, room for the SO_RXQ_OVFL control message (the kernel's drop count).
    @usableFromInline let control: UnsafeMutableRawPointer
    @usableFromInline let controlSize: Int
    /// For each datagram of the batch, the index of its reply in `send`, or -1.
    @usableFromInline let replyOf: UnsafeMutablePointer<Int32>
    /// Replies queued for the batch being handled. (Unchecked: one thread, and a checked class
    /// property costs an exclusivity check per reply.)
    @exclusivity(unchecked) @usableFromInline var replies = 0
    /// Headers the last recvmmsg filled, so only those are readied again.
    @exclusivity(unchecked) @usableFromInline var filled = 0
    let mappedBytes: Int

    init(capacity: Int = Budget.datagramsPerBatch, slotSize: Int = Budget.maxDatagramSize) {
        self.capacity = capacity
        self.slotSize = slotSize
        mappedBytes = capacity * slotSize
        guard let raw = Syscalls.mapAnonymous(mappedBytes) else {
            fatalError("cannot map a datagram receive area of \(mappedBytes) bytes")
        }
        data = raw
        sources = .allocate(capacity: capacity)
        sources.initialize(repeating: sockaddr_storage(), count: capacity)
        receive = .allocate(capacity: capacity)
        receive.initialize(repeating: cepoll_mmsghdr(), count: capacity)
        receiveVectors = .allocate(capacity: capacity)
        send = .allocate(capacity: capacity)
        send.initialize(repeating: cepoll_mmsghdr(), count: capacity)
        sendVectors = .allocate(capacity: capacity)
        sendVectors.initialize(repeating: iovec(), count: capacity)
        replyOf = .allocate(capacity: capacity)
        replyOf.initialize(repeating: -1, count: capacity)
        controlSize = (CEPOLL_RXQ_OVFL_SPACE + 7) & ~7
        control = .allocate(byteCount: capacity * controlSize, alignment: 8)
        control.initializeMemory(as: UInt8.self, repeating: 0, count: capacity * controlSize)
        for i in 0..<capacity {
            receiveVectors[i] = iovec(iov_base: raw + i * slotSize, iov_len: slotSize)
            receive[i].msg_hdr.msg_iov = receiveVectors + i
            receive[i].msg_hdr.msg_iovlen = 1
            receive[i].msg_hdr.msg_name = UnsafeMutableRawPointer(sources + i)
            receive[i].msg_hdr.msg_control = control + i * controlSize
            receive[i].msg_hdr.msg_controllen = controlSize
            receive[i].msg_hdr.msg_namelen = socklen_t(MemoryLayout<sockaddr_storage>.size)
            send[i].msg_hdr.msg_iov = sendVectors + i
            send[i].msg_hdr.msg_iovlen = 1
        }
    }

    deinit {
        Syscalls.unmap(data, mappedBytes)
        sources.deallocate()
        receive.deallocate()
        receiveVectors.deallocate()
        send.deallocate()
        sendVectors.deallocate()
        replyOf.deallocate()
        control.deallocate()
    }

    /// Readies the headers for a recvmmsg: the kernel overwrote the name length, control length
    /// and flags of those the last call filled (the others are as `init` or this left them).
    @inlinable
    func prepareReceive() {
        let nameLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
        for i in 0..<filled {
            receive[i].msg_hdr.msg_namelen = nameLength
            receive[i].msg_hdr.msg_controllen = controlSize
            receive[i].msg_hdr.msg_flags = 0
        }
        filled = 0
    }

    /// The socket's cumulative count of datagrams the kernel dropped for a full receive queue,
    /// as the last datagram of a batch of `count` carried it (SO_RXQ_OVFL); nil when it carried
    /// none (the kernel attaches it only once the count is above zero).
    @inlinable
    func kernelDrops(_ count: Int) -> UInt32? {
        var value: UInt32 = 0
        return withUnsafeMutablePointer(to: &receive[count - 1].msg_hdr) { cepoll_rxq_ovfl($0, &value) } != 0 ? value : nil
    }

    /// Forgets the replies of the last batch; `count` headers were just filled.
    @inlinable
    func startBatch(_ count: Int) {
        filled = count
        replies = 0
        for i in 0..<count { replyOf[i] = -1 }
    }

    /// Queues `bytes` as the reply to datagram `i` (replacing an earlier one).
    @inlinable
    func addReply(_ i: Int, _ bytes: UnsafeRawBufferPointer) {
        var k = Int(replyOf[i])
        if k < 0 {
            k = replies
            replies += 1
            replyOf[i] = Int32(k)
        }
        sendVectors[k].iov_base = UnsafeMutableRawPointer(mutating: bytes.baseAddress)
        sendVectors[k].iov_len = bytes.count
        send[k].msg_hdr.msg_name = UnsafeMutableRawPointer(sources + i)
        send[k].msg_hdr.msg_namelen = receive[i].msg_hdr.msg_namelen
    }
}
