import Glibc

/// After a hand-over, stop signals that still reach this (exiting) process go to the process that
/// holds the connections now.
///
/// Until reactor 0 stops, its signalfd reads them and ``Upgrader/stopRequested(_:force:)``
/// forwards them. After that, nothing reads the signalfd, and a SIGTERM sent a few milliseconds
/// after SIGUSR2 (measured: 1 try in 30 at 10 ms on a release build) stayed pending in a process
/// about to exit, so nobody stopped the new one. ``install(forwardingTo:signals:)`` closes that
/// window for good: a handler forwards each signal with kill(2) (async-signal-safe), and unblocking
/// the signals on the main thread delivers the pending ones to it at once; any that come later,
/// until the process is gone, too.
///
/// A signal sent to the old pid after the old process has exited is lost whatever it does (a
/// zombie takes signals and does nothing), and a script's `kill -USR2 $pid; kill -TERM $pid` can
/// come 10 ms after the signal that started an upgrade that took 6 ms: so the old process stays
/// ``grace`` after the hand-over, forwarding, before it exits.
public enum StopForwarding {
    /// Why 500 ms: back-to-back signals from a script or an operator come within milliseconds;
    /// half a second more of an old process that holds nothing costs nobody anything, and a
    /// service manager already follows the new main pid (sd_notify `MAINPID=`).
    public static let grace: Duration = .milliseconds(500)

    /// The new process: read by the handler only, written once before it is installed.
    nonisolated(unsafe) static var target: pid_t = 0
    /// Signals the handler forwarded (written by the handler only, read after ``linger()``).
    nonisolated(unsafe) public private(set) static var forwarded: Int = 0

    /// Forwards `signals` to `child` from now on (call it on the main thread, once).
    public static func install(forwardingTo child: pid_t, signals: [CInt]) {
        target = child
        for signal in signals {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { signal in
                if StopForwarding.target > 0 && kill(StopForwarding.target, signal) == 0 { StopForwarding.forwarded += 1 }
            }
            sigemptyset(&action.sa_mask)
            action.sa_flags = SA_RESTART
            sigaction(signal, &action, nil)
        }
        var set = sigset_t()
        sigemptyset(&set)
        for signal in signals { sigaddset(&set, signal) }
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }

    /// Waits ``grace`` (the handler forwards meanwhile; a signal only cuts one sleep short).
    public static func linger() {
        let end = ContinuousClock.now + grace
        while ContinuousClock.now < end {
            let left = end - ContinuousClock.now
            let (seconds, attoseconds) = left.components
            var request = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
            _ = nanosleep(&request, nil)
        }
    }
}
