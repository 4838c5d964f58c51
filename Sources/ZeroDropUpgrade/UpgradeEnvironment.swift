import Glibc

/// The environment variables through which an old process tells the new one it is an upgrade,
/// all named after one prefix of the server's choosing (reflectd: `REFLECTD_UPGRADE`).
public struct UpgradeEnvironment: Sendable {
    /// The prefix of every name below.
    public let prefix: String

    /// Names under `prefix` (letters, digits and `_`).
    public init(prefix: String) { self.prefix = prefix }

    /// The hand-over socket's fd number.
    public var fd: String { prefix + "_FD" }
    /// The old process's stdout, dup'ed: the new one makes it its stdout once it said hello.
    public var stdoutFD: String { prefix + "_STDOUT_FD" }
    /// The old process's group, which the new one joins when it takes over.
    public var processGroup: String { prefix + "_PGID" }
    /// How often, in milliseconds, the new process is to send `progress` while it receives and
    /// restores (``UpgradeWire``): set by an old process that waits on silence
    /// (``Upgrader/silenceTimeout``); without it the new process sends none.
    public var progressInterval: String { prefix + "_PROGRESS_MS" }
    /// For tests: the format version the new process announces (to see the refusal).
    public var announceVersion: String { prefix + "_ANNOUNCE_VERSION" }

    /// The variables the old process sets (and does not pass on from its own environment), and
    /// systemd's `LISTEN_*`, which describe the old process's inherited sockets, not the new one's.
    var owned: [String] { [fd + "=", stdoutFD + "=", processGroup + "=", progressInterval + "=", "LISTEN_"] }

    /// Reads and removes `name` (so no grandchild inherits it).
    func take(_ name: String) -> String? {
        guard let raw = getenv(name) else { return nil }
        let text = String(cString: raw)
        unsetenv(name)
        return text
    }
}
