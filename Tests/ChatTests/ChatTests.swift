import Foundation
import Glibc
import XCTest

/// Scenarios against the real `chat` binary over loopback. Every wait has a timeout, so a broken
/// server fails a test instead of hanging it.
final class ChatTests: XCTestCase {
    func testLineGoesToEveryoneButTheSender() throws {
        let server = try ChatServer()
        let a = try ChatClient(server), b = try ChatClient(server), c = try ChatClient(server)
        a.send("hello all\n")
        XCTAssertEqual(b.nextMessage(), .line("\(a.name): hello all"))
        XCTAssertEqual(c.nextMessage(), .line("\(a.name): hello all"))
        // b answers only after it saw a's line, so if a had got its own line back it would come
        // before b's.
        b.send("hi a\n")
        XCTAssertEqual(a.nextMessage(), .line("\(b.name): hi a"))
        XCTAssertEqual(c.nextMessage(), .line("\(b.name): hi a"))
    }

    func testJoinAndLeaveAreAnnounced() throws {
        let server = try ChatServer()
        let a = try ChatClient(server)
        let b = try ChatClient(server)
        XCTAssertTrue(a.waitFor("* \(b.name) joined"))
        b.close()
        XCTAssertTrue(a.waitFor("* \(b.name) left (eof)"))
    }

    func testNickRenamesTheSenderForEveryone() throws {
        let server = try ChatServer()
        let a = try ChatClient(server), b = try ChatClient(server)
        let oldName = a.name
        a.send("/nick alice\n")
        XCTAssertTrue(a.waitFor("* you are now alice"))
        XCTAssertTrue(b.waitFor("* \(oldName) is now alice"))
        a.send("it's me\n")
        XCTAssertEqual(b.nextMessage(), .line("alice: it's me"))

        b.send("/nick ALICE\n")  // names are unique regardless of case
        XCTAssertTrue(b.waitFor("* name ALICE is taken"))
        b.send("/nick no spaces\n")
        XCTAssertEqual(b.waitFor { $0.hasPrefix("* usage: /nick NAME") }?.isEmpty, false)
        b.send("/nick b@d\n")
        XCTAssertEqual(b.waitFor { $0.hasPrefix("* invalid name b@d") }?.isEmpty, false)
        b.send("/who\n")
        XCTAssertTrue(b.waitFor("* 2 here: \([b.name, "alice"].sorted().joined(separator: ", "))"))
    }

    func testSlashSlashSendsALineStartingWithSlash() throws {
        let server = try ChatServer()
        let a = try ChatClient(server), b = try ChatClient(server)
        a.send("//nick is not a command here\n")
        XCTAssertEqual(b.nextMessage(), .line("\(a.name): /nick is not a command here"))
        a.send("/frobnicate\n")
        XCTAssertEqual(a.waitFor { $0.hasPrefix("* unknown command /frobnicate") }?.isEmpty, false)
    }

    func testQuitClosesTheConnectionAndTellsTheOthers() throws {
        let server = try ChatServer()
        let a = try ChatClient(server), b = try ChatClient(server)
        a.send("/nick alice\n/quit\nnever delivered\n")
        XCTAssertTrue(a.waitFor("* bye"))
        XCTAssertEqual(a.next(), .eof)
        XCTAssertTrue(b.waitFor("* alice left (quit)"))
        // Nothing after /quit was delivered: b's next message is its own sync line's echo by c.
        let c = try ChatClient(server)
        c.send("sync\n")
        XCTAssertEqual(b.nextMessage(), .line("\(c.name): sync"))
    }

    func testLineSplitAcrossWritesIsDeliveredOnceComplete() throws {
        let server = try ChatServer()
        let a = try ChatClient(server), b = try ChatClient(server)
        for part in ["hel", "lo, wo", "rld"] {
            a.send(part)
            XCTAssertEqual(b.nextMessage(timeout: 0.15), .timeout, "nothing before the newline")
        }
        a.send("\r\n")  // CRLF counts as a newline
        XCTAssertEqual(b.nextMessage(), .line("\(a.name): hello, world"))
        // Exactly once: the next message b sees is the one after it.
        a.send("next\n")
        XCTAssertEqual(b.nextMessage(), .line("\(a.name): next"))
    }

    func testManyLinesInOneWriteAreDeliveredInOrder() throws {
        let server = try ChatServer()
        let a = try ChatClient(server), b = try ChatClient(server)
        a.send((1...500).map { "line \($0)\n" }.joined())
        for i in 1...500 {
            guard b.nextMessage() == .line("\(a.name): line \(i)") else {
                return XCTFail("line \(i) missing or out of order")
            }
        }
    }

