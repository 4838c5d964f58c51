import Glibc
import Reactor
import SystemPackage

// The wire's records and the Reactor's hand-over values (``HandedOverConnection``,
// ``HandedOverListener``): the wire knows nothing of the Reactor, so that the unit tests and the
// fuzzer read it alone.

extension ConnectionRecord {
    /// The record of a connection detached from reactor `reactor`, its state written by `codec`.
    public init<Codec: HandOverCodec>(_ c: HandedOverConnection<Codec.State>, reactor: Int, codec: Codec) {
        var flags: Flags = []
        if c.holdsLimitPlace { flags.insert(.holdsLimitPlace) }
        if c.readEOF { flags.insert(.readEOF) }
        if c.closing != nil { flags.insert(.closing) }
        if c.lingering { flags.insert(.lingering) }
        if c.shutdownPending { flags.insert(.shutdownPending) }
        if c.pausedByHandler { flags.insert(.pausedByHandler) }
        if c.backpressure { flags.insert(.backpressure) }
        let state = codec.encode(c.state)
        precondition(state.count <= ConnectionRecord.maxStateLength, "a handler's hand-over state is at most 1 GiB")
        self.init(reactor: reactor, flags: flags, idleSeconds: c.idleSeconds, pendingLength: c.pendingOutput.count,
                  reasonName: c.closing?.name ?? "", reasonDetail: c.closing?.detail ?? "",
                  reasonErrno: c.closing?.errno?.rawValue ?? 0, peer: c.peer.sockaddrBytes, state: state)
        fd = c.fd
        pending = c.pendingOutput
    }

    /// The connection to install on a reactor, its state read by `codec`.
    public func connection<Codec: HandOverCodec>(codec: Codec) throws(UpgradeError) -> HandedOverConnection<Codec.State> {
        let peer = SocketAddress(sockaddrBytes: peer) ?? (try! SocketAddress(unixPath: "?"))
        let state = try codec.decode(self.state[...], peer: peer)
        let reason = flags.contains(.closing)
            ? CloseReason.handedOver(name: reasonName.isEmpty ? "eof" : reasonName,
                                     errno: reasonErrno == 0 ? nil : Errno(rawValue: reasonErrno),
                                     detail: reasonDetail.isEmpty ? nil : reasonDetail)
            : nil
        return HandedOverConnection(
            fd: fd, state: state, pendingOutput: pending, peer: peer,
            holdsLimitPlace: flags.contains(.holdsLimitPlace), readEOF: flags.contains(.readEOF),
            pausedByHandler: flags.contains(.pausedByHandler), backpressure: flags.contains(.backpressure), closing: reason, lingering: flags.contains(.lingering),
            shutdownPending: flags.contains(.shutdownPending), idleSeconds: idleSeconds)
    }
}

extension ListenerRecord {
    /// The record of a listener of reactor `reactor`.
    public init(reactor: Int, listener: HandedOverListener, role: UInt8 = 0) {
        self.init(reactor: reactor, fd: listener.fd, address: listener.address.sockaddrBytes,
                  limited: listener.limited, ownsUnixPath: listener.ownsUnixPath, role: role)
    }

    /// The record of a datagram socket of reactor `reactor`.
    public init(reactor: Int, datagram socket: HandedOverDatagramSocket) {
        self.init(reactor: reactor, fd: socket.fd, address: socket.address.sockaddrBytes, datagram: true)
    }

    /// The listener to attach (`Reactor/attachHandedOverListener(_:)`).
    public var listener: HandedOverListener {
        let address = SocketAddress(sockaddrBytes: address) ?? (try! SocketAddress(unixPath: "?"))
        return HandedOverListener(fd: fd, address: address, limited: limited, ownsUnixPath: ownsUnixPath)
    }
}
