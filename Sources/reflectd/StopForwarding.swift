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
enum StopForwarding {
    /// The new process: read by the handler only, written once before it is installed.
    nonisolated(unsafe) static var target: pid_t = 0

    static func install(forwardingTo child: pid_t, signals: [CInt]) {
        target = child
        for signal in signals {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { signal in
                if StopForwarding.target > 0 { kill(StopForwarding.target, signal) }
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
}
