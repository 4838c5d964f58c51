/// `--max-connections-per-client N|auto|off`.
///
/// The default, `auto`, is 90 % of the connections the fd limit leaves room for: one client
/// address can never take every fd, so another one always gets in, while a benchmark from one
/// host (10,000 or more connections from 127.0.0.1 under a 20,000 fd limit) is not refused. It
/// guards the fd limit only; a `--max-connections` below it is the operator's own cap, and
/// with it `auto` sets no per-client limit (set a number for that). Why 90 %: it leaves a tenth of the places to everyone else
/// and costs nothing per message (the place is an inline key, taken and given back once per
/// connection under a lock). For a server on the internet, set a real number (README,
/// "Exposing reflectd to the internet", which holds for any server); `off` removes the limit.
public enum PerClientLimit: Equatable, Sendable, CustomStringConvertible {
    /// A share of what the fd limit leaves room for (``autoPercent``).
    case auto
    /// No per-client limit.
    case off
    /// At most this many connections per client.
    case count(Int)

    /// The share of the capacity `auto` gives one client, in percent.
    public static let autoPercent = 90

    /// Parses `auto`, `off` or a positive number, as the flag takes them; nil for anything else.
    public init?(argument: String) {
        switch argument {
        case "auto": self = .auto
        case "off": self = .off
        default:
            guard let n = Int(argument), n > 0 else { return nil }
            self = .count(n)
        }
    }

    /// The flag's spelling of the value.
    public var description: String {
        switch self {
        case .auto: return "auto"
        case .off: return "off"
        case .count(let n): return "\(n)"
        }
    }

    /// The limit for a process with room for `capacity` connections; nil for none.
    public func maximum(capacity: Int) -> Int? {
        switch self {
        case .off: return nil
        case .count(let n): return n
        case .auto: return max(1, capacity * Self.autoPercent / 100)
        }
    }
}
