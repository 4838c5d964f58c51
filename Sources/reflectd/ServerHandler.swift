import ClientAdmission
import Echo
import Logging
import Reactor
import ServerKit

/// reflectd's handler: echo on the echo listeners, Prometheus metrics over HTTP on the metrics
/// listener. Two protocols on one reactor; the listener that accepted a connection decides.
struct ServerHandler: ConnectionHandler {
    struct State {
        var echo = EchoState()
        /// nil on a plain echo connection, which allocates nothing and whose read path checks
        /// only this. (An enum of echo / metrics / client cost 7 more instructions per message,
        /// callgrind: its case test is not a plain nil check.)
        var extra: ConnectionExtra?
        /// The client's place under the per-client limit, given back at close; nil when it
        /// holds none. Inline, so a plain echo connection under a limit allocates nothing.
        var place: ClientKey?
    }

    /// The close reason of a balancer's health check (``AdmissionPolicy/checkReason``).
    static let check = AdmissionPolicy.checkReason

    let logger: Logger
    /// Whether `logger` writes info lines (the open and close of each connection). Read once:
    /// the level is fixed for the process (`--log-level`; SIGHUP reloads nothing), and `logger`
    /// is a constant. Asking the logger at each open and close cost about 200 user instructions
    /// each: a copy of the log handler's existential (callgrind, 2026-12-07).
    let logsConnections: Bool
    /// Set on the reactor that serves metrics.
    let metrics: MetricsEndpoint?
    /// `--exit-line` and `--exit-hold-ms`.
    var exitLine = ExitLinePolicy.standard
    /// `--proxy-protocol` (every echo connection starts with a PROXY v1 or v2 header),
    /// `--proxy-protocol-from` (the only sources that may send it) and
    /// `--max-connections-per-client` (shared by every reactor of the process).
    var admission = AdmissionPolicy()

    init(logger: Logger, metrics: MetricsEndpoint?, exitLine: ExitLinePolicy = .standard,
         admission: AdmissionPolicy = AdmissionPolicy()) {
        self.logger = logger
        self.logsConnections = logger.logLevel <= .info
        self.metrics = metrics
        self.exitLine = exitLine
        self.admission = admission
    }
    /// `--max-connections-per-client`.
    var clientLimit: ClientLimit? { admission.clientLimit }

    func makeState() -> State { State() }

    func onOpen(_ connection: borrowing Connection<Self>, state: inout State) -> Action {
        if let metrics, metrics.serves(connection.acceptedOn) {
            // Reused from a closed metrics connection when one is spare (MetricsEndpoint.opened).
            state.extra = ConnectionExtra.metrics(metrics.opened(connection), peer: connection.peer)
            logger.debug("metrics open \(connection.peer) (\(connection.id))")
            return .continue
        }
        if admission.proxyProtocol {
            if let proxyFrom = admission.proxyFrom, !proxyFrom.contains(connection.peer) {
                logger.warning("connection from \(connection.peer) (\(connection.id)) refused: not in --proxy-protocol-from \(proxyFrom), so its PROXY header is not trusted (reason proxy)")
                return .refuse(ConnectionExtra.proxyReason)
            }
            let client = ConnectionExtra(peer: connection.peer)
            state.extra = client
            client.awaitHeader(connection, logger: logger)
            return .continue
        }
        if logsConnections { logger.info("open \(connection.peer) (\(connection.id))") }
        // No per-client limit: no client key to make (about 450 user instructions per accept).
        if admission.clientLimit == nil { return .continue }
        return admit(ClientKey(connection.peer), name: connection.peer.description, connection, &state)
    }

    // One inlined echo and one test: with more in it (the echo three times over, the cases
    // below), onRead stopped being inlined into the reactor's read loop, and a message cost 533
    // user instructions instead of 216 (callgrind, benchmarks/micro.sh).
    @inline(__always)
    func onRead(_ bytes: UnsafeRawBufferPointer, connection: borrowing Connection<Self>, state: inout State) -> Action {
        if let extra = state.extra, _slowPath(extra.http != nil || extra.pending != nil || extra.quiet) {
            return readSpecial(bytes, extra, connection, &state)
        }
        return EchoProtocol.read(bytes, connection: connection, state: &state.echo, policy: exitLine)
    }