    func testLineAtTheLimitIsDeliveredAndLongerLineClosesTheConnection() throws {
        let server = try ChatServer(["--max-line", "4096"])
        let a = try ChatClient(server), b = try ChatClient(server)
        let longest = String(repeating: "x", count: 4096)
        // Sent in pieces, so the line is assembled across reads.
        a.send(String(longest.prefix(1000)))
        a.send(String(longest.dropFirst(1000)) + "\n")
        XCTAssertEqual(b.nextMessage(), .line("\(a.name): \(longest)"))

        a.send(String(repeating: "y", count: 5000))  // no newline: the server must not wait for it
        XCTAssertTrue(a.waitFor("* line too long (limit 4096 bytes); closing"))
        XCTAssertEqual(a.next(), .eof)
        XCTAssertTrue(b.waitFor("* \(a.name) left (toolong)"))
    }

    /// A client that never reads while others chat heavily is dropped (reason `slow`), the others
    /// get every line in order, and the server's memory stays flat although the slow client is
    /// sent many times what its kernel buffers and `--max-pending` can hold.
    func testSlowReceiverIsDroppedWhileOthersReceiveEverything() throws {
        let server = try ChatServer(["--max-pending", "65536"])
        let sender = try ChatClient(server)
        let fast1 = try ChatClient(server), fast2 = try ChatClient(server)
        let slow = try ChatClient(server, receiveBuffer: 4096)
        slow.send("/nick slowpoke\n")
        XCTAssertTrue(fast1.waitFor("* \(slow.name) is now slowpoke"))
        XCTAssertTrue(fast2.waitFor("* \(slow.name) is now slowpoke"))

        let payload = String(repeating: "z", count: 1000)
        let batch = 64  // lines per round; both fast readers take each round before the next
        let lineBytes = sender.name.utf8.count + 2 + 8 + payload.utf8.count + 1
        let totalBytes = 24 << 20
        let rounds = totalBytes / (batch * lineBytes)
        func numbered(_ n: Int) -> String {
            let digits = String(n)
            return String(repeating: "0", count: 7 - digits.count) + digits + " " + payload
        }
        var baselineKiB = 0
        var dropNotices = 0
        let started = Date()
        for round in 0..<rounds {
            sender.send((0..<batch).map { numbered(round * batch + $0) + "\n" }.joined())
            for reader in [fast1, fast2] {
                var i = 0
                while i < batch {
                    switch reader.next(timeout: 10) {
                    case .line(let line) where line.hasPrefix("* "):
                        if line == "* slowpoke left (slow)" { dropNotices += 1 }
                    case .line(let line):
                        guard line == "\(sender.name): \(numbered(round * batch + i))" else {
                            return XCTFail("message \(round * batch + i) missing or out of order at \(reader.name); got \(line.prefix(40))")
                        }
                        i += 1
                    case .eof, .timeout:
                        return XCTFail("fast reader \(reader.name) stopped receiving at message \(round * batch + i); server log:\n\(server.log)")
                    }
                }
            }
            if round == 0 { baselineKiB = server.residentKiB }
        }
        let seconds = Date().timeIntervalSince(started)
        let endKiB = server.residentKiB
        XCTAssertEqual(dropNotices, 2, "each fast reader is told once that the slow receiver was dropped; server log:\n\(server.log)")
        // The slow client gets what its kernel buffers already held, then EOF: a small part of it.
        XCTAssertTrue(slow.drainUntilEOF(timeout: 10), "the slow receiver's connection was not closed")
        XCTAssertLessThan(slow.bytesReceived, totalBytes / 2)
        // Allowed growth: the slow receiver's bounded queue and malloc slack. Queuing all it was
        // sent would take about 20 MiB more.
        XCTAssertLessThan(endKiB - baselineKiB, 8 * 1024, "RSS grew from \(baselineKiB) KiB to \(endKiB) KiB")
        print("""
            slow receiver: \((rounds * batch * lineBytes) >> 20) MiB sent to each of 3 receivers in \
            \(String(format: "%.2f", seconds)) s; the slow one got \(slow.bytesReceived) bytes before it was \
            dropped; server RSS \(baselineKiB) -> \(endKiB) KiB
            """)
    }

