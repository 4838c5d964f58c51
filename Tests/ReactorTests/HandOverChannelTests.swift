// HandOverChannel (Sources/Reactor/HandOver.swift) over a real socketpair: its socketpair,
// fcntl, setsockopt, sendmsg and recvmsg go through Syscall.swift's wrappers.

import Glibc
import XCTest
@testable import Reactor

final class HandOverChannelTests: XCTestCase {
    /// Binary bytes and an fd cross in one message; the fd that arrives is a new number for the
    /// same pipe, close-on-exec.
    func testAMessageCarriesBytesAndAnFDThatStillWorks() throws {
        let (channel, childFD) = try HandOverChannel.pair()
        let other = try HandOverChannel(inherited: childFD)
        try channel.setTimeout(.seconds(2))
        try other.setTimeout(.seconds(2))
        var ends: [CInt] = [-1, -1]
        XCTAssertEqual(pipe(&ends), 0)
        defer { close(ends[0]); close(ends[1]) }

        let payload: [UInt8] = [0, 1, 2, 0xff, 0x80, 0x0d, 0x0a, 0]
        try channel.send(payload, fds: [ends[1]])
        let received = try XCTUnwrap(try other.receive())
        XCTAssertEqual(received.bytes, payload)
        XCTAssertEqual(received.fds.count, 1)
        let carried = received.fds[0]
        defer { close(carried) }
        XCTAssertNotEqual(carried, ends[1], "a new fd in this process")
        XCTAssertEqual(fcntl(carried, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC, "MSG_CMSG_CLOEXEC")

        var byte: UInt8 = 0xa5
        XCTAssertEqual(write(carried, &byte, 1), 1)
        var back: UInt8 = 0
        XCTAssertEqual(read(ends[0], &back, 1), 1)
        XCTAssertEqual(back, 0xa5, "the carried fd writes into the same pipe")
    }

    /// The child's end of a pair is inherited across exec; the parent's is not.
    func testOnlyTheChildsEndOfAPairSurvivesExec() throws {
        let (channel, childFD) = try HandOverChannel.pair()
        defer { close(childFD) }
        XCTAssertEqual(fcntl(channel.fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC)
        XCTAssertEqual(fcntl(childFD, F_GETFD) & FD_CLOEXEC, 0)
    }

    /// A receive with nothing sent fails after the timeout (EAGAIN, typed), and returns nil once
    /// the other end is closed.
    func testAReceiveTimesOutAndEndsWhenThePeerCloses() throws {
        let (channel, childFD) = try HandOverChannel.pair()
        var other: HandOverChannel? = try HandOverChannel(inherited: childFD)
        try channel.setTimeout(.milliseconds(100))
        let start = ContinuousClock.now
        XCTAssertThrowsError(try channel.receive()) { error in
            XCTAssertEqual((error as? SyscallError)?.call, "recvmsg")
            XCTAssertEqual((error as? SyscallError)?.errno, .resourceTemporarilyUnavailable)
        }
        XCTAssertLessThan(ContinuousClock.now - start, .seconds(2))
        other = nil  // closes its end
        XCTAssertNil(other)
        XCTAssertNil(try channel.receive())
    }

    /// A message to a closed peer fails with EPIPE, not SIGPIPE (MSG_NOSIGNAL).
    func testASendToAClosedPeerFailsWithEPIPE() throws {
        let (channel, childFD) = try HandOverChannel.pair()
        close(childFD)
        XCTAssertThrowsError(try channel.send([1, 2, 3])) { error in
            XCTAssertEqual((error as? SyscallError)?.call, "sendmsg")
            XCTAssertEqual((error as? SyscallError)?.errno, .brokenPipe)
        }
    }
}
