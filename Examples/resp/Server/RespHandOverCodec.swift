import ClientAdmission
import RESP
import Reactor
import ZeroDropUpgrade

/// resp-server's per-connection state across an upgrade: a flags byte (1: parked, its replies
/// behind, requests kept to go on with once they drain; 2: it holds a place under
/// `--max-connections-per-client`, whose key follows as a marker byte and 8 bytes little-endian,
/// ``ClientKey/handOver``), then the bytes its framer holds (a half-read request, or pipelined
/// requests not run yet; ``RequestFramer/handOverBytes``). The framer's parser starts over on them
/// in the new process, which takes the place again (``RespUpgrade/adopt``). A parked connection
/// goes on there as here, in ``RespHandler/onWritable(_:state:)`` once its replies drain: the
/// reactor's backpressure travels in the connection record. Nothing else travels: the
/// `--maxmemory-clients` accounting starts afresh there (``RespUpgrade``). Metrics connections and
/// connections still sending their PROXY header stay behind.
struct RespHandOverCodec: HandOverCodec {
    static let parked: UInt8 = 1
    static let holdsPlace: UInt8 = 2

    func encode(_ state: RespConnection) -> [UInt8] {
        var bytes: [UInt8] = [(state.parked ? Self.parked : 0) | (state.admission.place == nil ? 0 : Self.holdsPlace)]
        if let place = state.admission.place {
            let (marker, value) = place.handOver
            bytes.append(marker)
            withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
        }
        return bytes + state.framer.handOverBytes
    }

    func decode(_ bytes: ArraySlice<UInt8>, peer: SocketAddress) throws(UpgradeError) -> RespConnection {
        guard let flags = bytes.first, flags <= Self.parked | Self.holdsPlace else {
            throw UpgradeError("invalid resp-server connection state (flags \(bytes.first.map(String.init) ?? "missing"))")
        }
        var state = RespConnection()
        state.parked = flags & Self.parked != 0
        var rest = bytes.dropFirst()
        if flags & Self.holdsPlace != 0 {
            guard rest.count >= 9, let key = ClientKey(handOverMarker: rest.first!,
                                                       value: rest.dropFirst().prefix(8).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
            else { throw UpgradeError("invalid resp-server connection state (client key)") }
            state.admission.restore(place: key)
            rest = rest.dropFirst(9)
        }
        state.framer = RequestFramer(handOverBytes: Array(rest))
        return state
    }
}
