import ArgumentParser
import Echo
import Glibc
import Reactor
import ServerKit

/// reflectd's UDP echo (`--udp`): which address each reactor binds, and the safety settings every
/// reactor's ``DatagramEcho`` gets. Off by default: a UDP echo on every interface is a reflector
/// waiting for a forged source, so the operator opts in.
struct DatagramService: Sendable {
    /// Source ports never answered (`--udp-refuse-ports`).
    let refusedPorts: RefusedPorts
    /// Datagrams per second per source, and the burst (`--udp-rate`); 0: no limit.
    let rate: Int

    /// Why 1,000 per second: an interactive or monitoring client (ping-style probes, a
    /// latency check) sends a few to a hundred a second, so it never meets the limit; and a
    /// forged source can aim at most 1,000 echoes a second at its victim per reactor, each no
    /// larger than what the attacker sent itself. A benchmark or a trusted network raises it
    /// (or turns it off with 0).
    static let defaultRate = 1_000
    /// The highest --udp-rate: beyond it a limit would be no limit (one reactor echoes a few
    /// hundred thousand datagrams a second).
    static let maxRate = 10_000_000

    init(options: Reflectd) {
        // Validated in Reflectd.validate(), so parsing cannot fail here.
        refusedPorts = options.udpRefusePorts.flatMap { try? RefusedPorts(parsing: $0) } ?? .default
        rate = options.udpRate
    }

    /// The echo for one reactor's socket on `ownPort`: each reactor has its own rate table.
    func handler(ownPort: Int?) -> DatagramEcho {
        DatagramEcho(policy: DatagramSourcePolicy(refusedPorts: refusedPorts, ownPort: ownPort),
                     limiter: rate > 0 ? SourceRateLimiter(rate: rate) : nil)
    }

    /// The startup line of one UDP socket, after the TCP `listening on` lines.
    static func announcement(_ address: SocketAddress) -> String { "listening on udp \(address)\n" }

    /// The part of the SIGUSR1 line about datagrams.
    static func snapshot(_ total: ReactorStatistics) -> String {
        let drops = DatagramDrop.allCases.map { "\($0)=\(total.datagramDrops[$0])" }.joined(separator: " ")
        return "udp: datagrams_in=\(total.datagramsIn) datagrams_out=\(total.datagramsOut) "
            + "udp_bytes_in=\(total.datagramBytesIn) udp_bytes_out=\(total.datagramBytesOut) dropped: \(drops)"
    }
    /// The UDP echo's series on the metrics endpoint.
    static func series(_ total: ReactorStatistics, _ out: inout MetricsText) {
        out.metric("udp_datagrams_received_total", "counter", "Datagrams received by the UDP echo (--udp).", [("", total.datagramsIn)])
        out.metric("udp_datagrams_sent_total", "counter", "Datagrams echoed (taken by the kernel).", [("", total.datagramsOut)])
        out.metric("udp_bytes_received_total", "counter", "Payload bytes of the datagrams received.", [("", total.datagramBytesIn)])
        out.metric("udp_bytes_sent_total", "counter", "Payload bytes of the datagrams echoed.", [("", total.datagramBytesOut)])
        out.metric("udp_datagrams_dropped_total", "counter", "Datagrams not echoed, by reason.",
                   DatagramDrop.allCases.map { ("{reason=\"\($0)\"}", total.datagramDrops[$0]) })
    }
}

extension Reflectd {
    /// Whether reflectd binds UDP sockets of its own (`--udp`, or `--udp-port`).
    var udpEnabled: Bool { udp || udpPort != nil }

    /// The checks of the UDP options.
    func validateDatagrams() throws {
        if let udpPort, !(0...65_535).contains(udpPort) {
            throw ValidationError("--udp-port must be between 0 and 65535, got \(udpPort)")
        }
        guard (0...DatagramService.maxRate).contains(udpRate) else {
            throw ValidationError("--udp-rate must be between 0 (no limit) and \(DatagramService.maxRate) datagrams per second, got \(udpRate)")
        }
        if let udpRefusePorts {
            do {
                _ = try RefusedPorts(parsing: udpRefusePorts)
            } catch {
                throw ValidationError("--udp-refuse-ports: \(error)")
            }
        }
    }
}

extension Server {
    /// The UDP address every reactor binds: `--host` and `--udp-port`, or the TCP port (the one
    /// the kernel chose, under `--port 0`). Nil when UDP is off, or the sockets come from the
    /// service manager or the old process. With several reactors, a port-0 UDP port is fixed
    /// here and the address is checked free first (SO_REUSEPORT would share it silently).
    func datagramAddress(_ listeners: Listeners, tcp: [SocketAddress], reactors: Int) throws -> SocketAddress? {
        guard options.udpEnabled, case .bind = listeners else { return nil }
        let port = options.udpPort ?? tcp.first(where: { !$0.isUnix })?.port ?? options.port
        var address: SocketAddress
        do {
            address = try SocketAddress(host: options.host, port: port)
        } catch {
            throw StartupFailure(message: "invalid --host: \(error)")
        }
        if reactors > 1 {
            do {
                address = try address.checkDatagramAvailable()
            } catch {
                throw StartupFailure(message: Server.explain(error, address: address, listener: .udp))
            }
        }
        return address
    }

    /// Reactor `index` serves datagrams: binds `address` (shared with SO_REUSEPORT when there are
    /// several reactors), or adopts its own duplicate of every inherited datagram socket. Returns
    /// the UDP addresses served.
    static func serveDatagrams(_ reactor: Reactor<ServerHandler>, _ listeners: Listeners, index: Int,
                               service: DatagramService, address: SocketAddress?, shared: Bool) throws(ListenFailure) -> [SocketAddress] {
        switch listeners {
        case .bind:
            guard let address else { return [] }
            do {
                let bound = try ListenerError.naming(.udp, address) { () throws(SyscallError) in
                    try reactor.bindDatagram(on: address, reusePort: shared, handler: service.handler(ownPort: address.port))
                }
                return [bound]
            } catch {
                throw ListenFailure(message: error.description)
            }
        case .inherited(let fds):
            var served: [SocketAddress] = []
            for fd in fds where SocketActivation.isDatagram(fd) {
                // Every reactor polls the same inherited socket; recvmmsg on a non-blocking socket
                // returns EAGAIN to the reactors that lose the race.
                let own = index == 0 ? fd : fcntl(fd, F_DUPFD_CLOEXEC, 0)
                guard own >= 0 else { throw ListenFailure(message: "cannot duplicate inherited fd \(fd) for reactor \(index)") }
                do {
                    let port = SocketActivation.localPort(fd)
                    served.append(try reactor.adoptDatagram(fd: own, handler: service.handler(ownPort: port)))
                } catch {
                    throw ListenFailure(message: "cannot use inherited datagram fd \(fd): \(error)")
                }
            }
            return served
        case .handedOver(let takeOver, let count):
            var attached: [SocketAddress] = []
            for fd in takeOver.datagramSockets(reactor: index, of: count) {
                do {
                    attached.append(try reactor.adoptDatagram(fd: fd, handler: service.handler(ownPort: SocketActivation.localPort(fd))))
                } catch {
                    throw ListenFailure(message: "cannot use the handed-over UDP socket fd \(fd): \(error)")
                }
            }
            return attached
        }
    }
}
