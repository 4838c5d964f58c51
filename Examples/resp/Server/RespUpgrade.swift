import ClientAdmission
import Glibc
import Logging
import RESP
import Reactor
import ServerKit
import ZeroDropUpgrade

/// resp-server's zero-drop upgrade on SIGUSR2 (the protocol is the ZeroDropUpgrade product's):
/// every connection goes, with its half-read request or its pipelined requests not run yet
/// (``RespHandOverCodec``) and the replies not written yet (the library carries those); the
/// keyspace goes as the process state, with the evicted-clients count. The limits are the
/// flags, which the new process is started with again; `--maxmemory` is checked against the
/// keyspace restored, so a server at its limit still refuses writes after the swap.
///
/// A failed upgrade (the new binary cannot start, exits, refuses, or is silent for 5 s: no
/// progress report while it restores the keyspace, no confirmation) takes every listener and
/// connection back; the keyspace never left.
enum RespUpgrade {
    /// `RESP_SERVER_UPGRADE_FD` and the others (``UpgradeEnvironment``).
    static let environment = UpgradeEnvironment(prefix: "RESP_SERVER_UPGRADE")
    /// The process state's own version (its first byte).
    static let processStateVersion: UInt8 = 1
    /// The role of the `--metrics-port` listener in the hand-over (0 is the service's).
    static let metricsRole: UInt8 = 1
    /// The file started at an upgrade, resolved once at startup.
    static let executable = Upgrader<RespHandler, RespHandOverCodec>.resolveExecutable()

    /// The old side: every connection goes; the keyspace is the process state.
    /// `silenceTimeout` is `--upgrade-silence-timeout` (hidden; 5 s): how long the new process may go
    /// without a progress report or its confirmation (it reports while it restores the keyspace).
    static func upgrader(keyspace: Keyspace, evictions: EvictionCount, logger: Logger,
                         silenceTimeout: Duration = Upgrader<RespHandler, RespHandOverCodec>.confirmTimeout) -> Upgrader<RespHandler, RespHandOverCodec> {
        var hooks = UpgradeHooks<RespHandler>()
        // Their ids die here: what they held under --maxmemory-clients is no one's any more (a
        // connection taken back is counted again at its next event).
        hooks.detached = { reactor in reactor.handler.context.memory.forgetAll() }
        hooks.processState = { _, _ in
            var bytes: [UInt8] = [processStateVersion]
            withUnsafeBytes(of: UInt64(evictions.value).littleEndian) { bytes.append(contentsOf: $0) }
            // Every reactor stopped reading: no command runs meanwhile; the lock is for the record.
            keyspace.lock()
            keyspace.snapshot(into: &bytes)
            keyspace.unlock()
            return bytes
        }
        // Metrics requests and connections still sending their PROXY header stay, closed when this
        // process stops; the metrics listener goes, and the new process serves metrics on it.
        hooks.include = { $0.metrics == nil && !$0.admission.isWaiting }
        hooks.listenerRole = { $0.limited ? 0 : metricsRole }
        // Its place goes back: nobody will close it here.
        hooks.lost = { reactor, state in
            if let place = state.admission.place { reactor.handler.context.admission.release(place) }
        }
        return Upgrader(executable: executable, arguments: Array(CommandLine.arguments.dropFirst()),
                        environment: environment, codec: RespHandOverCodec(), hooks: hooks, logger: logger,
                        silenceTimeout: silenceTimeout)
    }

    /// The new side: when started by an upgrade, receives everything and restores the keyspace
    /// (before any reactor serves); nil otherwise.
    /// `silenceTimeout` (`--upgrade-silence-timeout`) is how long it waits for each message of the
    /// old process (which reports progress while it writes the keyspace).
    static func receiveIfUpgrading(keyspace: Keyspace, evictions: EvictionCount,
                                   silenceTimeout: Duration = .seconds(5)) throws(UpgradeError) -> TakeOver<RespHandOverCodec>? {
        try TakeOver.receiveIfUpgrading(environment: environment, codec: RespHandOverCodec(), timeout: silenceTimeout) { bytes in
            guard bytes.first == processStateVersion, bytes.count >= 9 else {
                throw UpgradeError("resp-server process state: version \(bytes.first.map(String.init) ?? "missing"), this binary reads \(processStateVersion)")
            }
            let evicted = bytes[1..<9].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            keyspace.lock()
            defer { keyspace.unlock() }
            do { try keyspace.restore(bytes[9...]) } catch { throw UpgradeError("resp-server keyspace: \(error)") }
            evictions.add(Int(clamping: evicted))
        }
    }

    /// Reactor `index` of `count` serves what the old reactor of that index had (its listeners
    /// and connections) instead of listening anew; returns its first listener's address.
    static func adopt(_ takeOver: TakeOver<RespHandOverCodec>, on reactor: Reactor<RespHandler>, index: Int, of count: Int,
                      installed: InstallCount, logger: Logger) throws -> SocketAddress? {
        var first: SocketAddress?
        for record in takeOver.listeners(reactor: index, of: count) where record.role != metricsRole {
            let address = try reactor.attachHandedOverListener(record.listener)
            first = first ?? address
        }
        // The old process never gave the places back (it exits without): they are taken here
        // again, past the limit if need be, and given back once, at close.
        let limit = reactor.handler.context.admission.clientLimit
        installed.add(takeOver.install(on: reactor, index: index, of: count, logger: logger) { _, state in
            if let limit, let place = state.admission.place { limit.forceAcquire(place) }
        })
        return first
    }

    /// The `--metrics-port` listener the old process had, for reactor 0; nil if it had none.
    static func metricsListener(_ takeOver: TakeOver<RespHandOverCodec>, on reactor: Reactor<RespHandler>) throws -> SocketAddress? {
        guard let record = takeOver.listeners.first(where: { $0.role == metricsRole }) else { return nil }
        return try reactor.attachHandedOverListener(record.listener)
    }

    /// The new process serves: tells the old one, which then exits.
    static func confirm(_ takeOver: TakeOver<RespHandOverCodec>?, installed: InstallCount, keys: Int, logger: Logger) {
        guard let takeOver else { return }
        takeOver.confirm(installed: installed.value, logger: logger) { ServiceManager.notifyReady(logger: logger, upgraded: true) }
        logger.notice("upgrade: took \(installed.value) connections and \(keys) keys from pid \(takeOver.oldPid) (this is pid \(getpid()))")
    }
}