    /// Out of line: a metrics request, a PROXY header still coming, or the first byte after one.
    @inline(never)
    func readSpecial(_ bytes: UnsafeRawBufferPointer, _ extra: ConnectionExtra, _ connection: borrowing Connection<Self>,
                     _ state: inout State) -> Action {
        if let request = extra.http { return metrics!.read(bytes, connection: connection, request: request) }
        if extra.pending == nil {
            // Its first byte after the header: a client, not a health check.
            extra.quiet = false
            connection.countPeerClose(as: nil)
            return EchoProtocol.read(bytes, connection: connection, state: &state.echo, policy: exitLine)
        }
        return readHeader(bytes, extra, connection, &state)
    }

    func onReadEOF(_ connection: borrowing Connection<Self>, state: inout State) -> Action {
        guard let extra = state.extra else {
            return EchoProtocol.readEOF(connection: connection, state: &state.echo)
        }
        if extra.http != nil { return .close(.eof) }
        if let pending = extra.pending {
            let refusal = AdmissionRefusal.endedInHeader(received: pending.reader.received)
            logger.warning("proxy header from \(connection.peer) (\(connection.id)) refused: \(refusal)")
            return .refuse(refusal.closeReason)
        }
        return EchoProtocol.readEOF(connection: connection, state: &state.echo)
    }

    /// `--exit-line off`: an echo connection (past its PROXY header, if any) sends every byte back
    /// unchanged, so a bulk stream is echoed inside the kernel (`--kernel-echo`).
    func echoesUnchanged(_ connection: borrowing Connection<Self>, state: inout State) -> Bool {
        guard !exitLine.enabled else { return false }
        guard let extra = state.extra else { return true }
        return extra.http == nil && extra.pending == nil && !extra.quiet
    }

    func onTimer(_ timer: TimerID, connection: borrowing Connection<Self>, state: inout State) -> Action {
        if let request = state.extra?.http { return metrics!.deadlinePassed(timer, request: request) }
        EchoProtocol.timerFired(timer, connection: connection, state: &state.echo)
        return .continue
    }

    func onClose(_ connection: borrowing Connection<Self>, state: inout State, reason: CloseReason) {
        if let place = state.place {
            clientLimit?.release(place)
            state.place = nil
        }
        guard let extra = state.extra else {
            if logsConnections { logger.info("close \(connection.peer) (\(connection.id)) reason=\(reason)") }
            return
        }
        if let request = extra.http {
            metrics?.closed(reason, request: request, connection: connection)
            logger.debug("metrics close \(connection.peer) (\(connection.id)) reason=\(reason)")
            return
        }
        extra.finish(connection)
        logger.info("close \(extra.name) (\(connection.id)) reason=\(reason)")
    }

    // MARK: PROXY header and per-client limit

    /// Bytes while the PROXY header is pending: the header's, then (in the same segment) the
    /// client's first echo bytes, which go through the exit-line detector as the stream's start.
    private func readHeader(_ bytes: UnsafeRawBufferPointer, _ client: ConnectionExtra,
                            _ connection: borrowing Connection<Self>, _ state: inout State) -> Action {
        let pending = client.pending!
        let arrival = pending.feed(bytes, policy: admission)
        if case .wait = arrival { return .continue }
        guard let header = pending.header else {
            logger.warning("proxy header from \(connection.peer) (\(connection.id)) refused: \(arrival.refusal!)")
            return .refuse(ConnectionExtra.proxyReason)
        }
        client.headerDone(header, connection)
        client.name = pending.name
        if header.source != nil {
            logger.info("open \(client.name) (\(connection.id)) proxy=v\(header.version)")
        } else {
            // v2 LOCAL (a health check) or a header without a client address: the
            // connection is the balancer's own.
            logger.info("open \(client.name) (\(connection.id)) proxy=v\(header.version) \(header.isLocal ? "local" : "unknown client")")
            // HAProxy's health checks send exactly these (v2 LOCAL, v1 UNKNOWN) and then
            // reset: count that close as `check`, not `reset`.
            if pending.isHealthCheck { connection.countPeerClose(as: Self.check) }
        }
        guard case .admitted(let place, let dataStart) = arrival else {
            logger.info("connection from \(client.name) (\(connection.id)) refused: \(arrival.refusal!) (reason limit)")
            return .refuse(.limit)
        }
        state.place = place
        if dataStart == bytes.count && header.source != nil {
            // Nothing after the header yet. HAProxy's v1 checks send `PROXY TCP4` with its own
            // addresses and then reset: until a first byte comes, its end counts as `check`.
            client.quiet = true
            connection.countPeerClose(as: Self.check)
        }
        guard dataStart < bytes.count else { return .continue }
        return EchoProtocol.read(UnsafeRawBufferPointer(rebasing: bytes[dataStart...]), connection: connection,
                                 state: &state.echo, policy: exitLine)
    }

