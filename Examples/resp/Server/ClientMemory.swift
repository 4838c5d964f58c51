import Reactor
import Synchronization

/// `--maxmemory-clients`: a bound on what one reactor's clients hold in the server together,
/// their query buffers (requests received and not yet run: an unfinished request, or the rest of
/// a pipeline parked behind unread replies) plus their output buffers (replies written and not
/// yet taken by the kernel).
///
/// Why: `--max-request` and `--max-output` bound one client, so N clients could hold N times
/// both (20 clients that never read, each asking for `MGET` of 60 × 1 MB, took the RSS from
/// 80 MB to 1.24 GB). Redis 7 bounds all clients together with the same name and the same rule
/// (client eviction, `evictClients` in networking.c): when the total passes the limit, the
/// clients with the largest buffers are closed first, until it is under again.
///
/// The accounting is O(1) per event: a running total, updated as a connection's buffers grow
/// and shrink. Only connections with something buffered are in the table, so a client that keeps
/// up (replies sent whole, no unfinished request) costs no table operation at all. The reactor
/// drains a connection's output without telling the handler unless it passed the high
/// watermark, so a recorded output can be stale, always too high and by at most about the
/// high watermark; when the total passes the limit, every recorded output is first refreshed
/// from the reactor (a scan of the table, rare), and clients are closed only if the exact total
/// is still over.
///
/// One per reactor, used on its thread only.
final class ClientMemory {
    /// What one connection holds.
    struct Usage {
        var query: Int
        var output: Int
        var total: Int { query + output }
    }

    /// This reactor's share of `--maxmemory-clients` in bytes (0: no limit).
    let limit: Int
    /// Bytes the connections in ``usage`` hold, as last recorded.
    private(set) var total = 0
    /// The connections that hold something.
    private var usage: [ConnectionID: Usage] = [:]

    init(limit: Int) { self.limit = limit }

    var isOn: Bool { limit > 0 }
    var isOver: Bool { limit > 0 && total > limit }

    /// Records what `id` holds now.
    func record(_ id: ConnectionID, query: Int, output: Int) {
        let now = Usage(query: query, output: output)
        let before = usage[id]?.total ?? 0
        total += now.total - before
        usage[id] = now.total > 0 ? now : nil
    }

    /// `id` is closed: what it held is freed.
    func forget(_ id: ConnectionID) {
        guard let gone = usage.removeValue(forKey: id) else { return }
        total -= gone.total
    }

    /// Every connection left (handed over at an upgrade): nothing is held here any more.
    func forgetAll() {
        usage.removeAll()
        total = 0
    }

    /// Over the limit: refreshes every recorded output with `pending` (the reactor's exact count),
    /// then picks the connections with the largest buffers until the rest fit under the limit.
    /// They are forgotten at once (the caller closes them, discarding their output); returned
    /// with what each held, largest first.
    func evict(refreshing pending: (ConnectionID) -> Int) -> [(id: ConnectionID, bytes: Int)] {
        guard isOver else { return [] }
        var exact = 0
        for (id, held) in usage {
            var refreshed = held
            refreshed.output = pending(id)
            exact += refreshed.total
            usage[id] = refreshed
        }
        total = exact
        guard total > limit else { return [] }
        var victims: [(id: ConnectionID, bytes: Int)] = []
        for (id, held) in usage.sorted(by: { $0.value.total > $1.value.total }) {
            guard total > limit else { break }
            victims.append((id, held.total))
            forget(id)
        }
        return victims
    }
}

/// Clients closed by ``ClientMemory``, over all reactors, for the log line at exit.
final class EvictionCount: Sendable {
    private let count = Atomic<Int>(0)
    func add(_ n: Int) { count.add(n, ordering: .relaxed) }
    var value: Int { count.load(ordering: .relaxed) }
}
