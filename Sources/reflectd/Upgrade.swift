import ClientAdmission
import Echo
import Glibc
import Logging
import Reactor
import ServerKit
import ZeroDropUpgrade

// reflectd's part of the zero-drop upgrade (the protocol is the ZeroDropUpgrade product's): which
// connections go, what its listeners are for, its state codec (UpgradeCodec.swift) and its
// counters as the process state (UpgradeStatistics.swift). See README, "Upgrading without
// dropping connections".

/// SIGUSR2's upgrade, for reflectd's handler.
typealias Upgrader = ZeroDropUpgrade.Upgrader<ServerHandler, EchoHandOverCodec>
/// What a new reflectd took over.
typealias TakeOver = ZeroDropUpgrade.TakeOver<EchoHandOverCodec>
/// A reactor, for the upgrade thread.
typealias ReactorPort = ZeroDropUpgrade.ReactorPort<ServerHandler>
/// Stop signals after a hand-over go to the new process.
typealias StopForwarding = ZeroDropUpgrade.StopForwarding

/// reflectd's choices in the upgrade.
enum ReflectdUpgrade {
    /// `REFLECTD_UPGRADE_FD`, `REFLECTD_UPGRADE_STDOUT_FD`, `REFLECTD_UPGRADE_PGID`,
    /// `REFLECTD_UPGRADE_ANNOUNCE_VERSION`.
    static let environment = UpgradeEnvironment(prefix: "REFLECTD_UPGRADE")
    /// The ``ListenerRecord/role`` of the metrics listener (the only one not under the limit).
    static let metricsRole: UInt8 = 1

    /// What an installed connection gets back (``Reactor/installHandedOver(_:resume:)``): a held
    /// exit-line prefix its bounded hold (its timer did not travel), and, in a new process, its
    /// place under `--max-connections-per-client` (`limit`; the old process never gave it back,
    /// and exits without: the place is given back once, at close, by the new one).
    static func resume(_ policy: ExitLinePolicy, takingPlacesIn limit: ClientLimit?)
        -> (borrowing Connection<ServerHandler>, inout ServerHandler.State) -> Void {
        { connection, state in
            if state.echo.detector.unreleased > 0 && policy.hold > .zero {
                state.echo.holdTimer = connection.schedule(after: policy.hold)
            }
            if let limit, let place = state.place { limit.forceAcquire(place) }
        }
    }
}

/// Connections installed by the other reactor threads of a new process.
typealias InstallCount = ZeroDropUpgrade.InstallCount

extension Server {
    /// The executable to run at an upgrade, resolved once at startup.
    static let executable = Upgrader.resolveExecutable()
}

extension ZeroDropUpgrade.Upgrader where Handler == ServerHandler, Codec == EchoHandOverCodec {
    /// reflectd's upgrader: plain echo connections go (a metrics request, or a connection whose
    /// PROXY header is still pending, stays and is closed when this process stops); the listener
    /// outside the connection limit is the metrics one; the counters (`carried` in from an
    /// earlier upgrade, plus ours) are the process state.
    convenience init(executable: String, arguments: [String], logger: Logger, policy: ExitLinePolicy, carried: ReactorStatistics) {
        var hooks = UpgradeHooks<ServerHandler>()
        hooks.include = { $0.extra.map { $0.http == nil && $0.pending == nil } ?? true }
        hooks.listenerRole = { $0.limited ? 0 : ReflectdUpgrade.metricsRole }
        hooks.processState = { reactor, live in
            // Reactor 0 serves the metrics: its totals include what closed metrics connections counted.
            var total = reactor.handler.metrics?.echoTotals(perReactor: live).total ?? live.reduce(carried, +)
            total.open = 0
            var w = UpgradeWriter()
            total.encode(into: &w)
            return w.bytes
        }
        // The per-client places were never given back here: take nothing again.
        hooks.resume = ReflectdUpgrade.resume(policy, takingPlacesIn: nil)
        // Closed without onClose (epoll refused it): its place goes back here.
        hooks.lost = { reactor, state in
            if let place = state.place { reactor.handler.clientLimit?.release(place) }
        }
        self.init(executable: executable, arguments: arguments, environment: ReflectdUpgrade.environment,
                  codec: EchoHandOverCodec(), hooks: hooks, logger: logger)
    }

    /// SIGUSR2, on reactor 0's thread (the metrics are reactor 0's handler's).
    func signalled(metrics: MetricsEndpoint?) { signalled() }
}

extension ZeroDropUpgrade.TakeOver where Codec == EchoHandOverCodec {
    /// When this process was started by an upgrade (`REFLECTD_UPGRADE_FD`), receives everything
    /// from the old process; nil otherwise. Throws (after telling the old process why, so that
    /// it keeps serving) when the hand-over cannot be taken.
    static func receiveIfUpgrading() throws -> TakeOver? {
        do {
            return try receiveIfUpgrading(environment: ReflectdUpgrade.environment, codec: EchoHandOverCodec(),
                                          timeout: Upgrader.confirmTimeout,
                                          acceptProcessState: { _ = try ReactorStatistics(handOver: $0) })
        } catch {
            throw StartupFailure(message: error.description)
        }
    }

    /// The old process's counters, which ours continue.
    var statistics: ReactorStatistics { (try? ReactorStatistics(handOver: processState)) ?? ReactorStatistics() }

    /// Installs this reactor's share of the connections (on the reactor's thread, before it
    /// runs). Returns how many are open.
    func install(on reactor: Reactor<ServerHandler>, index: Int, of count: Int, policy: ExitLinePolicy, logger: Logger) -> Int {
        install(on: reactor, index: index, of: count, logger: logger,
                resume: ReflectdUpgrade.resume(policy, takingPlacesIn: reactor.handler.clientLimit))
    }

    /// The metrics listener, attached to reactor 0; nil if the old process had none.
    func metricsListener(on reactor: Reactor<ServerHandler>) throws -> SocketAddress? {
        guard let record = listeners.first(where: { $0.metrics }) else { return nil }
        return try reactor.attachHandedOverListener(record.listener)
    }

    /// Tells the service manager and then the old process that this one serves now.
    func confirm(installed: Int, logger: Logger) {
        confirm(installed: installed, logger: logger) { ServiceManager.notifyReady(logger: logger, upgraded: true) }
    }
}

extension ListenerRecord {
    /// reflectd's metrics listener.
    var metrics: Bool { role == ReflectdUpgrade.metricsRole }
}
