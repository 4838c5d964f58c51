import Glibc
import Reactor

/// The signals a server of this package answers, and how: the first stop signal stops it
/// gracefully, a second at once (``StopCount``); the notice signals, whose default action would
/// kill the process, get a log line instead (or an upgrade, for SIGUSR2, where the server has one).
/// Reactor 0 reads them all through its signalfd (`Reactor.onSignals(_:_:)`).
public enum SignalPolicy {
    /// Signals that stop the server: the first gracefully, a second at once.
    public static let stopSignals: [CInt] = [SIGTERM, SIGINT, SIGQUIT]
    /// Signals answered with a log line instead of their default action (which kills the process).
    public static let noticeSignals: [CInt] = [SIGHUP, SIGALRM, SIGUSR1, SIGUSR2]

    /// Blocks every signal of the policy. Call it on the main thread before any other thread
    /// starts (a log writer included), so that they all inherit the mask and the signals reach
    /// only reactor 0's signalfd: a thread that did not block SIGQUIT would let the Swift
    /// runtime's backtracer print a crash banner for it.
    public static func block() {
        Signals.block(stopSignals + noticeSignals)
    }
}

/// Stop signals received so far, counted on reactor 0's thread: the first stops gracefully, a
/// second at once.
public final class StopCount {
    private var count = 0

    /// None yet.
    public init() {}

    /// Counts one more and returns how many so far (1 for the first).
    public func next() -> Int {
        count += 1
        return count
    }
}
