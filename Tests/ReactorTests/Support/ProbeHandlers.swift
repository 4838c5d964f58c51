// Tiny handlers for an in-process reactor (TestSupport's ReactorRunner) that report what they
// see to the test through a lock-protected probe.

import TestSupport
import Foundation
import Reactor
import Synchronization

/// What the test echo handler saw, shared between the reactor thread and the test.
final class Probe: Sendable {
    struct Seen: Sendable {
        var opened = 0
        var closed: [String: Int] = [:]
        /// The largest `pendingOutputBytes` any connection had right after a write.
        var maxPendingOutput = 0
        /// Bytes handed to onRead.
        var bytesRead = 0
        /// `pendingOutputBytes` of each connection when its peer's EOF arrived.
        var pendingAtEOF: [Int] = []
        /// "REASON PEER" of each close, the reason as a log shows it (``CloseReason/description``).
        var closeLog: [String] = []
    }

    private let seen = Mutex(Seen())

    var snapshot: Seen { seen.withLock { $0 } }

    func update(_ body: (inout Seen) -> Void) { seen.withLock { body(&$0) } }

    /// Polls until `condition` holds on what the handler saw, or `timeout` passes.
    func wait(timeout: Double = 5, until condition: (Seen) -> Bool) -> Bool {
        eventually(timeout: timeout) { condition(snapshot) }
    }
}

/// The smallest useful handler: echo every byte, and close with reason `quit` when a segment is
/// exactly `QUIT\n` (tests send it alone, after a round trip, so it arrives as one segment).
struct ProbeEchoHandler: ConnectionHandler {
    static let quit = CloseReason("quit")
    let probe: Probe

    func onOpen(_ connection: borrowing Connection<Self>, state: inout Void) -> Action {
        probe.update { $0.opened += 1 }
        return .continue
    }

    func onRead(_ bytes: UnsafeRawBufferPointer, connection: borrowing Connection<Self>, state: inout Void) -> Action {
        if bytes.elementsEqual("QUIT\n".utf8) { return .close(Self.quit) }
        connection.write(bytes)
        let pending = connection.pendingOutputBytes
        probe.update {
            $0.bytesRead += bytes.count
            if pending > $0.maxPendingOutput { $0.maxPendingOutput = pending }
        }
        return .continue
    }

    func onReadEOF(_ connection: borrowing Connection<Self>, state: inout Void) -> Action {
        let pending = connection.pendingOutputBytes
        probe.update { $0.pendingAtEOF.append(pending) }
        return .close(.eof)
    }

    func onClose(_ connection: borrowing Connection<Self>, state: inout Void, reason: CloseReason) {
        let line = "\(reason) \(connection.peer)"
        probe.update {
            $0.closed[reason.name, default: 0] += 1
            $0.closeLog.append(line)
        }
    }
}

/// Answers the peer's EOF with a reply bigger than the socket buffers hold, then closes
/// gracefully: the reply is certainly still queued in the reactor when the close is requested.
struct ReplyOnEOFHandler: ConnectionHandler {
    let reply: [UInt8]
    let probe: Probe
    /// What it returns once the reply is queued.
    var then: Action = .close(.eof)

    func onReadEOF(_ connection: borrowing Connection<Self>, state: inout Void) -> Action {
        reply.withUnsafeBytes { _ = connection.write($0) }
        let pending = connection.pendingOutputBytes
        probe.update { $0.pendingAtEOF.append(pending) }
        return then
    }

    func onClose(_ connection: borrowing Connection<Self>, state: inout Void, reason: CloseReason) {
        let line = "\(reason) \(connection.peer)"
        probe.update {
            $0.closed[reason.name, default: 0] += 1
            $0.closeLog.append(line)
        }
    }
}
