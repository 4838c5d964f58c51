import ArgumentParser
import Glibc
import Reactor
import ToolSupport

/// The ranges of reflectd's numeric options that are not plain port numbers, and the checks
/// of the command line as a whole (kept out of Reflectd.swift so its option list stays short).
enum OptionLimits {
    static var onlineCPUs: Int { max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))) }
    /// Why 4 × the CPUs: more reactor threads than cores only add context switches; a few
    /// times over still lets a test or a container with a low CPU count try several.
    static var reactors: ClosedRange<Int> { 1...(4 * onlineCPUs) }
    /// listen(2) takes an int, but the kernel caps the queue at net.core.somaxconn (4096 by
    /// default, at most 65535 on older kernels), so larger values would only pretend.
    static let backlog = 0...65535
    /// Options that take one value: given twice, the command line is refused rather than the
    /// last one quietly winning.
    static let singleValue = ["host", "port", "unix", "backlog", "reactors", "max-connections", "idle-timeout",
                              "keepalive", "metrics-port", "log-level", "exit-line", "exit-hold-ms",
                              "unix-mode", "send-timeout", "metrics-host", "udp-port", "udp-rate", "udp-refuse-ports"] + AdmissionOptions.singleValue
}

extension Reflectd {
    /// The checks of the release work (issue 13): ranges, repeated options, and two of reflectd's
    /// own listeners on one port.
    func validateShipping() throws {
        try OptionChecks.rejectRepeated(OptionLimits.singleValue)
        let allowed = OptionLimits.reactors
        guard allowed.contains(reactors.value) else {
            throw ValidationError("--reactors must be between 1 and \(allowed.upperBound) (4 × \(OptionLimits.onlineCPUs) online CPUs) or `auto`, got \(reactors.value)")
        }
        try OptionChecks.range("backlog", backlog, OptionLimits.backlog)
        try validateDatagrams()
        if let metricsPort, metricsPort != 0, metricsPort == port {
            throw ValidationError("--metrics-port \(metricsPort) is also the echo --port: reflectd's echo and metrics listeners need two different ports")
        }
    }
}

/// Which of reflectd's listeners an error is about, so that the message can name it.
enum ListenerKind: Equatable {
    case echo, metrics, unix, udp

    var words: String {
        switch self {
        case .udp: return "the UDP echo socket, --udp-port or --port"
        case .echo: return "the echo listener, --host/--port"
        case .metrics: return "the metrics listener, --metrics-port"
        case .unix: return "the Unix-socket listener, --unix"
        }
    }
}

/// A listen that failed, with the listener it was for.
struct ListenerError: Error, CustomStringConvertible {
    let kind: ListenerKind
    let address: SocketAddress
    let error: SyscallError

    var description: String { Server.explain(error, address: address, listener: kind) }

    /// Runs `listen`, naming `kind` in the error it throws.
    static func naming(_ kind: ListenerKind, _ address: SocketAddress,
                       _ listen: () throws(SyscallError) -> SocketAddress) throws(ListenerError) -> SocketAddress {
        do {
            return try listen()
        } catch {
            throw ListenerError(kind: kind, address: address, error: error)
        }
    }
}
