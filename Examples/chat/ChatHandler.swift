import Reactor

/// The chat protocol as a ``ConnectionHandler``: it cuts each connection's bytes into lines and
/// hands them to the ``Room`` that all connections of the reactor share.
struct ChatHandler: ConnectionHandler {
    typealias ConnectionState = LineAssembler

    let room: Room

    func makeState() -> LineAssembler { LineAssembler() }

    func onOpen(_ connection: borrowing Connection<Self>, state: inout LineAssembler) -> Action {
        room.join(connection.id, peer: connection.peer, on: connection.context)
        return .continue
    }

    func onRead(_ bytes: UnsafeRawBufferPointer, connection: borrowing Connection<Self>,
                state: inout LineAssembler) -> Action {
        // `connection` is borrowed and cannot be captured: the closures use its id and loop.
        let id = connection.id
        let loop = connection.context
        return state.feed(bytes, maxLength: room.limits.maxLineBytes,
                          onLine: { line in room.handle(line: line, from: id, on: loop) },
                          tooLong: { room.lineTooLong(id, on: loop) })
    }

    /// The client will send nothing more, so it leaves the room; it gets what is already queued
    /// for it, then the connection closes. An unfinished last line (no newline before EOF) is
    /// not a message, and is dropped.
    func onReadEOF(_ connection: borrowing Connection<Self>, state: inout LineAssembler) -> Action {
        room.leave(connection.id, reason: .eof, on: connection.context)
        return .close(.eof)
    }

    func onClose(_ connection: borrowing Connection<Self>, state: inout LineAssembler, reason: CloseReason) {
        room.log("closed \(connection.peer) (\(connection.id)) reason=\(reason)")
        // Closes the room started were already announced; this covers resets and shutdown.
        room.leave(connection.id, reason: reason, on: connection.context)
    }
}
