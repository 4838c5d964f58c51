// The one error the test support throws when a process, a socket or a reactor does not do
// what a test needed (socket calls with an errno throw SocketFailure).

/// A test could not start or talk to a process, a socket or a reactor.
public struct TestFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
