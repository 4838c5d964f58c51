import Reactor

/// Which datagram sources a UDP echo refuses to answer, so that it can never be turned into a
/// reflector or into one end of an echo loop (CVE-1999-0103).
///
/// - Source ports in ``RefusedPorts`` (default `0-1023,2049`, OpenBSD inetd's `dg_badinput`): a
///   datagram forged to come from another host's echo (7), chargen (19), daytime, DNS, NTP or NFS
///   (2049) port would start a storm between the two services.
/// - The echo's own port, from any address: a datagram forged to come from this server (or from
///   another echo listening on the same port) would bounce between them forever.
/// - Sources that cannot be the sender of a datagram: 0.0.0.0/8, multicast (224.0.0.0/4,
///   ff00::/8), the limited broadcast 255.255.255.255, `::`, and those as IPv4-mapped IPv6.
///   Linux drops them as martians when they come from another host (ip_route_input_slow), but a
///   raw-socket forgery on the host itself reaches the socket over loopback (measured in
///   UDPEchoTests), so this check is what refuses them.
public struct DatagramSourcePolicy: Sendable {
    /// Refused source ports.
    public let refusedPorts: RefusedPorts
    /// The echo's own port (refused as a source); nil for none.
    public let ownPort: Int?

    /// A policy refusing `refusedPorts`, `ownPort` and the impossible sources.
    public init(refusedPorts: RefusedPorts = .default, ownPort: Int?) {
        self.refusedPorts = refusedPorts
        self.ownPort = ownPort
    }

    /// Why `source` must not be answered, or nil when it may be.
    @inlinable
    public func refusal(_ source: DatagramSource) -> DatagramDrop? {
        let port = source.port
        if refusedPorts.contains(port) || port == ownPort { return .refusedPort }
        if let v4 = source.ipv4 {
            return Self.refusesIPv4(v4) ? .refusedAddress : nil
        }
        if let v6 = source.ipv6 {
            let multicast = v6.prefix >> 56 == 0xFF
            let unspecified = v6.prefix == 0 && v6.interface == 0
            return multicast || unspecified ? .refusedAddress : nil
        }
        return .refusedAddress
    }

    /// 0.0.0.0/8, 224.0.0.0/4 (multicast) and 255.255.255.255 (limited broadcast). Address in
    /// host byte order.
    @inlinable
    public static func refusesIPv4(_ address: UInt32) -> Bool {
        address >> 24 == 0 || address >> 28 == 0xE || address == 0xFFFF_FFFF
    }
}

/// A set of UDP ports, as a 65,536-bit map (8 KiB): one shift and mask per lookup.
public struct RefusedPorts: Sendable, Equatable, CustomStringConvertible {
    @usableFromInline let words: [UInt64]
    /// The list it was parsed from, for logs.
    public let description: String

    /// OpenBSD inetd's rule: every port below 1024 (0 included: no datagram comes from it) and
    /// 2049 (NFS).
    public static let `default` = try! RefusedPorts(parsing: "0-1023,2049")

    /// Parses a comma-separated list of ports and ranges (`7,19,1-1023`); `none` or an empty
    /// list refuses no port.
    /// - Throws: ``RefusedPortsError`` naming the bad item.
    public init(parsing text: String) throws(RefusedPortsError) {
        var words = [UInt64](repeating: 0, count: 65_536 / 64)
        let trimmed = text.filter { $0 != " " }
        if trimmed != "none" && !trimmed.isEmpty {
            for item in trimmed.split(separator: ",", omittingEmptySubsequences: false) {
                let bounds = item.split(separator: "-", omittingEmptySubsequences: false)
                guard (1...2).contains(bounds.count),
                      let low = Int(bounds[0]), let high = Int(bounds[bounds.count - 1]),
                      (0...65_535).contains(low), (0...65_535).contains(high), low <= high else {
                    throw RefusedPortsError(item: String(item))
                }
                for port in low...high { words[port >> 6] |= 1 << UInt64(port & 63) }
            }
        }
        self.words = words
        description = trimmed.isEmpty ? "none" : trimmed
    }

    /// Whether `port` is refused.
    @inlinable
    public func contains(_ port: Int) -> Bool {
        guard port >= 0 && port < 65_536 else { return false }
        return words[port >> 6] & (1 << UInt64(port & 63)) != 0
    }
}

/// An item of a port list that is not a port (0-65535) or a range `low-high`.
public struct RefusedPortsError: Error, Sendable, CustomStringConvertible {
    /// The item in error.
    public let item: String
    public var description: String { "'\(item)' is not a port (0-65535) or a range such as 1-1023" }
}
