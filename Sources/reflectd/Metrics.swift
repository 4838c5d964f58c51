import Echo
import Reactor
import Synchronization

/// The reactors of this process, for the metrics endpoint to sum.
final class ReactorRegistry: Sendable {
    private let handles = Mutex<[ReactorHandle]>([])

    func add(_ handle: ReactorHandle) { handles.withLock { $0.append(handle) } }
    var all: [ReactorHandle] { handles.withLock { $0 } }
}

/// One metrics request being read. A class so that echo connections, which never have one,
/// carry only a nil reference in their state.
final class MetricsRequest {
    var buffer: [UInt8] = []
}

/// Serves `GET /metrics` in the Prometheus text format. Lives on the reactor that listens on the
/// metrics port and is used only from that reactor's thread.
final class MetricsEndpoint {
    /// Why 8 KiB: a scrape request is a few hundred bytes; more is not a scraper.
    static let maxRequest = 8 * 1024

    /// The metrics listener's address (the bound one, once listening).
    var address: SocketAddress
    let registry: ReactorRegistry
    /// The reactor this endpoint runs on (set once the reactor exists), for its live counters.
    var ownStatistics: () -> ReactorStatistics = { ReactorStatistics() }
    var ownIndex = 0
    /// `--max-connections-per-client`, for its refusal counter.
    var clientLimit: ClientLimit?

    // The metrics connections' own traffic, subtracted so the counters describe echo clients.
    private var accepted = 0
    private var open = 0
    private var closed: [String: Int] = [:]
    private var bytesIn = 0
    private var bytesOut = 0

    init(address: SocketAddress, registry: ReactorRegistry) {
        self.address = address
        self.registry = registry
    }

    func serves(_ listener: SocketAddress?) -> Bool {
        guard let listener else { return false }
        return listener.port == address.port && listener.host == address.host
    }

    func opened() {
        accepted += 1
        open += 1
    }

    func closed(_ reason: CloseReason, request: MetricsRequest) {
        open -= 1
        closed[reason.name, default: 0] += 1
    }

    func read<H>(_ bytes: UnsafeRawBufferPointer, connection: borrowing Connection<H>, request: MetricsRequest) -> Action {
        bytesIn += bytes.count
        request.buffer.append(contentsOf: bytes)
        guard let end = headerEnd(request.buffer) else {
            if request.buffer.count > Self.maxRequest {
                return respond(431, "Request Header Fields Too Large", "request too large\n", connection, request)
            }
            return .continue
        }
        let line = request.buffer[..<end].split(separator: UInt8(ascii: "\r"), maxSplits: 1).first ?? []
        let parts = line.split(separator: UInt8(ascii: " "))
        guard parts.count >= 2 else { return respond(400, "Bad Request", "bad request\n", connection, request) }
        let method = String(decoding: parts[0], as: UTF8.self)
        let path = String(decoding: parts[1], as: UTF8.self)
        guard method == "GET" || method == "HEAD" else {
            return respond(405, "Method Not Allowed", "only GET\n", connection, request)
        }
        guard path == "/metrics" || path.hasPrefix("/metrics?") else {
            return respond(404, "Not Found", "not found; try /metrics\n", connection, request)
        }
        return respond(200, "OK", render(), connection, request, headOnly: method == "HEAD")
    }

    private func headerEnd(_ buffer: [UInt8]) -> Int? {
        guard buffer.count >= 4 else { return nil }
        for i in 0...(buffer.count - 4)
        where buffer[i] == 13 && buffer[i + 1] == 10 && buffer[i + 2] == 13 && buffer[i + 3] == 10 {
            return i
        }
        return nil
    }

    private func respond<H>(_ status: Int, _ text: String, _ body: String, _ connection: borrowing Connection<H>,
                            _ request: MetricsRequest, headOnly: Bool = false) -> Action {
        var response = "HTTP/1.1 \(status) \(text)\r\n"
        response += "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
        response += "Content-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n"
        if !headOnly { response += body }
        bytesOut += response.utf8.count
        var bytes = response
        bytes.withUTF8 { _ = connection.write(UnsafeRawBufferPointer($0)) }
        return .close(CloseReason("http"))
    }

    /// The text exposition. Counters of every reactor are summed; per-reactor series carry a
    /// `reactor` label. Each reactor publishes its counters about once a second, so the other
    /// reactors' numbers may be up to a second old; this reactor's are live.
    func render() -> String {
        let handles = registry.all
        var perReactor: [ReactorStatistics] = []
        for (i, handle) in handles.enumerated() {
            perReactor.append(i == ownIndex ? ownStatistics() : handle.latestStatistics)
            handle.requestStatistics()
        }
        var total = perReactor.reduce(ReactorStatistics(), +)
        total.accepted -= accepted
        total.open -= open
        for (reason, count) in closed { total.closed[reason, default: 0] -= count }
        total.bytesIn -= bytesIn
        total.bytesOut -= bytesOut

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
        let reasons = ["eof", "exit", "reset", "error", "shutdown", "timeout", "limit"]
        let closedSamples = Set(reasons).union(total.closed.keys).sorted().map { ("{reason=\"\($0)\"}", max(0, total.closed[$0] ?? 0)) }
        metric("connections_closed_total", "counter", "Echo connections closed, by reason.", closedSamples)
        metric("bytes_received_total", "counter", "Bytes read from echo clients.", [("", total.bytesIn)])
        metric("bytes_sent_total", "counter", "Bytes written to echo clients.", [("", total.bytesOut)])
        let errors = Set(["EMFILE", "ENFILE", "ENOBUFS", "ENOMEM"]).union(total.acceptErrors.keys).sorted()
        metric("accept_errors_total", "counter", "Failed accept calls, by error.", errors.map { ("{error=\"\($0)\"}", total.acceptErrors[$0] ?? 0) })
        metric("accept_pauses_total", "counter", "Times accepting paused for back-off after running out of fds or memory.", [("", total.acceptPauses)])
        metric("reactor_loop_iterations_total", "counter", "Event-loop iterations, per reactor.",
               perReactor.enumerated().map { ("{reactor=\"\($0.offset)\"}", $0.element.loopIterations) })
        metric("reactor_connections_accepted_total", "counter", "Connections accepted, per reactor (metrics scrapes included).",
               perReactor.enumerated().map { ("{reactor=\"\($0.offset)\"}", $0.element.accepted) })
        metric("reactors", "gauge", "Reactor threads.", [("", handles.count)])
        return out
    }
}
