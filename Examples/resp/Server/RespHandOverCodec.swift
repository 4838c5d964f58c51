import RESP
import Reactor
import ZeroDropUpgrade

/// resp-server's per-connection state across an upgrade: a flags byte (1: parked, its replies
/// behind, requests kept to go on with once they drain), then the bytes its framer holds (a
/// half-read request, or pipelined requests not run yet; ``RequestFramer/handOverBytes``). The
/// framer's parser starts over on them in the new process. A parked connection goes on there
/// as here, in ``RespHandler/onWritable(_:state:)`` once its replies drain: the reactor's
/// backpressure travels in the connection record. Nothing else travels: the
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
