import Reactor

/// One metrics connection. A class so that a server's own connections, which never have one,
/// carry only a nil reference in their state. Reused: a closed connection's goes back to the
/// endpoint's spares.
public final class MetricsRequest {
    var buffer: [UInt8] = []
    /// The request deadline's timer (bound to the connection), cancelled when the connection closes.
    var deadline: TimerID?
    /// False for a connection over the cap, closed at once: it never held a place.
    let holdsPlace: Bool
    /// Whatever the handler keeps for a metrics connection (its per-connection wrapper of this
    /// request, say), reused with the request so a probe allocates nothing.
    public var owner: AnyObject?

    init(holdsPlace: Bool) { self.holdsPlace = holdsPlace }

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
/// `GET /readyz` (``HealthCheck``), for any handler. Lives on the reactor that listens on the
/// metrics port and is used only from that reactor's thread: the handler passes it the
/// connections accepted on that listener (``serves(_:)``, ``opened(_:)``,
/// ``read(_:connection:request:)``, ``deadlinePassed(_:request:)``, ``closed(_:request:connection:)``).
///
/// Every series is named with the server's ``prefix`` (`reflectd_`, `resp_`). The counters are
/// each reactor's plain `ReactorStatistics`, summed at scrape time: nothing per message is
/// atomic. (Why not swift-prometheus: its counters are objects incremented where the event
/// happens, atomically; feeding it our sums would build a registry of metric objects at every
/// scrape to format twenty lines.)
///
/// The endpoint is exempt from --max-connections (a full server must stay observable), so it has
/// bounds of its own: at most ``maxConnections`` at once, ``requestDeadline`` to send a request,
/// and ``maxRequest`` bytes of it.
public final class MetricsEndpoint {
    /// Why 8 KiB: a scrape request is a few hundred bytes; more is not a scraper.
    public static let maxRequest = 8 * 1024
    /// Why 16: a Prometheus server scrapes over one connection at a time; 16 leaves room for a
    /// few of them and an operator's curl, while a flood of half-open requests can hold at most
    /// 16 fds and 16 × 8 KiB of buffered header. Connections over it are accepted and reset at once.
    public static let maxConnections = 16
    /// Why 5 s: a scraper sends its whole request at once; a connection that has not in 5 s is a
    /// slow client or a slowloris, and it holds one of the 16 places meanwhile.
    public static let requestDeadline: Duration = .seconds(5)
    /// Why 1 KiB: a scrape's or a probe's request is a few hundred bytes, so a spare request keeps
    /// a buffer that size for the next one (no allocation per probe); a bigger one (up to
    /// ``maxRequest``) is freed, so the spares hold at most 16 × 1 KiB.
    public static let keptBuffer = 1024

    /// Every series' name starts with this (`reflectd_`).
    public let prefix: String
    /// The metrics listener's address (the bound one, once listening).
    public var address: SocketAddress
    /// The process's reactors, summed at each scrape.
    public let registry: ReactorRegistry
    /// The reactor this endpoint runs on (set once the reactor exists), for its live counters.
    public var ownStatistics: () -> ReactorStatistics = { ReactorStatistics() }
    /// That reactor's index in ``registry``.
    public var ownIndex = 0
    /// Connections refused by a per-client limit so far; nil for no such series.
    public var clientLimitRejections: (() -> Int)?
    /// Close reasons whose series are shown even at 0 (others once they happened).
    public var closeReasons = ["eof", "reset", "error", "shutdown", "timeout", "limit"]
    /// The server's own series, after the accept counters, given the summed counters.
    public var protocolSeries: (ReactorStatistics, inout MetricsText) -> Void = { _, _ in }
    /// Counters of the process this one took over from at an upgrade: ours continue them.
    public var carried = ReactorStatistics()
    /// Log lines dropped because the log reader was too slow.
    public var logLinesDropped: () -> Int = { 0 }
    /// What `GET /readyz` answers: 503 once a stop signal arrived.
    public var readiness = Readiness()

    // The metrics connections' own traffic, subtracted so the counters describe the clients.
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

    /// An endpoint whose series start with `prefix`, to listen on `address`, summing `registry`.
    public init(prefix: String, address: SocketAddress, registry: ReactorRegistry) {
        self.prefix = prefix
        self.address = address
        self.registry = registry
        spare.reserveCapacity(Self.maxConnections)
    }

    /// Whether a connection accepted on `listener` is the endpoint's.
    public func serves(_ listener: SocketAddress?) -> Bool {
        guard let listener else { return false }
        return listener.port == address.port && listener.host == address.host
    }

