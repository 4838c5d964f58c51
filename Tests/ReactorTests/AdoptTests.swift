// Adopted fds (pipes, devices): what a client such as `reflect` hands the reactor for stdin.

import Glibc
import Synchronization
import SystemPackage
import XCTest

@testable import Reactor

/// Records what an adopted pipe delivers, and pauses after the first read when asked.
final class PipeRecorder: @unchecked Sendable {
    var bytes: [UInt8] = []
    var eof = false
    var closed: [String] = []
    var id: ConnectionID?
}

struct PipeHandler: ConnectionHandler {
    let recorder: PipeRecorder
    let pauseAfterFirstRead: Bool
    let closeAfterFirstRead: Bool

    func onOpen(_ connection: borrowing Connection<Self>, state: inout Void) -> Action {
        recorder.id = connection.id
        return .continue
    }

    func onRead(_ bytes: UnsafeRawBufferPointer, connection: borrowing Connection<Self>, state: inout Void) -> Action {
        let first = recorder.bytes.isEmpty
        recorder.bytes += bytes
        if first && closeAfterFirstRead { return .close(CloseReason("done")) }
        if first && pauseAfterFirstRead { return .pauseReading }
        return .continue
    }

    func onReadEOF(_ connection: borrowing Connection<Self>, state: inout Void) -> Action {
        recorder.eof = true
        return .close(.eof)
    }

    func onClose(_ connection: borrowing Connection<Self>, state: inout Void, reason: CloseReason) {
        recorder.closed.append(reason.name)
    }
}

final class AdoptTests: XCTestCase {
    private func makePipe() throws -> (read: CInt, write: CInt) {
        var fds: [CInt] = [0, 0]
        XCTAssertEqual(pipe(&fds), 0)
        return (fds[0], fds[1])
    }

    private func write(_ fd: CInt, _ text: String) {
        var text = text
        text.withUTF8 { _ = Glibc.write(fd, $0.baseAddress, $0.count) }
    }

    func testAdoptingADeviceEpollCannotWatchThrowsAndLeavesTheFdToTheCaller() throws {
        let reactor = try Reactor(handler: PipeHandler(recorder: PipeRecorder(), pauseAfterFirstRead: false, closeAfterFirstRead: false))
        let fd = open("/dev/null", O_RDONLY)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        XCTAssertThrowsError(try reactor.adopt(fd: fd)) { error in
            XCTAssertEqual((error as? SyscallError)?.errno, .notPermitted, "\(error)")
        }
        XCTAssertNotEqual(fcntl(fd, F_GETFD), -1, "the fd was closed although adopt threw")
    }

    func testClosingAnAdoptedDuplicateDoesNotSpinOnItsSharedFileDescription() throws {
        let recorder = PipeRecorder()
        let reactor = try Reactor(handler: PipeHandler(recorder: recorder, pauseAfterFirstRead: false, closeAfterFirstRead: true))
        let (r, w) = try makePipe()
        defer { close(r); close(w) }
        // The reactor owns a duplicate; the original read end stays open, so the pipe's file
        // description outlives the reactor's fd, as a dup'd stdin does.
        try reactor.adopt(fd: dup(r))
        write(w, "first")
        reactor.schedule(after: .milliseconds(2_300)) {
            // The connection is closed by now (even if a linger held it for 2 s); more data makes
            // a registration that outlived the fd ready, over and over.
            self.write(w, "more data nobody reads")
        }
        reactor.schedule(after: .milliseconds(2_800)) { reactor.handle.stop() }
        reactor.run()
        XCTAssertEqual(recorder.closed, ["done"])
        XCTAssertLessThan(reactor.statistics.staleEvents, 20, "the loop spun on a registration that outlived its fd")
        XCTAssertLessThan(reactor.statistics.loopIterations, 50)
    }

    func testHangUpWhilePausedStillDeliversWhatWasBuffered() throws {
        let recorder = PipeRecorder()
        let reactor = try Reactor(handler: PipeHandler(recorder: recorder, pauseAfterFirstRead: true, closeAfterFirstRead: false))
        let (r, w) = try makePipe()
        try reactor.adopt(fd: r)
        write(w, "a")
        reactor.schedule(after: .milliseconds(100)) {
            // While the handler has reading paused: more data, then the writer leaves (EPOLLHUP).
            self.write(w, "bcd")
            close(w)
        }
        reactor.schedule(after: .milliseconds(400)) {
            if let id = recorder.id { reactor.context.resumeReading(id) }
        }
        reactor.schedule(after: .milliseconds(900)) { reactor.handle.stop() }
        reactor.run()
        XCTAssertEqual(String(decoding: recorder.bytes, as: UTF8.self), "abcd", "bytes buffered before the hang-up were lost")
        XCTAssertTrue(recorder.eof, "no EOF after resuming")
        XCTAssertEqual(recorder.closed, ["eof"])
    }
}
