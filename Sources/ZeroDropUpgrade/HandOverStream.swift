import Glibc

/// The new process's reading of the old one's messages after the hellos: listeners, connections,
/// their output and long states, the process state, the end (which needs at least one listener of role 0, the
/// service). It only parses and checks; it owns no fd (the
/// caller closes ``receivedFDs`` if anything throws) and touches no socket, so the unit tests
/// and the fuzzer drive it with bytes alone.
///
/// Bounded on hostile input: every count is checked against the fds or bytes that came with it,
/// output and process state grow only by the bytes received (never by an announced length), and
/// an announced length past a named budget is refused.
public struct HandOverStream: Sendable {
    /// Why 16 GiB: the most process state (a keyspace) the old process may send. Beyond what a
    /// server of this library holds in memory; a larger announcement is not from a sane process.
    public static let maxProcessState: UInt64 = 1 << 34

    /// The listeners and datagram sockets, in order.
    public private(set) var listeners: [ListenerRecord] = []
    /// The connections, in order, with their output as far as received.
    public private(set) var connections: [ConnectionRecord] = []
    /// The process state as far as received.
    public private(set) var processState: [UInt8] = []
    /// Every fd that came with a message fed so far, whether or not a record names it.
    public private(set) var receivedFDs: [CInt] = []
    /// The `end` message was read and everything it announced checked.
    public private(set) var finished = false

    /// An empty stream.
    public init() {}

    /// Reads one message and the fds that came with it.
    /// - Throws: on a malformed message, a count that does not match its fds, output for an
    ///   unknown connection or past its announced length, a message after `end`, or a message type
    ///   that has no place here.
    public mutating func feed(_ bytes: [UInt8], fds: [CInt]) throws(UpgradeError) {
        receivedFDs += fds
        guard !finished else { throw UpgradeError("a message after the end") }
        var r = try UpgradeReader(bytes)
        switch r.type {
        case .listeners:
            guard fds.count == r.count else { throw UpgradeError("listeners: \(r.count) records but \(fds.count) fds") }
            for fd in fds { listeners.append(try ListenerRecord.decode(&r, fd: fd)) }
            try r.expectEnd()
        case .connections:
            guard fds.count == r.count else { throw UpgradeError("connections: \(r.count) records but \(fds.count) fds") }
            for fd in fds {
                var record = try ConnectionRecord.decode(&r)
                record.fd = fd
                connections.append(record)
            }
            try r.expectEnd()
        case .output:
            guard fds.isEmpty else { throw UpgradeError("output carries fds") }
            guard r.count < connections.count else { throw UpgradeError("output for unknown connection \(r.count)") }
            let chunk = r.remaining
            guard chunk.count <= connections[r.count].pendingLength - connections[r.count].pending.count else {
                throw UpgradeError("more output than announced for connection \(r.count)")
            }
            connections[r.count].pending += chunk
        case .connectionState:
            guard fds.isEmpty else { throw UpgradeError("connection state carries fds") }
            guard r.count < connections.count else { throw UpgradeError("state for unknown connection \(r.count)") }
            guard !connections[r.count].stateInline else { throw UpgradeError("state chunk for connection \(r.count), whose state was inline") }
            let chunk = r.remaining
            guard chunk.count <= connections[r.count].stateLength - connections[r.count].state.count else {
                throw UpgradeError("more state than announced for connection \(r.count)")
            }
            connections[r.count].state += chunk
        case .processState:
            guard fds.isEmpty else { throw UpgradeError("process state carries fds") }
            guard UInt64(processState.count + r.remaining.count) <= Self.maxProcessState else {
                throw UpgradeError("more than \(Self.maxProcessState) bytes of process state")
            }
            processState += r.remaining
        case .end:
            guard fds.isEmpty else { throw UpgradeError("end carries fds") }
            let stateLength = try r.u64()
            try r.expectEnd()
            guard r.count == connections.count else {
                throw UpgradeError("end says \(r.count) connections, received \(connections.count)")
            }
            for (k, c) in connections.enumerated() where c.pending.count != c.pendingLength {
                throw UpgradeError("connection \(k): \(c.pending.count) of \(c.pendingLength) pending bytes received")
            }
            for (k, c) in connections.enumerated() where c.state.count != c.stateLength {
                throw UpgradeError("connection \(k): \(c.state.count) of \(c.stateLength) state bytes received")
            }
            guard stateLength == UInt64(processState.count) else {
                throw UpgradeError("end says \(stateLength) bytes of process state, received \(processState.count)")
            }
            guard listeners.contains(where: { !$0.datagram && $0.role == 0 }) else {
                throw UpgradeError("the old process handed over no listener of its service")
            }
            finished = true
        case .progress:
            // The old process is writing its process state (seconds for a large one): alive.
            guard fds.isEmpty else { throw UpgradeError("progress carries fds") }
            try r.expectEnd()
        case .hello, .ready, .refuse:
            throw UpgradeError("unexpected \(r.type) message")
        }
    }
}
