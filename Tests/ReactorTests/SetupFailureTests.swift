// Setup failures throw and leak nothing: epoll refusing a listener or the reactor's own fds, and
// every fd the reactor owns closed through one path.
//
// An in-process reactor (TestSupport's ReactorRunner) running Support/RecordingHandler.swift on
// 127.0.0.1, with real loopback clients.

import TestSupport
import CEpoll
import Foundation
import Glibc
import SystemPackage
import XCTest
@testable import Reactor

final class SetupFailureTests: XCTestCase {

    func testListenThrowsAndLeaksNothingWhenEpollRefusesTheListener() throws {
        let faults = FaultInterposer()
        let reactor = try Reactor(handler: RecordingHandler(opened: Locked([]), localAddresses: Locked([]), gathered: []),
                                  configuration: ReactorConfiguration(), interposer: faults)
        let fdsBefore = openFDCount()
        faults.plan(.epollCtl, .fail(.noMemory, times: 1))
        XCTAssertThrowsError(try reactor.listen(on: SocketAddress(host: "127.0.0.1", port: 0))) { error in
            XCTAssertEqual((error as? SyscallError)?.errno, .noMemory)
        }
        // At most as many: the test process's other threads (a child's pipe readers, reactors of
        // earlier tests winding down) may close an fd meanwhile; a leak would show as more.
        XCTAssertLessThanOrEqual(openFDCount(), fdsBefore, "the listening socket was closed")
        XCTAssertEqual(reactor.listeningAddresses.count, 0)
        // The slot was given back and the next listen works.
        XCTAssertNoThrow(try reactor.listen(on: SocketAddress(host: "127.0.0.1", port: 0)))
        XCTAssertEqual(reactor.listeningAddresses.count, 1)
    }

    func testReactorInitThrowsWhenEpollRefusesItsOwnFDs() throws {
        let faults = FaultInterposer()
        faults.plan(.epollCtl, .fail(.noSpace, times: 1))
        let fdsBefore = openFDCount()
        XCTAssertThrowsError(try Reactor(handler: RecordingHandler(opened: Locked([]), localAddresses: Locked([]), gathered: []),
                                         configuration: ReactorConfiguration(), interposer: faults)) { error in
            XCTAssertEqual((error as? SyscallError)?.errno, .noSpace)
        }
        // At most as many (see above): a leak of the three would show as more.
        XCTAssertLessThanOrEqual(openFDCount(), fdsBefore, "epoll fd, timerfd and eventfd were closed")
    }

    func testReactorClosesEveryFDItOwnsThroughOnePath() throws {
        let faults = FaultInterposer()
        do {
            let reactor = try Reactor(handler: RecordingHandler(opened: Locked([]), localAddresses: Locked([]), gathered: []),
                                      configuration: ReactorConfiguration(), interposer: faults)
            try reactor.listen(on: SocketAddress(host: "127.0.0.1", port: 0))
        }
        // The listener, the timerfd and the epoll fd go through the seam; the eventfd belongs
        // to the handle, which went away with the reactor.
        XCTAssertEqual(faults.calls(.close), 3)
    }
}

/// Open fds of this process of the kinds a reactor opens (epoll, eventfd, timerfd, sockets),
/// so that whatever else the test process (or a sanitizer runtime) opens and closes meanwhile
/// does not count.
func openFDCount() -> Int {
    guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return -1 }
    return names.filter { name in
        guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(name)") else { return false }
        return target.hasPrefix("socket:") || target.hasPrefix("anon_inode:[eventpoll]")
            || target.hasPrefix("anon_inode:[eventfd]") || target.hasPrefix("anon_inode:[timerfd]")
    }.count
}