    func testIdleClientIsWarnedThenDisconnectedWhileTalkersAreNot() throws {
        let server = try ChatServer(["--idle-warning", "0.4", "--idle-timeout", "1.0"])
        let talker = try ChatClient(server)
        let idler = try ChatClient(server)
        let started = Date()
        var warnedAfter: Double?
        var closedAfter: Double?
        var talkerLines: [String] = []
        // The talker speaks every 100 ms; the idler only listens.
        while closedAfter == nil && Date().timeIntervalSince(started) < 5 {
            talker.send("tick\n")
            let deadline = Date().addingTimeInterval(0.1)
            while Date() < deadline {
                switch idler.next(timeout: max(0, deadline.timeIntervalSinceNow)) {
                case .line(let line) where line.hasPrefix("* you have been idle for "):
                    warnedAfter = Date().timeIntervalSince(started)
                    XCTAssertTrue(line.hasSuffix("you will be disconnected after 1s of silence"), line)
                case .line(let line):
                    XCTAssertTrue(line == "\(talker.name): tick" || line.hasPrefix("* idle for "), line)
                case .eof:
                    closedAfter = Date().timeIntervalSince(started)
                    idler.close()
                case .timeout:
                    break
                }
                if closedAfter != nil { break }
            }
            while case .line(let line) = talker.next(timeout: 0) { talkerLines.append(line) }
        }
        let warned = try XCTUnwrap(warnedAfter, "no idle notice")
        let closed = try XCTUnwrap(closedAfter, "idle client not disconnected")
        XCTAssertGreaterThanOrEqual(warned, 0.35)
        XCTAssertLessThan(warned, 0.9)
        XCTAssertGreaterThanOrEqual(closed, 0.95)
        XCTAssertLessThan(closed, 2.5)
        XCTAssertTrue(talker.waitFor("* \(idler.name) left (idle)") || talkerLines.contains("* \(idler.name) left (idle)"))
        XCTAssertFalse(talkerLines.contains { $0.hasPrefix("* you have been idle") }, "the talker was warned")
    }

    /// A connection the server closed (here for idleness) whose peer does not take the last
    /// output is cut after --close-timeout (the reactor's `closeTimeout`) without progress: with
    /// a reset, reported as `close-timeout` (its output was dropped), no longer as `idle`.
    func testClosedConnectionThatNeverReadsIsCutAfterCloseTimeout() throws {
        let server = try ChatServer(["--max-pending", "100000000", "--idle-warning", "0",
                                     "--idle-timeout", "1.5", "--close-timeout", "0.5"])
        let slow = try ChatClient(server, receiveBuffer: 4096)
        let sender = try ChatClient(server)
        // Far more than the kernel buffers between the server and `slow` hold: megabytes stay
        // queued in the server for it.
        let line = String(repeating: "q", count: 1000) + "\n"
        sender.send(String(repeating: line, count: 8000))
        let started = Date()
        var closedLine: String?
        while closedLine == nil && Date().timeIntervalSince(started) < 6 {
            usleep(50_000)
            closedLine = server.log.split(separator: "\n").first { $0.hasPrefix("chat: closed \(slow.name) (") }.map(String.init)
        }
        XCTAssertEqual(closedLine?.hasSuffix("reason=close-timeout"), true, "the idle, never-reading client was not cut; log:\n\(server.log)")
        XCTAssertTrue(slow.drainUntilEOF(timeout: 10))
        XCTAssertLessThan(slow.bytesReceived, 8000 * 1000, "its queued output was dropped")
    }

    func testTerminationSignalStopsGracefully() throws {
        let server = try ChatServer()
        let a = try ChatClient(server), b = try ChatClient(server)
        a.send("last words\n")
        XCTAssertEqual(b.nextMessage(), .line("\(a.name): last words"))
        let started = Date()
        server.signal(SIGTERM)
        // The clients see EOF, and once they close too the server has nothing left to wait for.
        XCTAssertTrue(a.drainUntilEOF(timeout: 5))
        XCTAssertTrue(b.drainUntilEOF(timeout: 5))
        a.close()
        b.close()
        XCTAssertEqual(server.waitForExit(timeout: 5), 0, "chat did not exit 0 after SIGTERM; log:\n\(server.log)")
        XCTAssertLessThan(Date().timeIntervalSince(started), 2)
        XCTAssertTrue(server.log.contains("closed: shutdown=2"), server.log)
    }

    func testInterruptSignalStopsToo() throws {
        let server = try ChatServer()
        let a = try ChatClient(server)
        server.signal(SIGINT)
        XCTAssertTrue(a.drainUntilEOF(timeout: 5))
        a.close()
        XCTAssertEqual(server.waitForExit(timeout: 5), 0)
    }
}
