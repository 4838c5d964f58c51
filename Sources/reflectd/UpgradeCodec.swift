import ClientAdmission
import Echo
import Reactor
import ZeroDropUpgrade

/// reflectd's per-connection state across an upgrade: the exit-line detector
/// (``ExitLineDetector/handOverBytes``, 3 bytes), the name in log lines (u16-length string: the
/// client behind a PROXY header; empty for a plain connection, named after its peer) and the
/// per-client place (u8 0 for none, else a marker, 1 or 2, and the key u64: see
/// ``ClientKey/handOver``).
///
/// Only plain echo connections are handed over (``Upgrader``'s `include`): no metrics request
/// and no PROXY header still pending.
struct EchoHandOverCodec: HandOverCodec {
    func encode(_ state: ServerHandler.State) -> [UInt8] {
        var w = UpgradeWriter()
        w.bytes += state.echo.detector.handOverBytes
        if let extra = state.extra {
            precondition(extra.http == nil && extra.pending == nil, "handing over a connection that is not a plain echo")
            w.blob16(Array(extra.name.utf8))
        } else {
            w.blob16([UInt8]())
        }
        if let key = state.place {
            let (marker, value) = key.handOver
            w.u8(marker)
            w.u64(value)
        } else {
            w.u8(0)
        }
        return w.bytes
    }

    func decode(_ bytes: ArraySlice<UInt8>, peer: SocketAddress) throws(UpgradeError) -> ServerHandler.State {
        var r = UpgradeReader(body: bytes, of: .connections)
        var state = ServerHandler.State()
        let detector = Array(try r.take(3))
        guard let restored = ExitLineDetector(handOverBytes: detector) else { throw UpgradeError("invalid exit-line state \(detector)") }
        state.echo.detector = restored
        let name = String(decoding: try r.blob16(), as: UTF8.self)
        if !name.isEmpty {
            // The socket's peer is the balancer for a PROXY client (ConnectionExtra.balancer).
            let extra = ConnectionExtra(peer: peer)
            extra.name = name
            state.extra = extra
        }
        switch try r.u8() {
        case 0: break
        case let marker:
            let value = try r.u64()
            guard let key = ClientKey(handOverMarker: marker, value: value) else {
                throw UpgradeError("invalid per-client place marker \(marker)")
            }
            state.place = key
        }
        try r.expectEnd()
        return state
    }
}
