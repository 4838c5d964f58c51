import Reactor

/// A handler's own per-connection state as bytes, to carry a connection to another process.
///
/// The library carries everything the reactor knows about a connection (``ConnectionRecord``);
/// the codec carries what only the handler knows: a protocol parser's position, a half-read
/// request, a client's name. Keep it small in the common case (up to 512 bytes travel inside the
/// connection's record; more, up to 1 GiB, in chunks of their own) and versioned by
/// ``UpgradeWire/version``: a change of what `encode` writes is a change of the record.
///
/// `decode` reads bytes from another process: it must throw, never trap, on any input, and
/// allocate no more than the bytes it is given justify.
public protocol HandOverCodec: Sendable {
    /// The handler's `ConnectionHandler/ConnectionState`.
    associatedtype State

    /// The state as bytes (at most ``ConnectionRecord/maxStateLength``).
    func encode(_ state: State) -> [UInt8]

    /// The state from ``encode(_:)``'s bytes; `peer` is the connection's socket peer.
    /// - Throws: ``UpgradeError`` when the bytes cannot be such a state.
    func decode(_ bytes: ArraySlice<UInt8>, peer: SocketAddress) throws(UpgradeError) -> State
}
