import Reactor

/// What a server admits, for any `ConnectionHandler`: whether its connections start with a PROXY
/// header (v1 or v2, as HAProxy's `send-proxy` and `send-proxy-v2` send), which sources may send
/// one, and how many connections one client may hold.
///
/// Shared by every reactor of the process (the per-client table is one, under a lock taken at open
/// and close only). Each connection keeps an ``AdmissionGate`` in its state and feeds it its first
/// bytes; see there for the calls a handler makes.
public struct AdmissionPolicy: Sendable {
    /// Every connection starts with a PROXY header; a connection without one is refused.
    public var proxyProtocol: Bool
    /// The only sources that may send that header; nil trusts every source. A connection from
    /// elsewhere is refused at once.
    public var proxyFrom: AddressPrefixList?
    /// At most this many connections per client (the PROXY header's source when there is one).
    public var clientLimit: ClientLimit?

    /// The close reason of a connection whose PROXY header was untrusted, malformed, incomplete or late.
    public static let proxyReason = CloseReason("proxy")
    /// The close reason of a balancer's health check: a connection whose PROXY header was a v2
    /// `LOCAL` command or a v1 `UNKNOWN` line (or a v1 header followed by nothing), ended by the
    /// peer. Counted apart from real resets, so that an alert on `reset` is not set off by one
    /// check a second (see `Connection.countPeerClose(as:)`).
    public static let checkReason = CloseReason("check")
    /// How long a connection may take to send its whole PROXY header. Why 3 s: a balancer sends it
    /// with its first segment; a peer that has not in 3 s is not a balancer, and it holds an fd.
    public static let headerTimeout: Duration = .seconds(3)

    /// A policy; the default admits everyone, with no header and no limit.
    public init(proxyProtocol: Bool = false, proxyFrom: AddressPrefixList? = nil, clientLimit: ClientLimit? = nil) {
        self.proxyProtocol = proxyProtocol
        self.proxyFrom = proxyFrom
        self.clientLimit = clientLimit
    }

    /// False when the policy admits everyone at once: a handler can then skip the gate.
    public var isActive: Bool { proxyProtocol || clientLimit != nil }

    /// Takes `key`'s place under the per-client limit: the place to give back at close (nil when
    /// there is no limit or no key), or the refusal.
    public func take(_ key: ClientKey?) -> Result<ClientKey?, AdmissionRefusal> {
        guard let clientLimit, let key else { return .success(nil) }
        guard clientLimit.acquire(key) else { return .failure(.overLimit(key, maximum: clientLimit.maximum)) }
        return .success(key)
    }

    /// Gives back a place ``take(_:)`` gave.
    public func release(_ place: ClientKey) {
        clientLimit?.release(place)
    }
}

/// Why a connection was refused at admission. It holds nothing afterwards: no place, no linger.
public enum AdmissionRefusal: Error, Equatable, Sendable, CustomStringConvertible {
    /// `--proxy-protocol-from` does not list the peer, so its PROXY header is not trusted.
    case untrusted
    /// The bytes are not a PROXY header.
    case invalidHeader(ProxyHeaderError)
    /// The peer ended the stream after `received` bytes of the header.
    case endedInHeader(received: Int)
    /// The header was not complete within ``AdmissionPolicy/headerTimeout``.
    case headerTimeout(received: Int)
    /// The client has `maximum` connections open already.
    case overLimit(ClientKey, maximum: Int)

    /// The close reason to refuse with: `limit` for the per-client limit, `proxy` for the rest.
    public var closeReason: CloseReason {
        if case .overLimit = self { return .limit }
        return AdmissionPolicy.proxyReason
    }

    public var description: String {
        switch self {
        case .untrusted: return "not in --proxy-protocol-from, so its PROXY header is not trusted"
        case .invalidHeader(let error): return "\(error)"
        case .endedInHeader(let received): return "end of input after \(received) bytes of the header"
        case .headerTimeout(let received): return "incomplete after \(AdmissionPolicy.headerTimeout) (\(received) bytes received)"
        case .overLimit(let key, let maximum): return "\(maximum) connections from \(key) open already"
        }
    }
}