    /// A metrics connection was accepted: give it a place and a deadline (a spare request when
    /// there is one), or reset it when all places are taken. Returns its request, for the handler
    /// to keep in the connection's state.
    public func opened<H>(_ connection: borrowing Connection<H>) -> MetricsRequest {
        accepted += 1
        open += 1
        guard active < Self.maxConnections else {
            rejected += 1
            connection.context.close(connection.id, reason: .limit, discardingOutput: true)
            return overCap
        }
        active += 1
        let request = spare.popLast() ?? MetricsRequest(holdsPlace: true)
        // Bound to the connection: no closure to allocate; the handler's onTimer calls deadlinePassed.
        request.deadline = connection.schedule(after: Self.requestDeadline)
        return request
    }

    /// A metrics connection's timer fired: its request deadline, so it is reset (reason `timeout`).
    public func deadlinePassed(_ timer: TimerID, request: MetricsRequest) -> Action {
        guard timer == request.deadline else { return .continue }
        request.deadline = nil
        return .refuse(.timeout)
    }

    /// A metrics connection closed, however it ended: its place and request go back.
    public func closed<H>(_ reason: CloseReason, request: MetricsRequest, connection: borrowing Connection<H>) {
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

    /// A metrics connection's bytes: answered once its request's header is in.
    public func read<H>(_ bytes: UnsafeRawBufferPointer, connection: borrowing Connection<H>, request: MetricsRequest) -> Action {
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
    public static func path(of target: String) -> String {
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

    /// The process's counters: every reactor's, summed, less the metrics connections' own.
    /// Each reactor publishes its counters about once a second, so the other reactors' numbers may
    /// be up to a second old; this reactor's are live.
    /// `live`: every reactor's counters read on its own thread (the hand-over does), instead of
    /// the published ones. The counters carried over from an upgraded process are added.
    public func totals(perReactor live: [ReactorStatistics]? = nil) -> (total: ReactorStatistics, perReactor: [ReactorStatistics]) {
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

    /// The text exposition. Counters of every reactor are summed (see ``totals(perReactor:)``);
    /// per-reactor series carry a `reactor` label.
    public func render() -> String {
        let (total, perReactor) = totals()
        var out = MetricsText(prefix: prefix)
        out.metric("connections_open", "gauge", "Client connections open now.", [("", total.open)])
        out.metric("connections_accepted_total", "counter", "Client connections accepted, including those refused by a limit.", [("", total.accepted)])
        out.metric("connections_rejected_total", "counter", "Connections closed at once because --max-connections was reached.", [("", total.rejectedByLimit)])
        if let clientLimitRejections {
            out.metric("connections_rejected_per_client_total", "counter", "Connections closed at once because their client had --max-connections-per-client open.", [("", clientLimitRejections())])
        }
        // The fixed reasons always, others once they happened: the metrics connections' own close
        // reasons are subtracted, so they would only be series that stay at 0.
        let happened = total.closed.filter { $0.value > 0 }.keys
        let closedSamples = Set(closeReasons).union(happened).sorted().map { ("{reason=\"\($0)\"}", max(0, total.closed[$0] ?? 0)) }
        out.metric("connections_closed_total", "counter", "Client connections closed, by reason.", closedSamples)
        out.metric("bytes_received_total", "counter", "Bytes read from clients.", [("", total.bytesIn)])
        out.metric("bytes_sent_total", "counter", "Bytes written to clients.", [("", total.bytesOut)])
        out.metric("bytes_echoed_in_kernel_total", "counter", "Of the bytes sent, those echoed inside the kernel (splice), never copied through the server's memory.", [("", total.bytesEchoedInKernel)])
        let errors = Set(["EMFILE", "ENFILE", "ENOBUFS", "ENOMEM"]).union(total.acceptErrors.keys).sorted()
        out.metric("accept_errors_total", "counter", "Failed accept calls, by error.", errors.map { ("{error=\"\($0)\"}", total.acceptErrors[$0] ?? 0) })
        out.metric("accept_pauses_total", "counter", "Times accepting paused for back-off after running out of fds or memory.", [("", total.acceptPauses)])
        protocolSeries(total, &out)
        out.metric("reactor_loop_iterations_total", "counter", "Event-loop iterations, per reactor.",
                   perReactor.enumerated().map { ("{reactor=\"\($0.offset)\"}", $0.element.loopIterations) })
        out.metric("reactor_connections_accepted_total", "counter", "Connections accepted, per reactor (metrics scrapes included).",
                   perReactor.enumerated().map { ("{reactor=\"\($0.offset)\"}", $0.element.accepted) })
        out.metric("reactors", "gauge", "Reactor threads.", [("", perReactor.count)])
        out.metric("log_lines_dropped_total", "counter", "Log lines dropped because the log reader (stderr) was too slow.", [("", logLinesDropped())])
        out.metric("metrics_connections_rejected_total", "counter", "Metrics connections reset at once because \(Self.maxConnections) were open.", [("", rejected)])
        out.metric("metrics_requests_timed_out_total", "counter", "Metrics connections closed for not sending a request within \(Self.requestDeadline).", [("", timedOut)])
        return out.text
    }
}
