import Glibc
import Histogram
import Reactor
import ServerKit

/// The outcome of a run, as printed at the end.
struct Summary {
    let settings: Settings
    /// Seconds actually measured (0 if the run ended before measuring began).
    let seconds: Double
    let counters: Counters
    /// Counts of the whole run, warm-up included: its errors are the ones that decide the exit status.
    let whole: Counters
    let latency: Histogram<UInt64>
    /// Open loop: service times (from the actual send; `latency` counts from the intended one).
    let service: Histogram<UInt64>
    let maxOpen: Int
    let interrupted: Bool
    /// Threads that could not run, and why.
    var threadFailures: [String] = []
    /// How long opening the connections took (the slowest thread's), and failed connects by reason.
    var openingSeconds = 0.0
    var connectFailureReasons: [String: Int] = [:]
    /// CPU seconds of each generator thread (-1: unknown).
    var threadCPUSeconds: [Double] = []

    /// Open loop: messages (churn: cycles) sent per measured second, on time or late.
    var achievedRate: Double { seconds > 0 ? Double(counters.sent) / seconds : 0 }

    var messagesPerSecond: Double { seconds > 0 ? Double(counters.messages) / seconds : 0 }
    var megabytesPerSecond: Double { seconds > 0 ? Double(counters.bytes) / seconds / 1e6 : 0 }
    var connectsPerSecond: Double { seconds > 0 ? Double(counters.connects) / seconds : 0 }
    /// UDP: the share of the measured datagrams that never came back, in percent.
    var lossPercent: Double { counters.sent > 0 ? Double(counters.lost) * 100 / Double(counters.sent) : 0 }

    /// Why a run failed, or nil for a good one.
    var failure: String? {
        if interrupted { return "interrupted" }
        if let first = threadFailures.first { return first }
        if whole.errors > 0 { return "\(whole.errors) error\(whole.errors == 1 ? "" : "s")" }
        if seconds == 0 { return "nothing was measured" }
        // Idle probes a few connections per second; the others must get echoes all the time.
        if counters.messages == 0 && settings.scenario != .idle { return "no message was echoed" }
        if let limit = settings.maxLossPercent, lossPercent > limit {
            return "\(fixed(lossPercent, 2)) % of the datagrams were lost, more than --max-loss \(fixed(limit, 2)) %"
        }
        return nil
    }

    func percentile(_ p: Double) -> UInt64 { latency.totalCount > 0 ? latency.valueAtPercentile(p) : 0 }

    /// The percentiles of a histogram in one line (p50 … max and the sample count).
    static func percentileText(_ h: Histogram<UInt64>) -> String {
        let at = { (p: Double) in latencyText(h.totalCount > 0 ? h.valueAtPercentile(p) : 0) }
        return "p50 \(at(50)), p90 \(at(90)), p99 \(at(99)), p99.9 \(at(99.9)), p99.99 \(at(99.99))"
            + ", max \(latencyText(h.totalCount > 0 ? h.max : 0)) (\(h.totalCount) samples)"
    }

    /// The percentile distribution as HdrHistogram writes it (`--histogram`), as
    /// [percentile in %, latency in µs] pairs: what `reflect-bench plot` draws from `--json`.
    var percentilePairs: [(Double, Double)] {
        guard latency.totalCount > 0 else { return [] }
        var text = ""
        latency.outputPercentileDistribution(to: &text, outputValueUnitScalingRatio: 1000)
        return Chart.parse(text).map { ($0.percentile * 100, $0.micros) }
    }

    /// The human-readable summary.
    var text: String { settings.udp ? datagramText : streamText }

