import Reactor
import ServerKit

// reflectd's side of the kit's metrics endpoint: its counters describe echo clients, and a
// metrics connection's state in ServerHandler is a ConnectionExtra around the endpoint's request.

extension MetricsEndpoint {
    /// The process's echo counters (see ``MetricsEndpoint/totals(perReactor:)``).
    func echoTotals(perReactor live: [ReactorStatistics]? = nil) -> (total: ReactorStatistics, perReactor: [ReactorStatistics]) {
        totals(perReactor: live)
    }
}

extension ConnectionExtra {
    /// The handler's state for a metrics connection from `peer`: made once per request and
    /// reused with it, so a probe allocates nothing.
    static func metrics(_ request: MetricsRequest, peer: SocketAddress) -> ConnectionExtra {
        if let extra = request.owner as? ConnectionExtra { return extra }
        // The peer is the first user's; a metrics connection's extra never reads it (its log
        // lines use the connection's own peer).
        let made = ConnectionExtra(peer: peer)
        made.http = request
        request.owner = made
        return made
    }
}
