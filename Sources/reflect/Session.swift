import Glibc
import Reactor
import ServerKit
import SystemPackage

/// Which end of the client a connection of the reactor is.
enum Role {
    /// The TCP connection to the server.
    case server
    /// stdin, adopted by the reactor (a pipe, a terminal or a socket).
    case stdin
}

/// How the client ended.
enum Outcome {
    /// stdin ended, `exit` was sent and the server closed: exit 0.
    case done
    /// Print `reflect: message` and exit 1.
    case failed(String)
    /// Exit with this status and say nothing more (stdout went away, or a signal).
    case quiet(Int32)
}

/// The state of one client run, shared by the two connections of its reactor.
///
/// Input is forwarded to the server as it comes, but never more than `window` bytes ahead of the
/// echoes, so a large or fast input cannot pile up in memory when the server is slower than the
/// input: beyond the window, an adopted stdin is paused, and an input read directly (a regular
/// file) is simply not read.
final class Session {
    /// Bytes sent and not yet echoed, above which input is not read.
    /// Why 256 KiB: several reads' worth keeps the connection busy, while memory stays small.
    static let window = 256 * 1024
    /// Input is read again once the unechoed bytes fall below this.
    static let resumeBelow = window / 2

    let server: SocketAddress
    let standardInput: StandardInput
    var input: InputSource
    var socket: ConnectionID?
    var stdin: ConnectionID?

    /// The connection to the server is established.
    var connected = false
    /// stdin ended and the closing `exit` line was sent.
    var inputFinished = false
    /// stdin is paused because the window is full.
    var stdinPaused = false
    /// The last byte forwarded: an unterminated last line gets no `exit` after it.
    var lastByte = UInt8(ascii: "\n")
    /// Where in the stream our closing `exit` line starts, once sent. A server that echoes it (any
    /// echo server but reflectd) sends it back there; those five bytes are not printed.
    var exitLineAt: Int?
    /// How long to wait for the server to close after the end of input, with no byte from it
    /// (nil: forever), and the timer that waits.
    var closeWait: Duration?
    var closeTimer: TimerID?
    /// Input bytes sent to the server, and echoed bytes received.
    var sent = 0
    var echoed = 0
    /// Set once: how the run ends.
    var outcome: Outcome?