    /// The summary of a UDP run.
    var datagramText: String {
        let s = settings
        var out = "reflect-bench \(s.scenario.rawValue) over UDP against \(s.address): \(s.connections) socket\(s.connections == 1 ? "" : "s")"
        if s.scenario == .pingpong { out += ", depth \(s.depth)" }
        out += ", \(s.size)-byte datagrams (an 8-byte sequence number, then "
        out += s.message != nil ? "the given bytes)" : "\(s.payload.rawValue) payload)"
        if let rate = s.rate { out += ", open loop at \(fixed(rate, 0)) datagrams/s" }
        if s.threads > 1 { out += ", \(s.threads) threads" }
        if !s.sources.isEmpty { out += ", from \(s.sources.count) source address\(s.sources.count == 1 ? "" : "es")" }
        out += "\n"
        if seconds > 0 {
            out += "  measured    \(fixed(seconds, 2)) s after \(fixed(s.warmup, 1)) s of warm-up\n"
        } else {
            out += "  measured    nothing: the run ended before the measurement began\n"
        }
        out += "  datagrams   \(counters.sent) sent (\(fixed(achievedRate, 0))/s), \(counters.messages) echoed (\(fixed(messagesPerSecond, 0))/s), "
        out += "\(counters.lost) lost (\(fixed(lossPercent, 3)) %: not back within \(latencyText(Bench.stallNs(holdMs: s.holdMs))))\n"
        out += "  throughput  \(fixed(megabytesPerSecond, 2)) MB/s echoed (\(counters.bytes) bytes)\n"
        out += "  sockets     \(whole.connects) bound, \(whole.connectFailures) failed" + reasonsText + "\n"
        if s.openLoop {
            out += "  loop        open: datagrams go out at \(fixed(s.rate ?? 0, 0))/s whatever comes back; "
            out += "achieved \(fixed(achievedRate, 1))/s\n"
            out += "  latency     from the intended send: \(Self.percentileText(latency))\n"
            out += "  service     from the actual send:   \(Self.percentileText(service))\n"
            out += "  schedule    \(counters.late) datagrams went out more than \(lateToleranceNs / 1_000_000) ms late, "
            out += "\(counters.unsent) due were never sent (a full send buffer or ring)\n"
        } else {
            out += "  loop        closed: each socket sends when an echo returns or a datagram is counted lost\n"
            out += "  latency     \(Self.percentileText(latency))\n"
            if counters.unsent > 0 { out += "  send buffer \(counters.unsent) sends dropped by a full socket send buffer (tried again)\n" }
        }
        out += "  late echoes \(counters.lateEchoes) arrived after being counted lost\n"
        if whole.ownReceiveDrops > 0 {
            out += "  own drops   \(whole.ownReceiveDrops) echoes dropped by the generator's own full receive queues "
            out += "(in the whole run): part of the loss is the generator's, not the server's\n"
        }
        if threadCPUSeconds.count > 1 || threadCPUSeconds.contains(where: { $0 >= 0 }) {
            out += "  thread CPU  " + threadCPUSeconds.map { $0 >= 0 ? fixed($0, 2) + " s" : "?" }.joined(separator: ", ") + "\n"
        }
        out += "  errors      \(whole.errors) (\(whole.mismatches) mismatches, \(whole.duplicates) duplicates, "
        out += "\(whole.connectFailures) bind failures); loss is not an error"
        out += s.maxLossPercent.map { " unless over --max-loss \(fixed($0, 2)) %" } ?? ""
        out += "\n"
        out += "  result      \(failure.map { "FAILED: \($0)" } ?? "OK")\n"
        return out
    }

    /// The summary of a TCP or Unix-socket run.
    var streamText: String {
        let s = settings
        var out = "reflect-bench \(s.scenario.rawValue) against \(s.address): \(s.connections) connection\(s.connections == 1 ? "" : "s")"
        switch s.scenario {
        case .pingpong, .bulk, .flood: out += ", depth \(s.depth), \(s.size)-byte messages"
        case .idle: out += ", \(s.probes) probes/s, \(s.size)-byte messages"
        case .churn: out += " at a time, \(s.size)-byte messages"
        }
        out += s.message != nil ? ", a given \(s.size)-byte message" : ", \(s.payload.rawValue) payload"
        if let rate = s.rate { out += ", open loop at \(fixed(rate, 0)) msg/s" }
        if let rate = s.connectRate {
            out += s.scenario == .churn ? ", open loop at \(fixed(rate, 0)) connections/s" : ", connections opened at \(fixed(rate, 0))/s"
        }
        if s.threads > 1 { out += ", \(s.threads) threads" }
        if !s.sources.isEmpty { out += ", from \(s.sources.count) source address\(s.sources.count == 1 ? "" : "es")" }
        out += "\n"
        if seconds > 0 {
            out += "  measured    \(fixed(seconds, 2)) s after \(fixed(s.warmup, 1)) s of warm-up\n"
        } else {
            out += "  measured    nothing: the run ended before the measurement began\n"
        }
        out += "  messages    \(counters.messages) (\(fixed(messagesPerSecond, 0))/s)\n"
        out += "  throughput  \(fixed(megabytesPerSecond, 2)) MB/s echoed (\(counters.bytes) bytes)\n"
        switch s.scenario {
        case .churn:
            out += "  connections \(counters.connects) opened (\(fixed(connectsPerSecond, 0))/s), at most \(maxOpen) open at once\n"
        case .idle:
            out += "  connections \(whole.connects) opened, at most \(maxOpen) open at once\n"
        case .pingpong, .bulk, .flood:
            break
        }
        if s.scenario != .churn {
            out += "  opening     \(whole.connects) connection\(whole.connects == 1 ? "" : "s") opened in \(fixed(openingSeconds, 2)) s"
            if let r = s.connectRate { out += " (--connect-rate \(fixed(r, 0))/s)" }
            out += ", \(whole.connectFailures) connect\(whole.connectFailures == 1 ? "" : "s") failed"
            out += reasonsText + "\n"
        } else if whole.connectFailures > 0 {
            out += "  connects    \(whole.connectFailures) failed" + reasonsText + "\n"
        }
        if s.openLoop {
            let what = s.scenario == .churn ? "cycles" : "messages"
            out += "  loop        open: \(what) go out at \(fixed(s.rate ?? s.connectRate ?? 0, 0))/s whatever the server does; "
            out += "achieved \(fixed(achievedRate, 1))/s (\(counters.sent) sent in the measured \(fixed(seconds, 2)) s)\n"
            out += "  latency     from the intended send: \(Self.percentileText(latency))\n"
            out += "  service     from the actual send:   \(Self.percentileText(service))\n"
        } else {
            out += "  loop        closed: each connection sends when an echo returns, so a server stall shows once per "
            out += "connection (coordinated omission); --rate R for an open loop\n"
            out += "  latency     \(Self.percentileText(latency))\n"
        }
        if s.openLoop {
            let what = s.scenario == .churn ? "cycles" : "messages"
            out += "  schedule    \(counters.late) \(what) went out more than \(lateToleranceNs / 1_000_000) ms late "
            out += "(\(counters.lateGenerator) of them the generator's own lag), \(counters.unsent) due were never sent; "
            out += "latency counts from when each was due\n"
        }
        out += "  over hold   \(counters.overHold) message\(counters.overHold == 1 ? "" : "s") took longer than \(s.holdMs) ms (--hold-ms)\n"
        if threadCPUSeconds.count > 1 || threadCPUSeconds.contains(where: { $0 >= 0 }) {
            out += "  thread CPU  " + threadCPUSeconds.map { $0 >= 0 ? fixed($0, 2) + " s" : "?" }.joined(separator: ", ") + "\n"
        }
        out += "  errors      \(whole.errors) (\(whole.mismatches) mismatches, \(whole.connectFailures) connect failures, "
        out += "\(whole.unexpectedCloses) unexpected closes, \(whole.timeouts) timeouts)\n"
        out += "  result      \(failure.map { "FAILED: \($0)" } ?? "OK")\n"
        return out
    }

