// Closed connections by reason, counted without hashing: one fixed counter per name the
// reactor itself gives (eof, reset, shutdown, timeout, limit, error), a dictionary only for
// names a handler makes up (`exit`, `proxy`...).
//
// Why: a String-keyed dictionary cost a SipHash of the name per close, and the Int32-keyed
// table of closing connections' reasons two more (insert and remove), about 1,100 user
// instructions of a 3,800-instruction connect / echo / close cycle (callgrind, 2026-12-07,
// benchmarks/results/2026-12-07-callgrind-churn-after.md).

/// Which of the reactor's own close reasons a ``CloseReason`` is (its name and detail follow),
/// or `.other`: one byte, kept in a closing connection's slot instead of the reason itself when
/// the reason has no errno.
@usableFromInline
enum CloseReasonCode: UInt8, Sendable {
    /// No reason recorded (in a slot); never a reason's own code.
    case none = 0
    case eof, reset, shutdown, timeout, sendTimeout, closeTimeout, limit, error
    /// A reason's: a handler's, with its own words. A slot's: the reason is in the reactor's
    /// `closeReasons` (a handler's, or one with an errno).
    case other
}

/// The name and detail of a handler's ``CloseReason``. A class, so that copying a reason costs
/// at most one retain, and nothing for the reactor's own reasons (which have none).
@usableFromInline
final class CloseReasonWords: Sendable {
    @usableFromInline let name: String
    @usableFromInline let detail: String?

    @usableFromInline init(name: String, detail: String?) {
        self.name = name
        self.detail = detail
    }
}

/// ``ReactorStatistics/closed``'s storage.
@usableFromInline
struct CloseCounts: Sendable, Equatable {
    @usableFromInline var eof = 0
    @usableFromInline var reset = 0
    @usableFromInline var shutdown = 0
    @usableFromInline var timeout = 0
    @usableFromInline var limit = 0
    @usableFromInline var error = 0
    /// Every other name. Never holds one of the six above, so equal counts compare equal.
    @usableFromInline var others: [String: Int] = [:]

    @inlinable init() {}

    /// From a dictionary by name (what ``ReactorStatistics/closed`` is set to).
    init(_ dictionary: [String: Int]) {
        for (name, count) in dictionary { self[name] = count }
    }

    /// One more close for `reason`'s name.
    @inlinable
    mutating func count(_ reason: CloseReason) {
        switch reason.code {
        case .eof: eof &+= 1
        case .reset: reset &+= 1
        case .shutdown: shutdown &+= 1
        case .timeout, .sendTimeout, .closeTimeout: timeout &+= 1
        case .limit: limit &+= 1
        case .error: error &+= 1
        case .none, .other: countByName(reason.name)
        }
    }

    /// A handler's reason (which may have one of the reactor's names).
    @usableFromInline @inline(never)
    mutating func countByName(_ name: String) {
        self[name] &+= 1
    }

    /// The count for one name (0 if none).
    subscript(name: String) -> Int {
        get {
            switch name {
            case "eof": return eof
            case "reset": return reset
            case "shutdown": return shutdown
            case "timeout": return timeout
            case "limit": return limit
            case "error": return error
            default: return others[name] ?? 0
            }
        }
        set {
            switch name {
            case "eof": eof = newValue
            case "reset": reset = newValue
            case "shutdown": shutdown = newValue
            case "timeout": timeout = newValue
            case "limit": limit = newValue
            case "error": error = newValue
            default: others[name] = newValue
            }
        }
    }

    /// By name, the reactor's own names only when not zero (as if each were counted in a
    /// dictionary at its first close).
    var dictionary: [String: Int] {
        var all = others
        for (name, count) in [("eof", eof), ("reset", reset), ("shutdown", shutdown), ("timeout", timeout),
                              ("limit", limit), ("error", error)] where count != 0 {
            all[name] = count
        }
        return all
    }

    /// The sum, name by name.
    static func + (a: CloseCounts, b: CloseCounts) -> CloseCounts {
        var sum = a
        sum.eof += b.eof
        sum.reset += b.reset
        sum.shutdown += b.shutdown
        sum.timeout += b.timeout
        sum.limit += b.limit
        sum.error += b.error
        sum.others.merge(b.others, uniquingKeysWith: +)
        return sum
    }
}
