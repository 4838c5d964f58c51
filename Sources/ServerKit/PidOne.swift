import Glibc

/// A server as PID 1, as a container's entry point: the in-place upgrade (SIGUSR2) is refused.
///
/// The upgrade hands everything to a new process and ends with this one exiting. When this one is
/// PID 1 of a PID namespace, its exit ends the container (the kernel kills every other process in
/// the namespace, the new server included) and every connection with it; under runit or
/// supervisord it would look like a crash. Keeping the PID across an upgrade (re-executing in place,
/// as HAProxy's master does) is possible but much more machinery than a container needs: there, a
/// new version is a new image and a rolling update (``Readiness`` turns `/readyz` to 503 at SIGTERM,
/// the connections get EOF after the grace, clients reconnect to the new pods).
public enum PidOne {
    /// True when this process is the init of its PID namespace.
    public static var isInit: Bool { getpid() == 1 }

    /// The log line of a refused SIGUSR2.
    public static let upgradeRefusal = "received SIGUSR2: refused, this process is PID 1 (a container's entry point): an upgrade ends with the old process exiting, which would end the container and every connection in it; roll out a new image instead; still serving, nothing changed"
}