    /// ": 3 connection refused, 1 …" for the failed connects, or "".
    var reasonsText: String {
        guard !connectFailureReasons.isEmpty else { return "" }
        return ": " + connectFailureReasons.sorted { $0.value > $1.value }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
    }

    /// The summary as one JSON object on one line.
    var json: String {
        let s = settings
        var fields: [(String, String)] = [
            ("label", quote(s.label ?? defaultLabel)),
            ("scenario", quote(s.scenario.rawValue)),
            ("host", quote(s.address.host)),
            ("port", String(s.address.port ?? 0)),
            ("connections", String(s.connections)),
            ("depth", String(s.depth)),
            ("size", String(s.size)),
            ("payload", quote(s.message != nil ? "message" : s.payload.rawValue)),
            ("threads", String(s.threads)),
            ("open_loop", s.openLoop ? "true" : "false"),
            ("loop", quote(s.openLoop ? "open" : "closed")),
            ("rate", number(s.rate ?? 0)),
            ("achieved_rate", number(s.openLoop || s.udp ? achievedRate : messagesPerSecond)),
            ("sent", String(counters.sent)),
            ("connect_rate", number(s.connectRate ?? 0)),
            ("opening_s", number(openingSeconds)),
            ("late", String(counters.late)),
            ("late_generator", String(counters.lateGenerator)),
            ("unsent", String(counters.unsent)),
            ("unix", s.address.isUnix ? "true" : "false"),
            ("hold_ms", String(s.holdMs)),
            ("over_hold", String(counters.overHold)),
            ("source_ips", String(s.sources.count)),
            ("warmup_s", number(s.warmup)),
            ("duration_s", number(seconds)),
            ("messages", String(counters.messages)),
            ("bytes", String(counters.bytes)),
            ("msgs_per_s", number(messagesPerSecond)),
            ("mb_per_s", number(megabytesPerSecond)),
            ("connects", String(counters.connects)),
            ("connects_per_s", number(connectsPerSecond)),
            ("connects_total", String(whole.connects)),
            ("max_open", String(maxOpen)),
            ("udp", s.udp ? "true" : "false"),
        ]
        if s.udp {
            fields.append(("datagrams", object([
                ("sent", String(counters.sent)), ("echoed", String(counters.messages)), ("lost", String(counters.lost)),
                ("loss_percent", number(lossPercent)), ("late_echoes", String(counters.lateEchoes)),
                ("duplicates", String(whole.duplicates)), ("unsent", String(counters.unsent)),
                ("sent_per_s", number(achievedRate)), ("echoed_per_s", number(messagesPerSecond)),
                ("own_receive_drops", String(whole.ownReceiveDrops)), ("loss_timeout_ms", String(Bench.stallNs(holdMs: s.holdMs) / 1_000_000)),
                ("max_loss_percent", s.maxLossPercent.map { number($0) } ?? "null"),
            ])))
        }
        if s.scenario == .idle { fields.append(("probes_per_s", String(s.probes))) }
        let us = { (ns: UInt64) in number(Double(ns) / 1000) }
        let latencyFields = [
            ("samples", String(latency.totalCount)),
            ("p50", us(percentile(50))), ("p90", us(percentile(90))), ("p99", us(percentile(99))),
            ("p99_9", us(percentile(99.9))), ("p99_99", us(percentile(99.99))), ("max", us(latency.totalCount > 0 ? latency.max : 0)),
            ("mean", number(latency.totalCount > 0 ? latency.mean / 1000 : 0)),
        ]
        fields.append(("latency_us", object(latencyFields)))
        if s.openLoop {
            let sp = { (p: Double) in us(service.totalCount > 0 ? service.valueAtPercentile(p) : 0) }
            fields.append(("service_us", object([
                ("samples", String(service.totalCount)),
                ("p50", sp(50)), ("p90", sp(90)), ("p99", sp(99)), ("p99_9", sp(99.9)), ("p99_99", sp(99.99)),
                ("max", us(service.totalCount > 0 ? service.max : 0)),
                ("mean", number(service.totalCount > 0 ? service.mean / 1000 : 0)),
            ])))
        }
        // HdrHistogram's percentile distribution of the latency: [percentile %, µs] pairs.
        fields.append(("percentiles", "[" + percentilePairs.map { "[\(number($0.0)),\(number($0.1))]" }.joined(separator: ",") + "]"))
        fields.append(("thread_cpu_s", "[" + threadCPUSeconds.map { number($0) }.joined(separator: ",") + "]"))
        fields.append(("errors", object([
            ("total", String(whole.errors)), ("mismatches", String(whole.mismatches)),
            ("connect_failures", String(whole.connectFailures)), ("unexpected_closes", String(whole.unexpectedCloses)),
            ("timeouts", String(whole.timeouts)), ("duplicates", String(whole.duplicates)),
            ("connect_failure_reasons", object(connectFailureReasons.sorted { $0.key < $1.key }.map { ($0.key, String($0.value)) })),
        ])))
        fields.append(("interrupted", interrupted ? "true" : "false"))
        fields.append(("ok", failure == nil ? "true" : "false"))
        return object(fields)
    }
}