    /// Direct reads of stdin (see `InputSource.read`) land here.
    let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)

    init(server: SocketAddress, standardInput: StandardInput) {
        self.server = server
        self.standardInput = standardInput
        input = standardInput.source
    }

    deinit { chunk.deallocate() }

    var unechoed: Int { sent - echoed }

    // MARK: input → server

    /// Sends input bytes to the server. Returns false when the window is now full.
    func forward(_ bytes: UnsafeRawBufferPointer, loop: ReactorContext<ClientHandler>) -> Bool {
        guard !bytes.isEmpty, let socket else { return true }
        loop.write(to: socket, bytes)
        sent += bytes.count
        lastByte = bytes[bytes.count - 1]
        return unechoed < Self.window
    }

    /// Input ended: send the exit line (after a complete last line only), shut down our write
    /// side, and wait for the server to close.
    ///
    /// The input's bytes go out as they are: a last line without a newline is not ended, and no
    /// `exit` follows it (it would only extend that line). The half-close is what ends the
    /// session with any echo server: reflectd closes on the exit line or on EOF, a plain RFC 862
    /// server on EOF.
    func finishInput(loop: ReactorContext<ClientHandler>) {
        guard !inputFinished, let socket else { return }
        inputFinished = true
        if lastByte == UInt8(ascii: "\n") {
            exitLineAt = sent
            Self.send("exit\n", to: socket, loop: loop)
        }
        loop.shutdownWrite(socket)
        armCloseWait(loop: loop)
    }

    /// (Re)starts the wait for the server's close: it ends the run if the server sends nothing
    /// and does not close for `closeWait`.
    func armCloseWait(loop: ReactorContext<ClientHandler>) {
        guard inputFinished, outcome == nil, let wait = closeWait else { return }
        if let closeTimer { loop.cancel(closeTimer) }
        closeTimer = loop.schedule(after: wait) { [unowned self] in
            self.finish(.failed("the server did not close the connection within \(wait) after the end of input (--timeout)"), loop: loop)
        }
    }

    private static func send(_ text: StaticString, to socket: ConnectionID, loop: ReactorContext<ClientHandler>) {
        loop.write(to: socket, UnsafeRawBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }

    /// Reads input that epoll cannot watch (a regular file, /dev/null), or sends what is left of
    /// a stdin the reactor closed early, until the window is full or the input ends.
    func pull(loop: ReactorContext<ClientHandler>) {
        guard connected, !inputFinished, outcome == nil else { return }
        switch input {
        case .adopt:
            return
        case .direct(let fd):
            while unechoed < Self.window {
                switch InputSource.read(fd, into: chunk) {
                case .bytes(let n):
                    _ = forward(UnsafeRawBufferPointer(rebasing: chunk[..<n]), loop: loop)
                case .end:
                    finishInput(loop: loop)
                    return
                case .failed(let message):
                    finish(.failed("cannot read stdin: \(message)"), loop: loop)
                    return
                }
            }
        case .leftover(let bytes, var sent):
            while unechoed < Self.window && sent < bytes.count {
                let n = min(chunk.count, bytes.count - sent)
                bytes.withUnsafeBytes { _ = forward(UnsafeRawBufferPointer(rebasing: $0[sent..<(sent + n)]), loop: loop) }
                sent += n
            }
            input = .leftover(bytes, sent: sent)
            if sent == bytes.count { finishInput(loop: loop) }
        }
    }

    // MARK: server → output

    /// Echoed bytes arrived: print them, then let more input go if the window has room.
    func echo(_ bytes: UnsafeRawBufferPointer, loop: ReactorContext<ClientHandler>) -> Bool {
        let from = echoed
        echoed += bytes.count
        var problem: Errno?
        if let exitAt = exitLineAt, echoed > exitAt, from < exitAt + 5 {
            // The echo of our own `exit` line (the server is not reflectd): print around it.
            let cut = max(0, exitAt - from), resume = min(bytes.count, exitAt + 5 - from)
            problem = UnbufferedOutput.write(UnsafeRawBufferPointer(rebasing: bytes[..<cut]), to: 1)
            if problem == nil { problem = UnbufferedOutput.write(UnsafeRawBufferPointer(rebasing: bytes[resume...]), to: 1) }
        } else {
            problem = UnbufferedOutput.write(bytes, to: 1)
        }
        if inputFinished { armCloseWait(loop: loop) }
        if let problem {
            // EPIPE: whoever read our output is gone; say nothing more, like other filters.
            finish(problem == .brokenPipe ? .quiet(1) : .failed("cannot write stdout: \(SyscallError(call: "write", errno: problem).explanation)"), loop: loop)
            return false
        }
        if unechoed < Self.resumeBelow {
            if stdinPaused, let stdin {
                stdinPaused = false
                loop.resumeReading(stdin)
            }
            pull(loop: loop)
        }
        return true
    }

    // MARK: ending

    /// The connection to the server closed for `reason`.
    func serverClosed(_ reason: CloseReason, loop: ReactorContext<ClientHandler>) {
        socket = nil
        if outcome != nil {
            // We closed it ourselves, on the way out.
        } else if !connected {
            finish(.failed("cannot connect to \(server): \(describe(reason))"), loop: loop)
        } else if reason == .shutdown {
            // Our reactor is stopping, and we did not ask it to: a signal.
            finish(.quiet(130), loop: loop)
        } else if !inputFinished {
            let detail = reason == .eof ? "" : " (\(describe(reason)))"
            finish(.failed("connection closed by server\(detail)"), loop: loop)
        } else if reason == .eof {
            finish(.done, loop: loop)
        } else {
            finish(.failed("connection to \(server) lost: \(describe(reason))"), loop: loop)
        }
    }

    /// The adopted stdin closed. If we did not end it, the reactor gave up on it before its end:
    /// EPOLLHUP while it was paused (the writer of a pipe is gone, with bytes still in it), or a
    /// read error. What is left can be read now without waiting, and is sent as the window allows.
    func stdinClosed(_ reason: CloseReason, loop: ReactorContext<ClientHandler>) {
        stdin = nil
        let unfinished = outcome == nil && !inputFinished
        if unfinished, reason != .shutdown, case .adopt(let fd) = input {
            input = .leftover(InputSource.drain(fd, using: chunk), sent: 0)
        }
        standardInput.release()
        guard unfinished else { return }
        if reason == .shutdown {
            // The reactor is stopping and we did not ask it to: a signal.
            finish(.quiet(130), loop: loop)
            return
        }
        stdinPaused = false
        pull(loop: loop)
    }

    /// Records how the run ends and stops the reactor: every connection still open closes.
    func finish(_ result: Outcome, loop: ReactorContext<ClientHandler>) {
        guard outcome == nil else { return }
        outcome = result
        if let stdin { loop.close(stdin, reason: CloseReason("done")) }
        if let socket { loop.close(socket, reason: CloseReason("done")) }
        loop.handle.stop()
    }
}

/// Drives the two connections of a client: the server and stdin.
struct ClientHandler: ConnectionHandler {
    typealias ConnectionState = Role

    let session: Session

    func makeState() -> Role { .server }

    func onOpen(_ connection: borrowing Connection<ClientHandler>, state: inout Role) -> Action {
        if state == .server {
            session.connected = true
            session.pull(loop: connection.context)
        }
        return .continue
    }

    func onRead(_ bytes: UnsafeRawBufferPointer, connection: borrowing Connection<ClientHandler>,
                state: inout Role) -> Action {
        switch state {
        case .server:
            return session.echo(bytes, loop: connection.context) ? .continue : .close(CloseReason("done"))
        case .stdin:
            if session.forward(bytes, loop: connection.context) { return .continue }
            session.stdinPaused = true
            return .pauseReading
        }
    }

    func onReadEOF(_ connection: borrowing Connection<ClientHandler>, state: inout Role) -> Action {
        switch state {
        case .server:
            // The server is done sending; whatever we still have to say, it will not echo.
            return .close(.eof)
        case .stdin:
            session.finishInput(loop: connection.context)
            // Not closed here: after EOF the reactor stops reading it, a pipe's EPOLLHUP still
            // closes it, and everything else closes when the reactor stops.
            return .continue
        }
    }

    func onClose(_ connection: borrowing Connection<ClientHandler>, state: inout Role, reason: CloseReason) {
        switch state {
        case .server: session.serverClosed(reason, loop: connection.context)
        case .stdin: session.stdinClosed(reason, loop: connection.context)
        }
    }
}
