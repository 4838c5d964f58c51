import ArgumentParser
import ToolSupport
import Glibc

/// `reflect-bench plot`: draws latency-by-percentile curves of `--json` summaries and `--histogram` files in one SVG
/// chart, the way HdrHistogram's plotter does (the x axis stretches the tail: 90 %, 99 %,
/// 99.9 % … are equally far apart), with a logarithmic latency axis so that a run of tens of
/// microseconds and one with a one-second stall are both readable.
struct Plot: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reflect-bench plot",
        abstract: "Draw the latency percentiles of --json summaries or --histogram files as one SVG chart.",
        discussion: """
            Each file is a line: a run's --json summary (its "percentiles") or a --histogram \
            file (HdrHistogram's percentile format). A line is named by the --label given here \
            (in the order of the files), else by the run's own label (reflect-bench --label, in \
            --json), else by the file name. Example:
              reflect-bench pingpong --label closed --json > closed.json
              reflect-bench pingpong --rate 20000 --label "open 20k" --json > open.json
              reflect-bench plot closed.json open.json -o latency.svg
            """,
        version: PackageVersion.string)

    @Argument(help: ArgumentHelp("Summaries written by --json, or histogram files written by --histogram.", valueName: "file"))
    var files: [String]

    @Option(name: .shortAndLong, help: ArgumentHelp("Write the SVG here instead of stdout.", valueName: "file"))
    var output: String?

    @Option(help: "A name for each curve, in the order of the files (default: the file names).")
    var label: [String] = []

    @Option(help: "The chart's title.")
    var title = "Latency by percentile"

    func validate() throws {
        guard !files.isEmpty else { throw ValidationError("give at least one histogram file") }
        guard label.count <= files.count else { throw ValidationError("\(label.count) labels for \(files.count) files") }
    }

    func run() throws {
        var curves: [Chart.Curve] = []
        for (i, file) in files.enumerated() {
            guard let text = readText(file) else { throw fail("cannot read \(file): errno \(errno)") }
            let isJSON = text.drop(while: { $0.isWhitespace }).first == "{"
            let points = isJSON ? SummaryFile.percentiles(text) : Chart.parse(text)
            guard !points.isEmpty else {
                throw fail("\(file) has no percentile rows (write it with reflect-bench --json or --histogram)")
            }
            let own = isJSON ? SummaryFile.label(text) : nil
            let name = i < label.count ? label[i] : own ?? String(file.split(separator: "/").last ?? Substring(file))
            curves.append(Chart.Curve(name: name, points: points))
        }
        let svg = Chart(title: title, curves: curves).svg
        if let output {
            let fd = open(output, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw fail("cannot write \(output): errno \(errno)") }
            writeAll(svg, to: fd)
            close(fd)
        } else {
            writeAll(svg, to: 1)
        }
    }

    func readText(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { return nil }
            if n == 0 { break }
            bytes.append(contentsOf: chunk[..<n])
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    func fail(_ message: String) -> ExitCode {
        writeAll("reflect-bench plot: error: \(message)\n", to: 2)
        return ExitCode.failure
    }
}

/// An SVG line chart of latency (log scale) against percentile (x = log10 of 1 / (1 − p)).
struct Chart {
    struct Point {
        /// Latency in microseconds, and the fraction of samples at or below it (0 … 1).
        var micros: Double
        var percentile: Double
    }

    struct Curve {
        var name: String
        var points: [Point]
    }

    let title: String
    let curves: [Curve]