extension Summary {
    /// The label a run gets without --label: what it did, in a few words.
    var defaultLabel: String {
        let s = settings
        var text = "\(s.scenario.rawValue)\(s.udp ? " udp" : "") \(s.address)"
        if let rate = s.rate { text += " at \(fixed(rate, 0))/s" } else { text += " closed loop" }
        return text
    }
}

// MARK: formatting without Foundation

private func object(_ fields: [(String, String)]) -> String {
    "{" + fields.map { "\(quote($0.0)):\($0.1)" }.joined(separator: ",") + "}"
}

private func quote(_ s: String) -> String {
    var out = "\""
    for c in s.unicodeScalars {
        switch c {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case _ where c.value < 0x20: out += "\\u00" + hex(UInt8(c.value)).dropFirst(2)
        default: out.unicodeScalars.append(c)
        }
    }
    return out + "\""
}

/// A JSON number: 3 decimals, or 6 for small values (an idle run's MB/s).
private func number(_ x: Double) -> String {
    guard x.isFinite else { return "0" }
    return fixed(x, abs(x) < 1 ? 6 : 3)
}

/// `x` with exactly `digits` decimals.
func fixed(_ x: Double, _ digits: Int) -> String {
    guard x.isFinite else { return "-" }
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let scaled = (abs(x) * scale).rounded()
    guard scaled < 9e18 else { return String(x) }
    let n = UInt64(scaled)
    let whole = n / UInt64(scale)
    var text = (x < 0 && n > 0 ? "-" : "") + String(whole)
    if digits > 0 {
        let fraction = String(n % UInt64(scale))
        text += "." + String(repeating: "0", count: digits - fraction.count) + fraction
    }
    return text
}

/// A latency in nanoseconds, in a readable unit.
func latencyText(_ ns: UInt64) -> String {
    if ns < 1_000_000 { return fixed(Double(ns) / 1e3, 1) + " us" }
    if ns < 1_000_000_000 { return fixed(Double(ns) / 1e6, 2) + " ms" }
    return fixed(Double(ns) / 1e9, 2) + " s"
}

/// Right-aligns `s` in `width` columns.
func pad(_ s: String, _ width: Int) -> String {
    s.count >= width ? s : String(repeating: " ", count: width - s.count) + s
}

/// Writes all of `text` to an fd, unbuffered.
func writeAll(_ text: String, to fd: CInt) { UnbufferedOutput.write(text, to: fd) }