    /// Takes the client's place under the per-client limit, or refuses the connection at once
    /// with reason `limit`: it holds nothing afterwards (no linger, no place, no fd).
    private func admit(_ key: ClientKey?, name: @autoclosure () -> String, _ connection: borrowing Connection<Self>,
                       _ state: inout State) -> Action {
        switch admission.take(key) {
        case .success(let place):
            state.place = place
            return .continue
        case .failure(let refusal):
            logger.info("connection from \(name()) (\(connection.id)) refused: \(refusal) (reason limit)")
            return .refuse(refusal.closeReason)
        }
    }
}

/// What a connection is besides its echo: a metrics connection, or an echo connection behind a
/// PROXY header or under a per-client limit. Allocated at open only in those cases.
final class ConnectionExtra {
    /// Present on a metrics connection (then nothing below is used).
    var http: MetricsRequest?
    /// The close reason of a connection whose PROXY header was malformed, incomplete or late.
    static let proxyReason = AdmissionPolicy.proxyReason
    /// How long a connection may take to send its whole PROXY header.
    static let headerTimeout = AdmissionPolicy.headerTimeout

    /// The address the connection came from: the balancer's, behind a PROXY header.
    let balancer: SocketAddress
    /// The name in log lines: the client's address, with the balancer's beside it once known.
    var name: String
    /// Present only while the PROXY header is being read.
    var pending: ProxyGate?
    /// The timer that gives up on the PROXY header.
    var headerTimer: TimerID?
    /// The header came and no byte after it yet: if the peer ends the connection now, it was a
    /// health check (counted as `check`).
    var quiet = false

    init(peer: SocketAddress) {
        balancer = peer
        name = peer.description
    }

    /// Starts reading the PROXY header: closes the connection with reason `proxy` unless the
    /// whole header is in within ``headerTimeout``.
    func awaitHeader(_ connection: borrowing Connection<ServerHandler>, logger: Logger) {
        let header = ProxyGate(balancer: balancer)
        pending = header
        let id = connection.id
        let context = connection.context
        headerTimer = context.schedule(after: Self.headerTimeout) { [weak self, weak header] in
            guard let self, let header, self.pending === header, context.isLive(id) else { return }
            self.headerTimer = nil
            let refusal = AdmissionRefusal.headerTimeout(received: header.reader.received)
            logger.warning("proxy header from \(self.balancer) (\(id)) refused: \(refusal)")
            context.close(id, reason: refusal.closeReason, discardingOutput: true)
        }
    }

    /// The header is in: stop its timer and free its buffer.
    func headerDone(_ header: ProxyHeader, _ connection: borrowing Connection<ServerHandler>) {
        if let timer = headerTimer { connection.context.cancel(timer) }
        headerTimer = nil
        pending = nil
    }

    /// The connection closed, however it ended: the header's timer goes.
    func finish(_ connection: borrowing Connection<ServerHandler>) {
        if let timer = headerTimer { connection.context.cancel(timer) }
        headerTimer = nil
        pending = nil
    }
}
