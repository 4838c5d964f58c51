import Logging

/// A swift-log `LogHandler` that formats a line as `StreamLogHandler` does and hands it to a
/// ``LogQueue``, so logging never blocks the calling thread (a reactor) on the log's reader.
///
/// A server sets it up once, on the main thread before the first log line, and flushes the queue
/// before it exits:
///
/// ```swift
/// let log = QueuedLogHandler.bootstrap(label: "myserver", logLevel: .info)  // stderr
/// defer { log.flush(timeout: .seconds(1)) }
/// ```
///
/// Lines below ``logLevel`` cost nothing: `Logger` compares the level before it evaluates the
/// message and metadata autoclosures, so a filtered line allocates nothing and never reaches
/// this handler.
public struct QueuedLogHandler: LogHandler {
    /// The label of the logger this handler serves, written on each line.
    public let label: String
    /// The queue the handler writes its lines into.
    public let queue: LogQueue
    public var logLevel: Logger.Level = .info
    public var metadataProvider: Logger.MetadataProvider?
    public var metadata: Logger.Metadata = [:] {
        didSet { prettyMetadata = Self.prettify(metadata) }
    }
    private var prettyMetadata: String?

    /// Starts a ``LogQueue`` on `fd` (stderr by default) and makes it the process's logging
    /// backend (`LoggingSystem.bootstrap`): every `Logger` made from now on logs through it, at
    /// `logLevel` and above. Call it once, before the first log line; flush the queue at exit.
    public static func bootstrap(label: String, fd: CInt = 2, logLevel: Logger.Level) -> LogQueue {
        let queue = LogQueue(fd: fd, label: label)
        queue.start()
        LoggingSystem.bootstrap { name in QueuedLogHandler(label: name, queue: queue, logLevel: logLevel) }
        return queue
    }

    /// Creates a handler for loggers labelled `label`, writing into `queue`.
    public init(label: String, queue: LogQueue, logLevel: Logger.Level = .info,
                metadataProvider: Logger.MetadataProvider? = nil) {
        self.label = label
        self.queue = queue
        self.logLevel = logLevel
        self.metadataProvider = metadataProvider
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var pretty = prettyMetadata
        let provided = metadataProvider?.get() ?? [:]
        let explicit = event.metadata ?? [:]
        if !provided.isEmpty || !explicit.isEmpty || event.error != nil {
            var merged = metadata
            merged.merge(provided) { $1 }
            merged.merge(explicit) { $1 }
            if let error = event.error {
                merged["error.message"] = "\(error)"
                merged["error.type"] = "\(String(reflecting: type(of: error)))"
            }
            pretty = Self.prettify(merged)
        }
        queue.enqueue("\(LogLineFormat.timestamp()) \(event.level) \(label):\(pretty.map { " \($0)" } ?? "") [\(event.source)] \(event.message)\n")
    }

    private static func prettify(_ metadata: Logger.Metadata) -> String? {
        metadata.isEmpty ? nil : metadata.sorted { $0.key < $1.key }.map { "\($0)=\($1)" }.joined(separator: " ")
    }
}
