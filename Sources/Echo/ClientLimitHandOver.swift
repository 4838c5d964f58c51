// The per-client limit across a binary upgrade (reflectd's hand-over, Sources/reflectd/Upgrade*.swift):
// a connection that holds a place carries its client key to the new process, which takes the
// place there again, so that the place is given back exactly once, by whichever process closes
// the connection.

extension ClientKey {
    /// The key as one integer, to carry it to another process.
    public var handOverValue: UInt64 { value }

    /// A key carried from another process (see ``handOverValue``).
    public init(handOverValue: UInt64) { value = handOverValue }
}
