import ClientAdmission
import Reactor
import ServerKit

// Who a client is and whether it may stay (--proxy-protocol, --proxy-protocol-from,
// --max-connections-per-client): the ClientAdmission product's gate, fed each connection's first
// bytes. A connection without a PROXY header costs one nil check per read.
extension RespHandler {
    func onOpen(_ connection: borrowing Connection<Self>, state: inout RespConnection) -> Action {
        if let metrics = context.metrics, metrics.serves(connection.acceptedOn) {
            state.metrics = metrics.opened(connection)
            return .continue
        }
        guard context.admission.isActive else { return .continue }
        switch state.admission.open(peer: connection.peer, policy: context.admission) {
        case .serve:
            return .continue
        case .wait:
            // Bound to the connection: onTimer gives up on the header (reason `proxy`).
            state.admission.proxy?.timer = connection.schedule(after: AdmissionPolicy.headerTimeout)
            return .continue
        case .refuse(let refusal):
            return refuse(refusal, connection.peer.description, connection)
        }
    }

    /// Bytes while the PROXY header is pending: the header's, then (in the same segment) the
    /// client's first requests.
    func readHeader(_ bytes: UnsafeRawBufferPointer, connection: borrowing Connection<Self>,
                    state: inout RespConnection) -> Action {
        let step = state.admission.feed(bytes, policy: context.admission)
        if step != .wait, let timer = state.admission.proxy?.timer {
            connection.cancel(timer)
            state.admission.proxy?.timer = nil
        }
        switch step {
        case .wait:
            return .continue
        case .refuse(let refusal):
            return refuse(refusal, state.admission.name(peer: connection.peer), connection)
        case .serve(let from):
            context.logger.info("open \(state.admission.name(peer: connection.peer)) (\(connection.id)) proxy=v\(state.admission.header?.version ?? 0)")
            if state.admission.isHealthCheck { connection.countPeerClose(as: AdmissionPolicy.checkReason) }
            guard from < bytes.count else { return .continue }
            return serve(UnsafeRawBufferPointer(rebasing: bytes[from...]), connection: connection, state: &state)
        }
    }

    func onReadEOF(_ connection: borrowing Connection<Self>, state: inout RespConnection) -> Action {
        if let refusal = state.admission.endOfInput() { return refuse(refusal, connection.peer.description, connection) }
        return .close(.eof)
    }

    /// A metrics request's deadline or the PROXY header's. (A parked connection needs no timer
    /// after an upgrade: its backpressure travels, and ``onWritable(_:state:)`` resumes it.)
    func onTimer(_ timer: TimerID, connection: borrowing Connection<Self>, state: inout RespConnection) -> Action {
        if let request = state.metrics { return context.metrics!.deadlinePassed(timer, request: request) }
        if let proxy = state.admission.proxy, timer == proxy.timer {
            proxy.timer = nil
            guard let refusal = state.admission.timedOut() else { return .continue }
            return refuse(refusal, connection.peer.description, connection)
        }
        return .continue
    }

    /// Closes at once, holding nothing, with the reason logged against the real peer.
    private func refuse(_ refusal: AdmissionRefusal, _ name: String, _ connection: borrowing Connection<Self>) -> Action {
        context.logger.warning("connection from \(name) (\(connection.id)) refused: \(refusal) (reason \(refusal.closeReason))")
        return .refuse(refusal.closeReason)
    }
}
