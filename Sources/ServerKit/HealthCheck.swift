/// `GET /livez` and `GET /readyz` on the metrics listener (also `HEAD`), for container
/// orchestrators' probes and balancers' health checks.
///
/// - `/livez`: 200 whenever reactor 0's loop answers at all (it serves the metrics listener), so a
///   wedged loop fails it by timing out.
/// - `/readyz`: 200 while this process wants new clients, 503 from the first stop signal on
///   (``Readiness``), while the connections drain.
///
/// Cheap on purpose, since probes come every few seconds from every node: a request line that is
/// one of these is recognised on the bytes already read (no String, no split), and the answers are
/// static strings written straight from the binary's read-only data: nothing is allocated for the
/// request beyond what the metrics connection already holds (its request buffer).
public enum HealthCheck {
    /// `/livez`: 200 whenever reactor 0's loop answers at all.
    case live
    /// `/readyz`: 200 while the process wants new clients, 503 from the first stop signal on.
    case ready

    /// The check a request line (without its line ending) asks for, and whether it is a HEAD;
    /// nil for anything else (then the endpoint's general path answers it). Matches
    /// `GET /livez`, `HEAD /readyz?verbose` and the like in origin form.
    public static func match(requestLine line: ArraySlice<UInt8>) -> (check: HealthCheck, head: Bool)? {
        // Written out rather than looping over arrays of prefixes, which would allocate per call.
        let head: Bool
        let target: ArraySlice<UInt8>
        if starts(line, with: "GET ") {
            head = false
            target = line.dropFirst(4)
        } else if starts(line, with: "HEAD ") {
            head = true
            target = line.dropFirst(5)
        } else {
            return nil
        }
        let check: HealthCheck
        let after: ArraySlice<UInt8>
        if starts(target, with: "/livez") {
            check = .live
            after = target.dropFirst(6)
        } else if starts(target, with: "/readyz") {
            check = .ready
            after = target.dropFirst(7)
        } else {
            return nil
        }
        // The path ends at the end of the line, at " HTTP/1.1", or at a query.
        guard after.isEmpty || after.first == UInt8(ascii: " ") || after.first == UInt8(ascii: "?") else { return nil }
        return (check, head)
    }

    /// The check a request path asks for (the general path: absolute-form targets), or nil.
    public init?(path: String) {
        let bare = path.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        switch bare {
        case "/livez": self = .live
        case "/readyz": self = .ready
        default: return nil
        }
    }

    /// The whole response, status line to body, as static bytes.
    public func response(ready: Bool, head: Bool) -> StaticString {
        switch (self, ready || self == .live, head) {
        case (.live, _, false): return "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\nCache-Control: no-store\r\nConnection: close\r\n\r\nok\n"
        case (.live, _, true): return "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
        case (.ready, true, false): return "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 6\r\nCache-Control: no-store\r\nConnection: close\r\n\r\nready\n"
        case (.ready, true, true): return "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 6\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
        case (.ready, false, false): return "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 9\r\nCache-Control: no-store\r\nConnection: close\r\n\r\nstopping\n"
        case (.ready, false, true): return "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 9\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
        }
    }

    private static func starts(_ bytes: ArraySlice<UInt8>, with prefix: StaticString) -> Bool {
        prefix.withUTF8Buffer { bytes.starts(with: $0) }
    }
}
