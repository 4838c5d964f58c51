// Scraping reflectd's /metrics: an HTTP/1.1 client on a raw socket (bounded, exact about the
// bytes on the wire), URLSession for a second opinion from a real client library, and a parser
// for the Prometheus text format.

import TestSupport
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Glibc
import Synchronization

/// An HTTP response.
struct HTTPResponse {
    let status: Int
    /// Header names lowercased.
    let headers: [String: String]
    let body: String
}

enum MetricsHTTP {
    /// `GET path` over a fresh connection; reads until the server closes (it sends
    /// `Connection: close`), and checks Content-Length against the body.
    static func get(host: String = "127.0.0.1", port: Int, path: String, method: String = "GET", timeout: Double = 3) throws -> HTTPResponse {
        let client = try TestSocket.connect(host: host, port: port, timeout: timeout)
        defer { client.close() }
        let hostHeader = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        try client.send("\(method) \(path) HTTP/1.1\r\nHost: \(hostHeader)\r\nUser-Agent: reflectd-ops-tests\r\nAccept: text/plain\r\n\r\n", timeout: timeout)
        var raw: [UInt8] = []
        let deadline = monotonicSeconds() + timeout
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.recv(client.fd, $0.baseAddress, $0.count, 0) }
            if n > 0 { raw += buffer[..<n]; continue }
            if n == 0 { break }
            if errno == EAGAIN || errno == EINTR {
                guard LoopbackSockets.wait(client.fd, Int16(POLLIN), until: deadline) != 0 else {
                    throw TestFailure("HTTP \(method) \(path): no end of response within \(timeout) s (got \(raw.count) bytes)")
                }
                continue
            }
            if errno == ECONNRESET && !raw.isEmpty { break }
            if errno == ECONNRESET { throw TestFailure("HTTP \(method) \(path): the server reset the connection without a response") }
            throw TestFailure("HTTP \(method) \(path): recv: \(String(cString: strerror(errno)))")
        }
        guard !raw.isEmpty else { throw TestFailure("HTTP \(method) \(path): the server closed the connection without a response") }
        let text = String(decoding: raw, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else { throw TestFailure("HTTP response without header end: \(text.debugDescription)") }
        let head = text[..<split.lowerBound].components(separatedBy: "\r\n")
        let statusParts = head[0].split(separator: " ")
        guard statusParts.count >= 2, statusParts[0].hasPrefix("HTTP/1."), let status = Int(statusParts[1]) else {
            throw TestFailure("bad HTTP status line \(head[0].debugDescription)")
        }
        var headers: [String: String] = [:]
        for line in head.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { throw TestFailure("bad HTTP header line \(line.debugDescription)") }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        let body = String(text[split.upperBound...])
        if method != "HEAD", let length = headers["content-length"].flatMap(Int.init), length != body.utf8.count {
            throw TestFailure("Content-Length \(length) but \(body.utf8.count) body bytes")
        }
        return HTTPResponse(status: status, headers: headers, body: body)
    }

    /// The same GET through URLSession (FoundationNetworking, libcurl underneath).
    static func getWithURLSession(_ url: String, timeout: Double = 5) throws -> (status: Int, body: String) {
        guard let url = URL(string: url) else { throw TestFailure("bad URL \(url)") }
        var request = URLRequest(url: url)
        request.timeoutInterval = timeout
        let result = Mutex<Result<(Int, String), TestFailure>?>(nil)
        let done = DispatchSemaphore(value: 0)
        let configuration = URLSessionConfiguration.ephemeral
        configuration.connectionProxyDictionary = [:]
        let session = URLSession(configuration: configuration)
        defer { session.finishTasksAndInvalidate() }
        let task = session.dataTask(with: request) { data, response, error in
            if let error {
                result.withLock { $0 = .failure(TestFailure("URLSession: \(error)")) }
            } else if let http = response as? HTTPURLResponse {
                result.withLock { $0 = .success((http.statusCode, String(decoding: data ?? Data(), as: UTF8.self))) }
            } else {
                result.withLock { $0 = .failure(TestFailure("URLSession: not an HTTP response")) }
            }
            done.signal()
        }
        task.resume()
        guard done.wait(timeout: .now() + timeout + 1) == .success else {
            task.cancel()
            throw TestFailure("URLSession: no response within \(timeout) s")
        }
        return try result.withLock { try $0!.get() }
    }
}

/// One scrape, parsed. Samples are keyed by name plus labels exactly as exposed,
/// e.g. `reflectd_connections_closed_total{reason="eof"}`.
struct MetricsScrape: CustomStringConvertible {
    let samples: [String: Double]
    let text: String

    /// Parses the Prometheus text format (version 0.0.4), strictly enough to catch a broken line.
    init(text: String) throws {
        self.text = text
        var samples: [String: Double] = [:]
        var typed: Set<String> = []
        for line in text.split(separator: "\n") {
            if line.hasPrefix("# TYPE ") {
                let parts = line.split(separator: " ")
                guard parts.count == 4, ["counter", "gauge", "histogram", "summary", "untyped"].contains(parts[3]) else {
                    throw TestFailure("bad TYPE line \(line.debugDescription)")
                }
                typed.insert(String(parts[2]))
                continue
            }
            if line.hasPrefix("#") { continue }
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                throw TestFailure("bad sample line \(line.debugDescription)")
            }
            let key = String(line[..<space])
            let name = String(key.prefix { $0 != "{" })
            guard name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == ":" }), typed.contains(name) else {
                throw TestFailure("sample \(key) has a bad name or no TYPE line before it")
            }
            guard samples[key] == nil else { throw TestFailure("sample \(key) appears twice") }
            samples[key] = value
        }
        self.samples = samples
    }

    /// A sample's value as an integer (nil if absent).
    subscript(_ key: String) -> Int? { samples[key].map { Int($0) } }

    var description: String { text }

    /// Scrapes `GET /metrics` with the raw HTTP client.
    static func scrape(port: Int, host: String = "127.0.0.1") throws -> MetricsScrape {
        let response = try MetricsHTTP.get(host: host, port: port, path: "/metrics")
        guard response.status == 200 else { throw TestFailure("GET /metrics: status \(response.status): \(response.body)") }
        return try MetricsScrape(text: response.body)
    }

    /// Scrapes until every expected sample has its value or `timeout` passes (reactors other than
    /// the one serving metrics publish their counters about once a second). Returns the last
    /// scrape and the expectations it did not meet.
    static func scrape(port: Int, until expected: [String: Int], timeout: Double = 3.5) throws -> (MetricsScrape, [String]) {
        let deadline = monotonicSeconds() + timeout
        while true {
            let metrics = try scrape(port: port)
            let unmet = expected.sorted { $0.key < $1.key }.compactMap { key, value -> String? in
                metrics[key] == value ? nil : "\(key): expected \(value), got \(metrics[key].map(String.init) ?? "nothing")"
            }
            if unmet.isEmpty || monotonicSeconds() >= deadline { return (metrics, unmet) }
            usleep(100_000)
        }
    }
}
