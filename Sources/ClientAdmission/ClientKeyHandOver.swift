// The per-client limit across a binary upgrade (the ZeroDropUpgrade product; reflectd and resp-server):
// a connection that holds a place carries its client key to the new process, which takes the
// place there again, so that the place is given back exactly once, by whichever process closes
// the connection.

extension ClientKey {
    /// The key as a marker and one integer, to carry it to another process.
    ///
    /// Marker 1 is 0.2.0's form, which that version reads too: an IPv4 address under
    /// `ClientKey.ipv4Tag`, or an IPv6 /64 whose first 32 bits are not all ones. Marker 2 is
    /// an IPv6 /64 in `ffff:ffff::/32` (multicast: never a real TCP source, only a forged PROXY
    /// one), which marker 1 would confuse with an IPv4 address.
    public var handOver: (marker: UInt8, value: UInt64) {
        if isIPv4 { return (1, Self.ipv4Tag | value) }
        return value & Self.ipv4Tag == Self.ipv4Tag ? (2, value) : (1, value)
    }

    /// A key carried from another process (see ``handOver``); nil for an unknown marker.
    public init?(handOverMarker marker: UInt8, value: UInt64) {
        switch marker {
        case 1:
            let isIPv4 = value & Self.ipv4Tag == Self.ipv4Tag
            self.init(value: value, isIPv4: isIPv4)
        case 2:
            self.init(value: value, isIPv4: false)
        default:
            return nil
        }
    }
}
