import Echo
import Reactor
import ServerKit
import Synchronization

/// The reactors of this process, for the metrics endpoint to sum.
final class ReactorRegistry: Sendable {
    private let handles = Mutex<[ReactorHandle]>([])

    func add(_ handle: ReactorHandle) { handles.withLock { $0.append(handle) } }
    var all: [ReactorHandle] { handles.withLock { $0 } }
}

/// One metrics connection. A class so that echo connections, which never have one, carry only a
/// nil reference in their state. Reused: a closed connection's goes back to the endpoint's spares.
final class MetricsRequest {
    var buffer: [UInt8] = []
    /// The request deadline's timer (bound to the connection), cancelled when the connection closes.
    var deadline: TimerID?
    /// False for a connection over the cap, closed at once: it never held a place.
    let holdsPlace: Bool
    /// The connection's extra state in the handler (its `http` is this request), reused with it.
    private(set) var extra: ConnectionExtra?

    init(holdsPlace: Bool) { self.holdsPlace = holdsPlace }

    /// This request with the handler's state for a metrics connection from `peer`, made once.
    func connectionExtra(peer: SocketAddress) -> ConnectionExtra {
        if let extra { return extra }
        // The peer is the first user's; a metrics connection's extra never reads it (its log
        // lines use the connection's own peer).
        let made = ConnectionExtra(peer: peer)
        made.http = self
        extra = made
        return made
    }

    /// Ready for another connection: the buffer keeps its storage unless a large request grew it.
    func reset() {
        deadline = nil
        if buffer.capacity > MetricsEndpoint.keptBuffer {
            buffer = []
        } else {
            buffer.removeAll(keepingCapacity: true)
        }
    }
}

/// Serves `GET /metrics` in the Prometheus text format, and the health checks `GET /livez` and
/// `GET /readyz` (``HealthCheck``). Lives on the reactor that listens on the
/// metrics port and is used only from that reactor's thread.
///
/// The endpoint is exempt from --max-connections (a full server must stay observable), so it has
/// bounds of its own: at most ``maxConnections`` at once, ``requestDeadline`` to send a request,
/// and ``maxRequest`` bytes of it.
final class MetricsEndpoint {
    /// Why 8 KiB: a scrape request is a few hundred bytes; more is not a scraper.
    static let maxRequest = 8 * 1024
    /// Why 16: a Prometheus server scrapes over one connection at a time; 16 leaves room for a
    /// few of them and an operator's curl, while a flood of half-open requests can hold at most
    /// 16 fds and 16 × 8 KiB of buffered header. Connections over it are accepted and reset at once.
    static let maxConnections = 16
    /// Why 5 s: a scraper sends its whole request at once; a connection that has not in 5 s is a
    /// slow client or a slowloris, and it holds one of the 16 places meanwhile.
    static let requestDeadline: Duration = .seconds(5)
    /// Why 1 KiB: a scrape's or a probe's request is a few hundred bytes, so a spare request keeps
    /// a buffer that size for the next one (no allocation per probe); a bigger one (up to
    /// ``maxRequest``) is freed, so the spares hold at most 16 × 1 KiB.
    static let keptBuffer = 1024

    /// The metrics listener's address (the bound one, once listening).
    var address: SocketAddress
    let registry: ReactorRegistry
    /// The reactor this endpoint runs on (set once the reactor exists), for its live counters.
    var ownStatistics: () -> ReactorStatistics = { ReactorStatistics() }
    var ownIndex = 0
    /// `--max-connections-per-client`, for its refusal counter.
    var clientLimit: ClientLimit?
    /// Counters of the process this one took over from at an upgrade: ours continue them.
    var carried = ReactorStatistics()
    /// Log lines dropped because the log reader was too slow.
    var logLinesDropped: () -> Int = { 0 }
    /// What `GET /readyz` answers: 503 once a stop signal arrived.
    var readiness = Readiness()

