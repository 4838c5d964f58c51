/// One scrape's Prometheus text exposition (format 0.0.4), every series named with one prefix.
public struct MetricsText {
    /// Every series' name starts with this (`reflectd_`, `resp_`).
    public let prefix: String
    /// The exposition so far.
    public private(set) var text = ""

    /// An empty exposition.
    public init(prefix: String) { self.prefix = prefix }

    /// One metric: its HELP and TYPE lines, then a sample per `(labels, value)`, where labels is
    /// `""` or `{name="value"}`.
    public mutating func metric(_ name: String, _ type: String, _ help: String, _ samples: [(String, Int)]) {
        text += "# HELP \(prefix)\(name) \(help)\n# TYPE \(prefix)\(name) \(type)\n"
        for (labels, value) in samples { text += "\(prefix)\(name)\(labels) \(value)\n" }
    }
}
