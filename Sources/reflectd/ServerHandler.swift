import Echo
import Logging
import Reactor

/// reflectd's handler: echo on the echo listeners, Prometheus metrics over HTTP on the metrics
/// listener. Two protocols on one reactor; the listener that accepted a connection decides.
struct ServerHandler: ConnectionHandler {
    struct State {
        var echo = EchoState()
        /// Present only on metrics connections; echo connections never allocate it.
        var http: MetricsRequest?
    }

    let logger: Logger
    /// Set on the reactor that serves metrics.
    let metrics: MetricsEndpoint?
    /// `--exit-line` and `--exit-hold-ms`.
    let exitLine: ExitLinePolicy

    func makeState() -> State { State() }

    func onOpen(_ connection: borrowing Connection<Self>, state: inout State) -> Action {
        if let metrics, metrics.serves(connection.acceptedOn) {
            state.http = metrics.opened(connection)
            logger.debug("metrics open \(connection.peer) (\(connection.id))")
            return .continue
        }
        logger.info("open \(connection.peer) (\(connection.id))")
        return .continue
    }

    @inline(__always)
    func onRead(_ bytes: UnsafeRawBufferPointer, connection: borrowing Connection<Self>, state: inout State) -> Action {
        if _fastPath(state.http == nil) {
            return EchoProtocol.read(bytes, connection: connection, state: &state.echo, policy: exitLine)
        }
        return metrics!.read(bytes, connection: connection, request: state.http!)
    }

    func onReadEOF(_ connection: borrowing Connection<Self>, state: inout State) -> Action {
        if state.http == nil { return EchoProtocol.readEOF(connection: connection, state: &state.echo) }
        return .close(.eof)
    }

    func onTimer(_ timer: TimerID, connection: borrowing Connection<Self>, state: inout State) -> Action {
        EchoProtocol.timerFired(timer, connection: connection, state: &state.echo)
        return .continue
    }

    func onClose(_ connection: borrowing Connection<Self>, state: inout State, reason: CloseReason) {
        if let request = state.http {
            metrics?.closed(reason, request: request, connection: connection)
            logger.debug("metrics close \(connection.peer) (\(connection.id)) reason=\(reason)")
            return
        }
        logger.info("close \(connection.peer) (\(connection.id)) reason=\(reason)")
    }
}