    // The metrics connections' own traffic, subtracted so the counters describe echo clients.
    private var accepted = 0
    private var open = 0
    private var closed: [String: Int] = [:]
    private var bytesIn = 0
    private var bytesOut = 0
    // The endpoint's own bounds at work.
    private var active = 0
    private var rejected = 0
    private var timedOut = 0
    /// Requests of closed connections, for the next ones: with a probe every few seconds, a
    /// connection then allocates nothing here. At most ``maxConnections``, reserved up front.
    private var spare: [MetricsRequest] = []
    /// The one request of every connection over the cap (reset at once, it holds no place).
    private let overCap = MetricsRequest(holdsPlace: false)

    init(address: SocketAddress, registry: ReactorRegistry) {
        self.address = address
        self.registry = registry
        spare.reserveCapacity(Self.maxConnections)
    }

    func serves(_ listener: SocketAddress?) -> Bool {
        guard let listener else { return false }
        return listener.port == address.port && listener.host == address.host
    }

    /// A metrics connection was accepted: give it a place and a deadline (a spare request when
    /// there is one), or reset it when all places are taken. Returns the handler's state for it.
    func opened<H>(_ connection: borrowing Connection<H>) -> ConnectionExtra {
        accepted += 1
        open += 1
        guard active < Self.maxConnections else {
            rejected += 1
            connection.loop.close(connection.id, reason: .limit, discardingOutput: true)
            return overCap.connectionExtra(peer: connection.peer)
        }
        active += 1
        let request = spare.popLast() ?? MetricsRequest(holdsPlace: true)
        // Bound to the connection: no closure to allocate; ServerHandler.onTimer calls deadlinePassed.
        request.deadline = connection.schedule(after: Self.requestDeadline)
        return request.connectionExtra(peer: connection.peer)
    }

    /// A metrics connection's timer fired: its request deadline, so it is reset (reason `timeout`).
    func deadlinePassed(_ timer: TimerID, request: MetricsRequest) -> Action {
        guard timer == request.deadline else { return .continue }
        request.deadline = nil
        return .refuse(.timeout)
    }

    func closed<H>(_ reason: CloseReason, request: MetricsRequest, connection: borrowing Connection<H>) {
        open -= 1
        closed[reason.name, default: 0] += 1
        if let deadline = request.deadline {
            connection.cancel(deadline)
            request.deadline = nil
        }
        if request.holdsPlace {
            active -= 1
            if reason == .timeout { timedOut += 1 }
            request.reset()
            if spare.count < Self.maxConnections { spare.append(request) }
        }
    }

    func read<H>(_ bytes: UnsafeRawBufferPointer, connection: borrowing Connection<H>, request: MetricsRequest) -> Action {
        // Over the cap: already being reset; its bytes go nowhere (its request is shared).
        guard request.holdsPlace else { return .continue }
        bytesIn += bytes.count
        request.buffer.append(contentsOf: bytes)
        // RFC 9112 §2.2: empty lines before the request line are ignored.
        if let first = request.buffer.firstIndex(where: { $0 != 13 && $0 != 10 }), first > 0 {
            request.buffer.removeFirst(first)
        } else if request.buffer.allSatisfy({ $0 == 13 || $0 == 10 }) {
            request.buffer.removeAll()
        }
        guard let end = headerEnd(request.buffer) else {
            if request.buffer.count > Self.maxRequest {
                return respond(431, "Request Header Fields Too Large", "request too large\n", connection)
            }
            return .continue
        }
        // The request line, ended by LF or CRLF (RFC 9112 §2.2 lets a recipient accept a bare LF).
        var line = request.buffer[..<end].prefix { $0 != 10 }
        if line.last == 13 { line = line.dropLast() }
        // Probes first, on the bytes as they are: nothing allocated before the answer.
        if let (check, head) = HealthCheck.match(requestLine: line) {
            return respond(check.response(ready: readiness.isReady, head: head), connection)
        }
        let parts = line.split(separator: UInt8(ascii: " "))
        guard parts.count >= 2 else { return respond(400, "Bad Request", "bad request\n", connection) }
        let method = String(decoding: parts[0], as: UTF8.self)
        let target = Self.path(of: String(decoding: parts[1], as: UTF8.self))
        guard method == "GET" || method == "HEAD" else {
            return respond(405, "Method Not Allowed", "only GET and HEAD\n", connection, extraHeaders: "Allow: GET, HEAD\r\n")
        }
        if let check = HealthCheck(path: target) {
            return respond(check.response(ready: readiness.isReady, head: method == "HEAD"), connection)
        }
        guard target == "/metrics" || target.hasPrefix("/metrics?") else {
            return respond(404, "Not Found", "not found; try /metrics, /livez or /readyz\n", connection)
        }
        return respond(200, "OK", render(), connection, headOnly: method == "HEAD")
    }