    /// The rows of HdrHistogram's percentile format: value, percentile, total count (and
    /// 1/(1−p)); header, blank and `#` lines are skipped.
    static func parse(_ text: String) -> [Point] {
        var points: [Point] = []
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count >= 3, let value = Double(fields[0]), let p = Double(fields[1]),
                  value.isFinite, p >= 0, p <= 1 else { continue }
            points.append(Point(micros: value, percentile: p))
        }
        return points
    }

    // Layout, in SVG user units.
    static let width = 800.0, height = 480.0
    static let left = 80.0, right = 170.0, top = 40.0, bottom = 60.0
    /// The percentile axis ends at 99.999 % (x = 5): the 100 % row sits there.
    static let maxNines = 5.0
    static let colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]

    /// How many nines a percentile has: 0 for 0 %, 1 for 90 %, 2 for 99 % …
    static func nines(_ p: Double) -> Double { p >= 1 ? maxNines : min(maxNines, log10(1 / (1 - p))) }

    var svg: String {
        let all = curves.flatMap { $0.points.map(\.micros) }.filter { $0 > 0 }
        let low = floor(log10(all.min() ?? 1)), high = max(low + 1, ceil(log10(all.max() ?? 10)))
        let plotW = Self.width - Self.left - Self.right, plotH = Self.height - Self.top - Self.bottom
        let x = { (p: Double) in Self.left + Self.nines(p) / Self.maxNines * plotW }
        let y = { (us: Double) in Self.top + plotH - (log10(max(us, pow(10, low))) - low) / (high - low) * plotH }

        var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(Self.width))\" height=\"\(Int(Self.height))\" "
        out += "viewBox=\"0 0 \(Int(Self.width)) \(Int(Self.height))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        out += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        out += "<text x=\"\(n(Self.width / 2))\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">\(escape(title))</text>\n"
        // Grid: one line per decade of latency, one per nine.
        for d in stride(from: low, through: high, by: 1) {
            let yy = y(pow(10, d))
            out += "<line x1=\"\(n(Self.left))\" y1=\"\(n(yy))\" x2=\"\(n(Self.left + plotW))\" y2=\"\(n(yy))\" stroke=\"#ddd\"/>\n"
            out += "<text x=\"\(n(Self.left - 6))\" y=\"\(n(yy + 4))\" text-anchor=\"end\">\(Self.latencyLabel(pow(10, d)))</text>\n"
        }
        let tickLabels = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        for (i, label) in tickLabels.enumerated() {
            let xx = Self.left + Double(i) / Self.maxNines * plotW
            out += "<line x1=\"\(n(xx))\" y1=\"\(n(Self.top))\" x2=\"\(n(xx))\" y2=\"\(n(Self.top + plotH))\" stroke=\"#ddd\"/>\n"
            out += "<text x=\"\(n(xx))\" y=\"\(n(Self.top + plotH + 18))\" text-anchor=\"middle\">\(label)</text>\n"
        }
        out += "<rect x=\"\(n(Self.left))\" y=\"\(n(Self.top))\" width=\"\(n(plotW))\" height=\"\(n(plotH))\" fill=\"none\" stroke=\"#333\"/>\n"
        out += "<text x=\"\(n(Self.left + plotW / 2))\" y=\"\(n(Self.height - 14))\" text-anchor=\"middle\">percentile</text>\n"
        out += "<text transform=\"translate(18 \(n(Self.top + plotH / 2))) rotate(-90)\" text-anchor=\"middle\">latency (log scale)</text>\n"
        for (i, curve) in curves.enumerated() {
            let color = Self.colors[i % Self.colors.count]
            let points = curve.points.map { "\(n(x($0.percentile))),\(n(y($0.micros)))" }.joined(separator: " ")
            out += "<polyline class=\"curve\" data-name=\"\(escape(curve.name))\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" points=\"\(points)\"/>\n"
            let ly = Self.top + 10 + Double(i) * 20
            let lx = Self.left + plotW + 12
            out += "<line x1=\"\(n(lx))\" y1=\"\(n(ly))\" x2=\"\(n(lx + 20))\" y2=\"\(n(ly))\" stroke=\"\(color)\" stroke-width=\"2\"/>\n"
            out += "<text x=\"\(n(lx + 26))\" y=\"\(n(ly + 4))\">\(escape(curve.name))</text>\n"
        }
        return out + "</svg>\n"
    }

    static func latencyLabel(_ us: Double) -> String {
        if us < 1 { return fixed(us, 3) + " µs" }
        if us < 1000 { return "\(Int(us.rounded())) µs" }
        if us < 1_000_000 { return "\(Int((us / 1000).rounded())) ms" }
        return "\(Int((us / 1_000_000).rounded())) s"
    }

    private func n(_ v: Double) -> String { fixed(v, 1) }

    private func escape(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            default: out.append(c)
            }
        }
        return out
    }
}

