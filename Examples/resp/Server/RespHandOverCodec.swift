import RESP
import Reactor
import ZeroDropUpgrade

/// resp-server's per-connection state across an upgrade: a flags byte (1: parked, its replies
/// behind, requests kept to go on with once they drain), then the bytes its framer holds (a
/// half-read request, or pipelined requests not run yet; ``RequestFramer/handOverBytes``). The
/// framer's parser starts over on them in the new process. Nothing else travels: the
/// `--maxmemory-clients` accounting starts afresh there (``RespUpgrade``).
struct RespHandOverCodec: HandOverCodec {
    func encode(_ state: RespConnection) -> [UInt8] {
        [state.parked ? 1 : 0] + state.framer.handOverBytes
    }

    func decode(_ bytes: ArraySlice<UInt8>, peer: SocketAddress) throws(UpgradeError) -> RespConnection {
        guard let flags = bytes.first, flags <= 1 else {
            throw UpgradeError("invalid resp-server connection state (flags \(bytes.first.map(String.init) ?? "missing"))")
        }
        var state = RespConnection()
        state.parked = flags == 1
        state.framer = RequestFramer(handOverBytes: Array(bytes.dropFirst()))
        return state
    }
}

extension RespHandler {
    /// A parked connection handed over by an upgrade (or taken back after a failed one) goes on
    /// with the requests it kept on this timer (``RespUpgrade/resume``): its backpressure did
    /// not travel, so no drain would call ``onWritable(_:state:)`` for it.
    func onTimer(_ timer: TimerID, connection: borrowing Connection<Self>, state: inout RespConnection) -> Action {
        onWritable(connection, state: &state)
    }
}
