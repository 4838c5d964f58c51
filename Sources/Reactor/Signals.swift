import CEpoll
import Glibc

/// Process-wide signal setup.
public enum Signals {
    /// Blocks `signals` in the calling thread, so that they are delivered only through a signalfd.
    /// Call it on the main thread before starting any other thread: new threads inherit the mask.
    public static func block(_ signals: [CInt]) { Syscalls.blockSignals(signals) }

    /// Makes SIGPIPE harmless for the whole process. The reactor itself writes with MSG_NOSIGNAL;
    /// this covers other writers, such as a logger whose pipe reader went away.
    public static func ignoreSIGPIPE() { Syscalls.ignoreSIGPIPE() }

    /// The conventional name of a signal (`SIGTERM`), or `signal N`.
    public static func name(_ signal: CInt) -> String {
        switch signal {
        case SIGHUP: return "SIGHUP"
        case SIGINT: return "SIGINT"
        case SIGQUIT: return "SIGQUIT"
        case SIGUSR1: return "SIGUSR1"
        case SIGUSR2: return "SIGUSR2"
        case SIGALRM: return "SIGALRM"
        case SIGTERM: return "SIGTERM"
        case SIGPIPE: return "SIGPIPE"
        case SIGCHLD: return "SIGCHLD"
        default: return "signal \(signal)"
        }
    }
}

/// Which signals a reactor's signalfd reads, and what each does.
struct SignalRouting {
    /// Signals that stop the reactor (and its targets).
    var stopping: [CInt] = []
    /// Signals given to ``Reactor/onSignals(_:_:)``, with their callbacks.
    var handlers: [CInt: (CInt) -> Void] = [:]
    /// Stop signals received so far: the first stops gracefully, any later one at once.
    var stopsReceived = 0

    var all: [CInt] { stopping + handlers.keys.filter { !stopping.contains($0) }.sorted() }
}

extension Reactor {
    /// Stops this reactor (and `others`) when one of `signals` arrives, such as SIGTERM and SIGINT.
    ///
    /// The signals are blocked in the calling thread and read through a signalfd registered on
    /// this reactor, so they are handled inside the loop like any other event. The first one stops
    /// gracefully; any stop signal read after it (the same one or another of `signals`) cuts the
    /// grace period short. Two signals of the same number sent before the reactor reads the first
    /// are one signal to the kernel (POSIX does not queue standard signals).
    public func stop(onSignals signals: [CInt], alsoStopping others: [ReactorHandle] = []) throws(SyscallError) {
        signalRouting.stopping = signals
        signalTargets = others
        try installSignals()
    }

    /// Calls `body` with the signal's number, on this reactor's thread, whenever one of `signals`
    /// arrives, instead of the signal's default action (which for SIGHUP, SIGUSR1, SIGUSR2 and
    /// SIGALRM is to kill the process).
    ///
    /// Like ``stop(onSignals:alsoStopping:)``, the signals are blocked in the calling thread and
    /// read through this reactor's signalfd: call it on the main thread before starting other
    /// threads, so that they inherit the mask and the signals reach only the signalfd.
    public func onSignals(_ signals: [CInt], _ body: @escaping (CInt) -> Void) throws(SyscallError) {
        for signal in signals { signalRouting.handlers[signal] = body }
        try installSignals()
    }

    private func installSignals() throws(SyscallError) {
        let all = signalRouting.all
        Signals.block(all)
        if signalFD >= 0 {
            try Syscalls.signalfdUpdate(signalFD, all)
        } else {
            let fd = FileDescriptor(try Syscalls.signalfd(all))
            try register(special: fd.raw, kind: .signal)
            signalFD = fd.take()
        }
    }

@usableFromInline
    func signalArrived() {
        while let info = Syscalls.readSignal(signalFD) {
            let signal = CInt(info.ssi_signo)
            if let body = signalRouting.handlers[signal], !signalRouting.stopping.contains(signal) {
                body(signal)
                settleDirty()
                continue
            }
            // Counted here, not read from `isStopping`: a second signal read in the same batch as
            // the first comes before the wake-up that begins the stop.
            signalRouting.stopsReceived += 1
            let force = signalRouting.stopsReceived > 1
            if force {
                configuration.logger.notice("received \(Signals.name(signal)) again: stopping now, without waiting for slow peers")
            } else {
                configuration.logger.notice("received \(Signals.name(signal)): stopping gracefully (up to \(configuration.shutdownGrace) for pending output; another stop signal cuts it short)")
            }
            for other in signalTargets { force ? other.stopNow() : other.stop() }
            if force { handle.stopNow() } else { handle.stop() }
        }
    }
}
