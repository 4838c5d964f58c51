// The one error the test support throws when a process, a socket or a reactor does not do
// what a test needed (socket calls with an errno throw SocketFailure).

/// A test could not start or talk to a process, a socket or a reactor.
public struct TestFailure: Error, CustomStringConvertible {
    /// What went wrong.
    public let description: String
    /// A failure saying `description`.
    public init(_ description: String) { self.description = description }
}
