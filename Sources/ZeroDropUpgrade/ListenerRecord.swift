import Glibc

/// One listening socket or datagram socket as the wire carries it (its fd travels beside it).
///
/// Wire: reactor (u16), flags (u8: 1 counts toward the connection limit, 2 owns its Unix socket
/// file, 4 a datagram socket), role (u8, the server's own: 0 is its service, any other value
/// means what the server says, reflectd's metrics listener for one), address (u16 length,
/// sockaddr bytes).
public struct ListenerRecord: Sendable, Equatable {
    /// The index of the reactor that served it in the old process.
    public var reactor: Int
    /// The socket (it travels beside the record).
    public var fd: CInt
    /// Its local address as sockaddr bytes (`SocketAddress/sockaddrBytes`).
    public var address: [UInt8]
    /// Its connections count toward the connection limit.
    public var limited: Bool
    /// The reactor created its Unix socket file and removes it when it stops.
    public var ownsUnixPath: Bool
    /// A datagram socket (`Reactor/adoptDatagram(fd:handler:)`), not a listener.
    public var datagram: Bool
    /// What the server uses it for: 0 its service; other values are the server's own.
    public var role: UInt8

    /// A record from its parts.
    public init(reactor: Int, fd: CInt, address: [UInt8], limited: Bool = false, ownsUnixPath: Bool = false,
                datagram: Bool = false, role: UInt8 = 0) {
        self.reactor = reactor
        self.fd = fd
        self.address = address
        self.limited = limited
        self.ownsUnixPath = ownsUnixPath
        self.datagram = datagram
        self.role = role
    }

    /// Appends the record (not its fd).
    public func encode(into w: inout UpgradeWriter) {
        w.u16(UInt16(truncatingIfNeeded: reactor))
        w.u8((limited ? 1 : 0) | (ownsUnixPath ? 2 : 0) | (datagram ? 4 : 0))
        w.u8(role)
        w.blob16(address)
    }

    /// Reads one record for the socket `fd`.
    public static func decode(_ r: inout UpgradeReader, fd: CInt) throws(UpgradeError) -> ListenerRecord {
        let reactor = Int(try r.u16())
        let flags = try r.u8()
        guard flags & ~7 == 0 else { throw UpgradeError("unknown listener flags \(flags)") }
        let role = try r.u8()
        let address = Array(try r.blob16())
        guard SockaddrBytes.isPlausible(address) else { throw UpgradeError("listener address invalid") }
        return ListenerRecord(reactor: reactor, fd: fd, address: address, limited: flags & 1 != 0,
                              ownsUnixPath: flags & 2 != 0, datagram: flags & 4 != 0, role: role)
    }
}
