import Glibc
import Logging
import Reactor

extension SignalPolicy {
    /// What a server does at each signal of the policy, installed on reactor 0 by
    /// ``install(on:_:logger:)``: the one place reflectd and resp-server take it from.
    public struct Actions {
        /// The server's name, for log lines (`reflectd`).
        public var name: String
        /// The reactors other than reactor 0, stopped with it.
        public var others: [ReactorHandle] = []
        /// Turned not ready at the first stop signal (`/readyz` answers 503); nil without one.
        public var readiness: Readiness?
        /// `--stop-delay`: after the first stop signal, keep serving this long while `/readyz`
        /// answers 503, then stop gracefully; nil stops at once.
        public var stopDelay: Duration?
        /// Whether this process stops at a stop signal (`force` for a second one): false when an
        /// upgrade in flight acts on it instead (ZeroDropUpgrade's `Upgrader.stopRequested`,
        /// `== .stopHere`). Always true for a server without an upgrade.
        public var stopsHere: (_ signal: CInt, _ force: Bool) -> Bool = { _, _ in true }
        /// SIGUSR2: start an upgrade (on reactor 0's thread; the upgrader logs a SIGUSR2 during a
        /// stop, or during an upgrade, as ignored). Nil: a log line instead. Refused as PID 1.
        public var upgrade: (() -> Void)?
        /// SIGUSR1's log line, a statistics snapshot; nil: logged as ignored.
        public var snapshot: (() -> String)?

        /// Nothing but stopping: no readiness, no delay, no upgrade.
        public init(name: String) { self.name = name }
    }

    /// Answers every signal of the policy on `main` (reactor 0, before it runs): the first stop
    /// signal turns `readiness` not ready, tells the service manager `STOPPING=1` and stops every
    /// reactor gracefully (after `stopDelay`, if any); a second stops them at once; during an
    /// upgrade `stopsHere` decides. SIGUSR2 upgrades; SIGHUP, SIGALRM and SIGUSR1 get a log line.
    public static func install<Handler>(on main: Reactor<Handler>, _ actions: Actions, logger: Logger) throws(SyscallError) {
        let stops = StopCount()
        let grace = main.configuration.shutdownGrace
        let others = actions.others
        try main.onSignals(stopSignals) { [unowned main] signal in
            let force = stops.next() > 1
            // /readyz fails at the first stop signal, also when an upgrade defers the stop (Readiness).
            actions.readiness?.stopRequested()
            guard actions.stopsHere(signal, force) else { return }
            let stopReactors = { [unowned main] in
                for other in others { force ? other.stopNow() : other.stop() }
                if force { main.handle.stopNow() } else { main.handle.stop() }
            }
            if force {
                logger.notice("received \(Signals.name(signal)) again: stopping now, without waiting for slow peers")
                stopReactors()
                return
            }
            ServiceManager.notifyStopping(logger: logger)
            if let stopDelay = actions.stopDelay {
                // --stop-delay: keep serving (listeners open) while balancers see /readyz fail.
                logger.notice("received \(Signals.name(signal)): /readyz answers 503 now; still serving for \(stopDelay) (--stop-delay) so that balancers take this server out of rotation, then stopping gracefully (up to \(grace) for pending output; another stop signal stops at once)")
                main.schedule(after: stopDelay) {
                    logger.notice("--stop-delay over: stopping gracefully (up to \(grace) for pending output)")
                    stopReactors()
                }
                return
            }
            logger.notice("received \(Signals.name(signal)): stopping gracefully (up to \(grace) for pending output; another stop signal cuts it short)")
            stopReactors()
        }
        try main.onSignals(noticeSignals) { signal in
            switch signal {
            case SIGUSR2 where actions.upgrade != nil && PidOne.isInit:
                logger.warning("\(PidOne.upgradeRefusal)")
            case SIGUSR2 where actions.upgrade != nil:
                actions.upgrade?()
            case SIGUSR1 where actions.snapshot != nil:
                logger.notice("received SIGUSR1: \(actions.snapshot?() ?? "")")
            case SIGHUP:
                logger.notice("received SIGHUP: ignored (\(actions.name) has no configuration file to reload; restart it to change flags)")
            default:
                logger.notice("received \(Signals.name(signal)): ignored")
            }
        }
    }
}

extension ServiceManager {
    /// `READY=1` once the server serves; after an upgrade `MAINPID=` first, so that the service
    /// manager follows the new process. A failure is a warning: the server serves anyway.
    public static func notifyReady(logger: Logger, upgraded: Bool = false) {
        do {
            try notify(upgraded ? "MAINPID=\(getpid())\nREADY=1" : "READY=1")
        } catch {
            logger.warning("\(upgraded ? "upgrade: " : "")cannot notify the service manager: \(error)")
        }
    }

    /// `STOPPING=1` at the first stop signal that stops this process. A failure is a warning.
    public static func notifyStopping(logger: Logger) {
        do { try notify("STOPPING=1") } catch { logger.warning("cannot notify the service manager: \(error)") }
    }
}
