// A Reactor on its own thread serving UDP (and TCP echo, to show the loop keeps serving it),
// with an optional fault interposer, and a datagram handler that reports what it saw.

import TestSupport
import Foundation
import Glibc
import Synchronization
@testable import Reactor

/// What the datagram handler saw.
final class DatagramProbe: Sendable {
    struct Seen: Sendable {
        var batches = 0
        var datagrams = 0
        var largestBatch = 0
        /// Distinct source ports seen.
        var sourcePorts: Set<Int> = []
        var ipv6Sources = 0
    }

    private let seen = Mutex(Seen())
    var snapshot: Seen { seen.withLock { $0 } }
    func update(_ body: (inout Seen) -> Void) { seen.withLock { body(&$0) } }
}

/// Echoes every datagram, except those from a port in `dropPorts` (counted as refused).
final class ProbeDatagramEcho: DatagramHandler {
    let probe: DatagramProbe
    let dropPorts: Set<Int>

    init(probe: DatagramProbe, dropPorts: Set<Int> = []) {
        self.probe = probe
        self.dropPorts = dropPorts
    }

    func onDatagrams(_ batch: DatagramBatch) {
        var ports: [Int] = []
        var v6 = 0
        for i in 0..<batch.count {
            let source = batch.source(i)
            ports.append(source.port)
            if source.isIPv6 { v6 += 1 }
            if dropPorts.contains(source.port) { batch.drop(i, .refusedPort) } else { batch.echo(i) }
        }
        probe.update { s in
            s.batches += 1
            s.datagrams += batch.count
            s.largestBatch = max(s.largestBatch, batch.count)
            s.sourcePorts.formUnion(ports)
            s.ipv6Sources += v6
        }
    }
}

/// A reactor running on a background thread (the shared ReactorRunner) with one or more datagram
/// sockets and a TCP listener.
final class DatagramServer: Sendable {
    struct Info: Sendable {
        let udpPort: Int
        let tcpPort: Int
        let udpFD: CInt
    }

    let runner: ReactorRunner<Info>
    var udpPort: Int { runner.info.udpPort }
    var tcpPort: Int { runner.info.tcpPort }
    var udpFD: CInt { runner.info.udpFD }
    var handle: ReactorHandle { runner.handle }
    let probe: DatagramProbe

    /// `bind` runs on the reactor's thread and returns the UDP port it bound.
    init(interposer: FaultInterposer? = nil, probe: DatagramProbe = DatagramProbe(), host: String = "127.0.0.1",
         bind: @escaping @Sendable (Reactor<FaultEchoHandler>, DatagramProbe) throws -> SocketAddress) throws {
        runner = try ReactorRunner.start(
            make: { try Reactor(handler: FaultEchoHandler(recorder: FaultRecorder(keepBytes: false), closeByte: nil),
                                configuration: ReactorConfiguration(), interposer: interposer) },
            setUp: { reactor in
                let tcp = try reactor.listen(on: try SocketAddress(host: host, port: 0))
                let udp = try bind(reactor, probe)
                return Info(udpPort: udp.port ?? 0, tcpPort: tcp.port ?? 0, udpFD: reactor.datagramDescriptors.first ?? -1)
            })
        self.probe = probe
    }

    /// A reactor echoing datagrams on `host` port 0.
    convenience init(interposer: FaultInterposer? = nil, host: String = "127.0.0.1", dropPorts: Set<Int> = []) throws {
        try self.init(interposer: interposer, host: host) { reactor, probe in
            try reactor.bindDatagram(on: try SocketAddress(host: host, port: 0),
                                     handler: ProbeDatagramEcho(probe: probe, dropPorts: dropPorts))
        }
    }

    /// Freshly published statistics, polled until `condition` holds or `timeout` passes.
    func statistics(timeout: Double = 5, until condition: (ReactorStatistics) -> Bool = { _ in true }) -> ReactorStatistics {
        runner.statistics(timeout: timeout, until: condition)
    }

    @discardableResult
    func stop(timeout: Double = 10) -> ReactorStatistics? { runner.stop(timeout: timeout) }
}