    /// The path of a request target: origin-form as is, absolute-form (`http://host:port/metrics`,
    /// which RFC 9112 §3.2.2 says a server must accept) without its scheme and authority.
    static func path(of target: String) -> String {
        let lower = target.lowercased()
        for scheme in ["http://", "https://"] where lower.hasPrefix(scheme) {
            let rest = target.dropFirst(scheme.count)
            guard let slash = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) else { return "/" }
            let path = String(rest[slash...])
            return path.hasPrefix("?") ? "/" + path : path
        }
        return target
    }

    /// Where the header block ends: the first empty line, with CRLF or bare LF line endings.
    private func headerEnd(_ buffer: [UInt8]) -> Int? {
        var i = buffer.startIndex
        while let lf = buffer[i...].firstIndex(of: 10) {
            let next = lf + 1
            if next < buffer.count && buffer[next] == 10 { return lf }
            if next + 1 < buffer.count && buffer[next] == 13 && buffer[next + 1] == 10 { return lf }
            i = next
        }
        return nil
    }

    private func respond<H>(_ status: Int, _ text: String, _ body: String, _ connection: borrowing Connection<H>,
                            headOnly: Bool = false, extraHeaders: String = "") -> Action {
        var response = "HTTP/1.1 \(status) \(text)\r\n"
        response += "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
        response += extraHeaders
        response += "Content-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n"
        if !headOnly { response += body }
        bytesOut += response.utf8.count
        var bytes = response
        bytes.withUTF8 { _ = connection.write(UnsafeRawBufferPointer($0)) }
        return .close(CloseReason("http"))
    }

    /// A whole static response (the health checks'), written from the binary's read-only data.
    private func respond<H>(_ response: StaticString, _ connection: borrowing Connection<H>) -> Action {
        bytesOut += response.utf8CodeUnitCount
        response.withUTF8Buffer { _ = connection.write(UnsafeRawBufferPointer($0)) }
        return .close(CloseReason("http"))
    }

    /// The process's echo counters: every reactor's, summed, less the metrics connections' own.
    /// Each reactor publishes its counters about once a second, so the other reactors' numbers may
    /// be up to a second old; this reactor's are live.
    /// `live`: every reactor's counters read on its own thread (the hand-over does), instead of
    /// the published ones. The counters carried over from an upgraded process are added.
    func echoTotals(perReactor live: [ReactorStatistics]? = nil) -> (total: ReactorStatistics, perReactor: [ReactorStatistics]) {
        var perReactor: [ReactorStatistics] = []
        if let live {
            perReactor = live
        } else {
            for (i, handle) in registry.all.enumerated() {
                perReactor.append(i == ownIndex ? ownStatistics() : handle.latestStatistics)
                handle.requestStatistics()
            }
        }
        var total = perReactor.reduce(carried, +)
        total.accepted -= accepted
        total.open -= open
        for (reason, count) in closed { total.closed[reason, default: 0] -= count }
        total.bytesIn -= bytesIn
        total.bytesOut -= bytesOut
        return (total, perReactor)
    }

    /// The text exposition. Counters of every reactor are summed (see ``echoTotals()``);
    /// per-reactor series carry a `reactor` label.
    func render() -> String {
        let (total, perReactor) = echoTotals()

        var out = ""
        func metric(_ name: String, _ type: String, _ help: String, _ samples: [(String, Int)]) {
            out += "# HELP reflectd_\(name) \(help)\n# TYPE reflectd_\(name) \(type)\n"
            for (labels, value) in samples { out += "reflectd_\(name)\(labels) \(value)\n" }
        }
        metric("connections_open", "gauge", "Echo connections open now.", [("", total.open)])
        metric("connections_accepted_total", "counter", "Echo connections accepted, including those refused by the limit.", [("", total.accepted)])
        metric("connections_rejected_total", "counter", "Connections closed at once because --max-connections was reached.", [("", total.rejectedByLimit)])
        if let clientLimit {
            metric("connections_rejected_per_client_total", "counter", "Connections closed at once because their client had --max-connections-per-client open.", [("", clientLimit.rejected)])
        }
        // The fixed reasons always, others once they happened: the metrics connections' own close
        // reasons are subtracted, so they would only be series that stay at 0.
        let reasons = ["eof", "exit", "reset", "error", "shutdown", "timeout", "limit"]
        let happened = total.closed.filter { $0.value > 0 }.keys
        let closedSamples = Set(reasons).union(happened).sorted().map { ("{reason=\"\($0)\"}", max(0, total.closed[$0] ?? 0)) }
        metric("connections_closed_total", "counter", "Echo connections closed, by reason.", closedSamples)
        metric("bytes_received_total", "counter", "Bytes read from echo clients.", [("", total.bytesIn)])
        metric("bytes_sent_total", "counter", "Bytes written to echo clients.", [("", total.bytesOut)])
        let errors = Set(["EMFILE", "ENFILE", "ENOBUFS", "ENOMEM"]).union(total.acceptErrors.keys).sorted()
        metric("accept_errors_total", "counter", "Failed accept calls, by error.", errors.map { ("{error=\"\($0)\"}", total.acceptErrors[$0] ?? 0) })
        metric("accept_pauses_total", "counter", "Times accepting paused for back-off after running out of fds or memory.", [("", total.acceptPauses)])
        metric("udp_datagrams_received_total", "counter", "Datagrams received by the UDP echo (--udp).", [("", total.datagramsIn)])
        metric("udp_datagrams_sent_total", "counter", "Datagrams echoed (taken by the kernel).", [("", total.datagramsOut)])
        metric("udp_bytes_received_total", "counter", "Payload bytes of the datagrams received.", [("", total.datagramBytesIn)])
        metric("udp_bytes_sent_total", "counter", "Payload bytes of the datagrams echoed.", [("", total.datagramBytesOut)])
        metric("udp_datagrams_dropped_total", "counter", "Datagrams not echoed, by reason.",
               DatagramDrop.allCases.map { ("{reason=\"\($0)\"}", total.datagramDrops[$0]) })
        metric("reactor_loop_iterations_total", "counter", "Event-loop iterations, per reactor.",
               perReactor.enumerated().map { ("{reactor=\"\($0.offset)\"}", $0.element.loopIterations) })
        metric("reactor_connections_accepted_total", "counter", "Connections accepted, per reactor (metrics scrapes included).",
               perReactor.enumerated().map { ("{reactor=\"\($0.offset)\"}", $0.element.accepted) })
        metric("reactors", "gauge", "Reactor threads.", [("", perReactor.count)])
        metric("log_lines_dropped_total", "counter", "Log lines dropped because the log reader (stderr) was too slow.", [("", logLinesDropped())])
        metric("metrics_connections_rejected_total", "counter", "Metrics connections reset at once because \(Self.maxConnections) were open.", [("", rejected)])
        metric("metrics_requests_timed_out_total", "counter", "Metrics connections closed for not sending a request within \(Self.requestDeadline).", [("", timedOut)])
        return out
    }
}
