import ArgumentParser

/// `--stop-delay`: how a server of the package stops behind a balancer, the same flag for every
/// server (`@OptionGroup var stop: StopOptions`; the kit's `SignalPolicy.Actions.stopDelay`).
public struct StopOptions: ParsableArguments, Sendable {
    @Option(parsing: .unconditional, help: ArgumentHelp("After the first stop signal, keep serving (listeners open, clients answered) for this many seconds while GET /readyz answers 503, so that a balancer or Kubernetes takes this server out of rotation before its listener closes; then stop gracefully (0 to 300; default 0: stop at once). A second stop signal stops at once.", valueName: "seconds"))
    public var stopDelay: Double = 0

    public init() {}

    public func validate() throws {
        guard (0...300).contains(stopDelay) else {
            throw ValidationError("--stop-delay must be between 0 and 300 seconds, got \(stopDelay)")
        }
    }

    /// --stop-delay as a duration, nil for 0.
    public var delay: Duration? {
        stopDelay > 0 ? .milliseconds(Int64((stopDelay * 1000).rounded())) : nil
    }
}
