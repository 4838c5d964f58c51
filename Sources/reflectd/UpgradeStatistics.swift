import Reactor
import ZeroDropUpgrade

// reflectd's process state across an upgrade: its counters, for the metrics to continue.

extension ReactorStatistics {
    /// Datagrams and bytes in and out, then the drops in ``DatagramDrop`` order.
    var datagramCounters: [Int] {
        get { [datagramsIn, datagramsOut, datagramBytesIn, datagramBytesOut] + DatagramDrop.allCases.map { datagramDrops[$0] } }
        set {
            (datagramsIn, datagramsOut, datagramBytesIn, datagramBytesOut) = (newValue[0], newValue[1], newValue[2], newValue[3])
            for (k, reason) in DatagramDrop.allCases.enumerated() { datagramDrops[reason] = newValue[4 + k] }
        }
    }

    /// The counters that continue across an upgrade (not `open`, which the connections carry):
    /// five u64, the close and accept-error tables (u16 count, then name u8-length string and
    /// u64 each), then the datagram counters (u64 each).
    func encode(into w: inout UpgradeWriter) {
        for v in [accepted, rejectedByLimit, bytesIn, bytesOut, acceptPauses] { w.u64(UInt64(max(0, v))) }
        for table in [closed, acceptErrors] {
            w.u16(UInt16(min(table.count, Int(UInt16.max))))
            for (name, value) in table.sorted(by: { $0.key < $1.key }).prefix(Int(UInt16.max)) {
                w.string8(name)
                w.u64(UInt64(max(0, value)))
            }
        }
        for v in datagramCounters { w.u64(UInt64(max(0, v))) }
    }

    /// The counters from ``encode(into:)``'s bytes (the process state of an upgrade).
    init(handOver bytes: [UInt8]) throws(UpgradeError) {
        self.init()
        var r = UpgradeReader(body: bytes, of: .processState)
        accepted = Int(clamping: try r.u64())
        rejectedByLimit = Int(clamping: try r.u64())
        bytesIn = Int(clamping: try r.u64())
        bytesOut = Int(clamping: try r.u64())
        acceptPauses = Int(clamping: try r.u64())
        for k in 0..<2 {
            var table: [String: Int] = [:]
            for _ in 0..<Int(try r.u16()) {
                let name = try r.string8()
                table[name] = Int(clamping: try r.u64())
            }
            if k == 0 { closed = table } else { acceptErrors = table }
        }
        var values: [Int] = []
        for _ in 0..<(4 + DatagramDrop.allCases.count) { values.append(Int(clamping: try r.u64())) }
        datagramCounters = values
        try r.expectEnd()
    }
}
