import ArgumentParser
import ClientAdmission

/// `--max-connections-per-client`, `--proxy-protocol` and `--proxy-protocol-from`: who a client is
/// and how many connections it may hold, the same flags for every server of the package
/// (`@OptionGroup var admission: AdmissionOptions`).
public struct AdmissionOptions: ParsableArguments, Sendable {
    @Option(parsing: .unconditional, help: ArgumentHelp("Most connections open at once from one client address (IPv6: one /64; behind --proxy-protocol, the address in the PROXY header); more are refused at once with reason `limit`. `auto`: 90 % of the connections the fd limit leaves room for, so one address never takes every fd (none where the server's own limit on all connections together is lower); `off`: no limit.", valueName: "n|auto|off"))
    public var maxConnectionsPerClient: PerClientLimit = .auto

    @Flag(help: "Every connection starts with a PROXY protocol v1 or v2 header (HAProxy `send-proxy`/`send-proxy-v2`): logs and --max-connections-per-client see the client's address. A missing, malformed or late (3 s) header closes the connection with reason `proxy`. Trust it only from your balancers: see --proxy-protocol-from.")
    public var proxyProtocol = false

    @Option(parsing: .unconditional, help: ArgumentHelp("With --proxy-protocol: the only sources that may send a PROXY header, as comma-separated addresses and CIDR prefixes (IPv4 and IPv6, e.g. `10.0.0.0/8,2001:db8::/32,127.0.0.1`). A connection from anywhere else is refused at once with reason `proxy` and logged with its real address. Unix-socket peers are trusted.", valueName: "list"))
    public var proxyProtocolFrom: String?

    public init() {}

    /// The single-value options, for ``OptionChecks/rejectRepeated(_:in:)``.
    public static let singleValue = ["max-connections-per-client", "proxy-protocol-from"]

    public func validate() throws {
        if proxyProtocolFrom != nil && !proxyProtocol {
            throw ValidationError("--proxy-protocol-from needs --proxy-protocol")
        }
        _ = try trusted()
    }

    /// `--proxy-protocol-from`, parsed; nil when not given.
    public func trusted() throws(ValidationError) -> AddressPrefixList? {
        guard let proxyProtocolFrom else { return nil }
        do {
            return try AddressPrefixList(parsing: proxyProtocolFrom)
        } catch {
            throw ValidationError("--proxy-protocol-from: \(error)")
        }
    }

    /// The policy for a process with room for `capacity` connections (what the fd limit leaves),
    /// with `limit` as the per-client limit (see ``perClientLimit(capacity:)``).
    public func policy(clientLimit limit: ClientLimit?) throws(ValidationError) -> AdmissionPolicy {
        AdmissionPolicy(proxyProtocol: proxyProtocol, proxyFrom: try trusted(), clientLimit: limit)
    }

    /// The per-client limit for a process with room for `capacity` connections; nil for none.
    public func perClientLimit(capacity: Int) -> ClientLimit? {
        maxConnectionsPerClient.maximum(capacity: capacity).map { ClientLimit(maximum: $0) }
    }
}