/// Reading back what `plot` needs from a `--json` summary: its "percentiles" ([percentile %,
/// µs] pairs) and its "label". A small scanner, not a JSON parser: the summary is one object that
/// reflect-bench wrote, and these two keys occur once at its top level.
enum SummaryFile {
    /// The points of "percentiles", or none.
    static func percentiles(_ text: String) -> [Chart.Point] {
        let bytes = Array(text.utf8)
        guard var i = valueStart(of: "percentiles", in: bytes), i < bytes.count, bytes[i] == UInt8(ascii: "[") else { return [] }
        var numbers: [Double] = []
        var points: [Chart.Point] = []
        var depth = 0
        var token: [UInt8] = []
        while i < bytes.count {
            let c = bytes[i]
            switch c {
            case UInt8(ascii: "["): depth += 1
            case UInt8(ascii: "]"), UInt8(ascii: ","):
                if !token.isEmpty, let x = Double(String(decoding: token, as: UTF8.self)) { numbers.append(x) }
                token.removeAll()
                if c == UInt8(ascii: "]") {
                    depth -= 1
                    if depth == 1 && numbers.count == 2 {
                        points.append(Chart.Point(micros: numbers[1], percentile: numbers[0] / 100))
                    }
                    if depth == 1 { numbers.removeAll() }
                    if depth == 0 { return points.filter { $0.micros.isFinite && $0.percentile >= 0 && $0.percentile <= 1 } }
                }
            case UInt8(ascii: " "): break
            default: token.append(c)
            }
            i += 1
        }
        return []
    }

    /// The string value of "label", or nil.
    static func label(_ text: String) -> String? {
        let bytes = Array(text.utf8)
        guard var i = valueStart(of: "label", in: bytes), i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { return nil }
        i += 1
        var out: [UInt8] = []
        while i < bytes.count {
            let c = bytes[i]
            if c == UInt8(ascii: "\"") { return String(decoding: out, as: UTF8.self) }
            if c == UInt8(ascii: "\\"), i + 1 < bytes.count {
                i += 1
                switch bytes[i] {
                case UInt8(ascii: "n"): out.append(10)
                case UInt8(ascii: "t"): out.append(9)
                case UInt8(ascii: "r"): out.append(13)
                case UInt8(ascii: "u") where i + 4 < bytes.count:
                    if let v = UInt32(String(decoding: bytes[(i + 1)...(i + 4)], as: UTF8.self), radix: 16),
                       let scalar = Unicode.Scalar(v) {
                        out.append(contentsOf: Array(String(Character(scalar)).utf8))
                    }
                    i += 4
                default: out.append(bytes[i])  // \" \\ \/
                }
            } else {
                out.append(c)
            }
            i += 1
        }
        return nil
    }

    /// Where the value of `"key":` begins (after any spaces), or nil.
    private static func valueStart(of key: String, in bytes: [UInt8]) -> Int? {
        let needle = Array("\"\(key)\":".utf8)
        guard bytes.count >= needle.count else { return nil }
        var i = 0
        while i + needle.count <= bytes.count {
            if bytes[i] == needle[0] && Array(bytes[i..<(i + needle.count)]) == needle {
                var j = i + needle.count
                while j < bytes.count && bytes[j] == UInt8(ascii: " ") { j += 1 }
                return j
            }
            i += 1
        }
        return nil
    }
}
