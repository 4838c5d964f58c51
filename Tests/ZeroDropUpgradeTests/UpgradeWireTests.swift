import Glibc
import XCTest
@testable import ZeroDropUpgrade

/// The hand-over wire decoder (``HandOverStream``, ``UpgradeReader``, the records), fed bytes
/// alone: every message type, truncations at every byte, wrong versions and absurd counts. A
/// decoder that reads another process's bytes must throw, never trap, and never allocate more
/// than it was given.
final class UpgradeWireTests: XCTestCase {
    // MARK: a valid stream

    /// 127.0.0.1:port as sockaddr bytes.
    static func ipv4(_ port: UInt16) -> [UInt8] {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = port.bigEndian
        a.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        return withUnsafeBytes(of: a) { Array($0) }
    }

    /// [::1]:port as sockaddr bytes.
    static func ipv6(_ port: UInt16) -> [UInt8] {
        var a = sockaddr_in6()
        a.sin6_family = sa_family_t(AF_INET6)
        a.sin6_port = port.bigEndian
        return withUnsafeBytes(of: a) { Array($0) }
    }

    static let listeners = [
        ListenerRecord(reactor: 0, fd: 100, address: ipv4(7), limited: true),
        ListenerRecord(reactor: 1, fd: 101, address: ipv6(7), limited: true, ownsUnixPath: false),
        ListenerRecord(reactor: 0, fd: 102, address: ipv4(9100), role: 1),
        ListenerRecord(reactor: 0, fd: 103, address: ipv4(7), datagram: true),
    ]

    static let connections: [ConnectionRecord] = {
        // Parked by its handler, its output past the high watermark (both gates travel).
        var open = ConnectionRecord(reactor: 0, flags: [.holdsLimitPlace, .pausedByHandler, .backpressure], idleSeconds: 12,
                                    pendingLength: 70_000, peer: ipv4(40_001), state: [1, 2, 3, 0, 0, 0xff])
        open.fd = 200
        open.pending = (0..<70_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        var closing = ConnectionRecord(reactor: 1, flags: [.closing, .readEOF, .shutdownPending], idleSeconds: 0,
                                       pendingLength: 0, reasonName: "reset", reasonDetail: "by peer", reasonErrno: 104,
                                       peer: ipv6(40_002), state: [])
        closing.fd = 201
        var lingering = ConnectionRecord(reactor: 0, flags: [.closing, .lingering], idleSeconds: 1, pendingLength: 3,
                                         reasonName: "exit", peer: ipv4(40_003), state: Array(repeating: 0, count: 300))
        lingering.fd = 202
        lingering.pending = [0, 10, 13]
        // A state too long for the record (a half-read request): it follows in chunks.
        var large = ConnectionRecord(reactor: 2, flags: [], idleSeconds: 0, pendingLength: 0, peer: ipv4(40_004),
                                     state: (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 13) })
        large.fd = 203
        return [open, closing, lingering, large]
    }()

    static let processState: [UInt8] = (0..<150_000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) }

    /// The messages an old process sends after the hellos, as ``Upgrader`` builds them.
    static func messages(connections: [ConnectionRecord] = connections, state: [UInt8] = processState)
        -> [(bytes: [UInt8], fds: [CInt])] {
        var result: [(bytes: [UInt8], fds: [CInt])] = []
        var l = UpgradeWriter(.listeners, count: listeners.count)
        for record in listeners { record.encode(into: &l) }
        result.append((l.bytes, listeners.map(\.fd)))
        var c = UpgradeWriter(.connections, count: connections.count)
        for record in connections { record.encode(into: &c) }
        result.append((c.bytes, connections.map(\.fd)))
        for (k, record) in connections.enumerated() {
            var offset = 0
            while !record.stateInline && offset < record.state.count {
                let end = min(offset + UpgradeWire.outputChunk, record.state.count)
                var chunk = UpgradeWriter(.connectionState, count: k)
                chunk.bytes += record.state[offset..<end]
                result.append((chunk.bytes, []))
                offset = end
            }
            offset = 0
            while offset < record.pending.count {
                let end = min(offset + UpgradeWire.outputChunk, record.pending.count)
                var chunk = UpgradeWriter(.output, count: k)
                chunk.bytes += record.pending[offset..<end]
                result.append((chunk.bytes, []))
                offset = end
            }
        }
        var offset = 0
        while offset < state.count {
            let end = min(offset + UpgradeWire.outputChunk, state.count)
            var chunk = UpgradeWriter(.processState)
            chunk.bytes += state[offset..<end]
            result.append((chunk.bytes, []))
            offset = end
        }
        var end = UpgradeWriter(.end, count: connections.count)
        end.u64(UInt64(state.count))
        result.append((end.bytes, []))
        return result
    }

    /// Feeds `messages`; returns the stream and the error that stopped it, if any.
    static func run(_ messages: [(bytes: [UInt8], fds: [CInt])]) -> (HandOverStream, UpgradeError?) {
        var stream = HandOverStream()
        for m in messages {
            do { try stream.feed(m.bytes, fds: m.fds) } catch { return (stream, error) }
        }
        return (stream, nil)
    }

    func assertRefused(_ messages: [(bytes: [UInt8], fds: [CInt])], containing text: String,
                       file: StaticString = #filePath, line: UInt = #line) {
        let (stream, error) = Self.run(messages)
        XCTAssertFalse(stream.finished, "a refused stream is not finished", file: file, line: line)
        guard let error else { return XCTFail("accepted; expected an error with '\(text)'", file: file, line: line) }
        XCTAssertTrue(error.description.contains(text), "'\(error)' does not say '\(text)'", file: file, line: line)
    }

    // MARK: every message type

    func testEveryMessageTypeRoundTrips() throws {
        let (stream, error) = Self.run(Self.messages())
        XCTAssertNil(error)
        XCTAssertTrue(stream.finished)
        XCTAssertEqual(stream.listeners, Self.listeners)
        XCTAssertEqual(stream.connections, Self.connections)
        XCTAssertEqual(stream.processState, Self.processState)
        XCTAssertEqual(stream.receivedFDs, [100, 101, 102, 103, 200, 201, 202, 203])
        XCTAssertEqual(stream.connections[3].state.count, 100_000)
    }

    func testAStreamWithOneListenerAndNoConnectionsOrState() {
        var l = UpgradeWriter(.listeners, count: 1)
        Self.listeners[0].encode(into: &l)
        var end = UpgradeWriter(.end, count: 0)
        end.u64(0)
        let (stream, error) = Self.run([(l.bytes, [100]), (end.bytes, [])])
        XCTAssertNil(error)
        XCTAssertTrue(stream.finished)
        XCTAssertTrue(stream.connections.isEmpty && stream.processState.isEmpty)
        XCTAssertEqual(stream.listeners, [Self.listeners[0]])
    }

    func testAStreamWithoutAServiceListenerIsRefused() {
        var l = UpgradeWriter(.listeners, count: 2)
        Self.listeners[2].encode(into: &l)  // the metrics one (role 1)
        Self.listeners[3].encode(into: &l)  // a datagram socket
        var end = UpgradeWriter(.end, count: 0)
        end.u64(0)
        assertRefused([(l.bytes, [102, 103]), (end.bytes, [])], containing: "no listener of its service")
    }

    func testHelloReadyAndRefuseHeaders() throws {
        var hello = UpgradeWriter(.hello)
        hello.u32(4711)
        var r = try UpgradeReader(hello.bytes)
        XCTAssertEqual(r.type, .hello)
        XCTAssertEqual(try r.u32(), 4711)
        XCTAssertThrowsError(try r.u8())
        var ready = UpgradeWriter(.ready, count: 3)
        ready.u32(4712)
        let readyReader = try UpgradeReader(ready.bytes)
        XCTAssertEqual(readyReader.type, .ready)
        XCTAssertEqual(readyReader.count, 3)
        var refuse = UpgradeWriter(.refuse)
        refuse.bytes += Array("no".utf8)
        let refuseReader = try UpgradeReader(refuse.bytes)
        XCTAssertEqual(refuseReader.type, .refuse)
        XCTAssertEqual(Array(refuseReader.remaining), Array("no".utf8))
        // progress (new → old): type 10, the count of reports before it, no body.
        let progress = UpgradeWriter(.progress, count: 7)
        XCTAssertEqual(progress.bytes.count, UpgradeWire.headerSize)
        XCTAssertEqual(progress.bytes[6], 10)
        let progressReader = try UpgradeReader(progress.bytes)
        XCTAssertEqual(progressReader.type, .progress)
        XCTAssertEqual(progressReader.count, 7)
        XCTAssertNoThrow(try progressReader.expectEnd())
        var long = progress
        long.u8(0)
        XCTAssertThrowsError(try UpgradeReader(long.bytes).expectEnd(), "a progress with a body is refused by the old process")
    }

    func testHelloReadyOrRefuseInsideTheStreamIsRefused() {
        for type in [UpgradeWire.MessageType.hello, .ready, .refuse] {
            assertRefused([(UpgradeWriter(type).bytes, [])], containing: "unexpected \(type)")
        }
    }

    /// The old process reports progress while it writes its process state: anywhere before the
    /// end, header only, it changes nothing; with a body or fds it is refused; after the end too.
    func testProgressInsideTheStreamIsAcceptedHeaderOnly() {
        var messages = Self.messages()
        for k in stride(from: messages.count - 1, through: 0, by: -1) {
            messages.insert((UpgradeWriter(.progress, count: k).bytes, []), at: k)
        }
        let (stream, error) = Self.run(messages)
        XCTAssertNil(error)
        XCTAssertTrue(stream.finished)
        XCTAssertEqual(stream.listeners, Self.listeners)
        XCTAssertEqual(stream.connections, Self.connections)
        XCTAssertEqual(stream.processState, Self.processState)
        var long = UpgradeWriter(.progress)
        long.u8(0)
        assertRefused([(long.bytes, [])], containing: "left over")
        assertRefused([(UpgradeWriter(.progress).bytes, [7])], containing: "progress carries fds")
        var afterEnd = Self.messages()
        afterEnd.append((UpgradeWriter(.progress).bytes, []))
        XCTAssertEqual(Self.run(afterEnd).1?.description, "a message after the end")
    }

    func testAMessageAfterTheEndIsRefused() {
        var messages = Self.messages()
        messages.append(messages[0])
        let (stream, error) = Self.run(messages)
        XCTAssertTrue(stream.finished, "the stream up to its end was whole")
        XCTAssertEqual(error?.description, "a message after the end")
        XCTAssertEqual(stream.receivedFDs.count, 12, "the fds of the message after the end are in receivedFDs, to be closed")
    }

    // MARK: truncations

    func testEveryTruncationOfEveryMessageIsRefused() {
        let messages = Self.messages()
        for (k, message) in messages.enumerated() {
            // Every cut of the small messages, and around the edges of the large chunks.
            let cuts = message.bytes.count <= 2_000
                ? Array(0..<message.bytes.count)
                : Array(0..<64) + Array((message.bytes.count - 64)..<message.bytes.count)
            for cut in cuts {
                var cutMessages = messages
                cutMessages[k].bytes = Array(message.bytes.prefix(cut))
                let (stream, error) = Self.run(cutMessages)
                XCTAssertNotNil(error, "message \(k) cut at \(cut) of \(message.bytes.count) was accepted")
                XCTAssertFalse(stream.finished)
            }
        }
    }

    func testAMissingMessageIsRefused() {
        let messages = Self.messages()
        for k in 0..<(messages.count - 1) {
            var fewer = messages
            fewer.remove(at: k)
            let (stream, error) = Self.run(fewer)
            XCTAssertNotNil(error, "the stream without message \(k) was accepted")
            XCTAssertFalse(stream.finished)
        }
    }

    func testExtraBytesAfterARecordAreRefused() {
        var messages = Self.messages()
        messages[0].bytes.append(0)
        assertRefused(messages, containing: "left over")
        messages = Self.messages()
        messages[1].bytes.append(0)
        assertRefused(messages, containing: "left over")
    }

    // MARK: versions and headers

    func testAnotherVersionIsRefusedNamingBoth() {
        for version: UInt16 in [0, 1, 3, 99, .max] {
            var bytes = Self.messages()[0].bytes
            bytes[4] = UInt8(version & 0xff)
            bytes[5] = UInt8(version >> 8)
            XCTAssertThrowsError(try UpgradeReader(bytes)) { error in
                XCTAssertEqual("\(error)", "hand-over format version \(version) from the other process; this binary speaks version \(UpgradeWire.version)")
            }
        }
    }

    func testBadMagicAndUnknownTypesAreRefused() {
        var bytes = UpgradeWriter(.end).bytes
        bytes[0] = UInt8(ascii: "X")
        XCTAssertThrowsError(try UpgradeReader(bytes)) { XCTAssertTrue("\($0)".contains("bad magic")) }
        for type: UInt8 in [0, 11, 200, 255] {  // 10 is progress
            var bytes = UpgradeWriter(.end).bytes
            bytes[6] = type
            XCTAssertThrowsError(try UpgradeReader(bytes)) { XCTAssertTrue("\($0)".contains("unknown hand-over message type \(type)")) }
        }
    }

    // MARK: absurd counts and lengths

    func testCountsThatDoNotMatchTheFdsAreRefused() {
        var messages = Self.messages()
        messages[0].fds.removeLast()
        assertRefused(messages, containing: "4 records but 3 fds")
        messages = Self.messages()
        messages[1].fds.append(999)
        assertRefused(messages, containing: "4 records but 5 fds")
        var huge = UpgradeWriter(.connections, count: Int(UInt32.max))
        huge.u16(0)
        assertRefused([(huge.bytes, [])], containing: "4294967295 records but 0 fds")
        assertRefused([(UpgradeWriter(.listeners, count: 1_000_000).bytes, [1, 2, 3])], containing: "1000000 records but 3 fds")
    }

    func testOutputForAnUnknownConnectionOrPastItsLengthIsRefused() {
        var messages = Self.messages()
        var stray = UpgradeWriter(.output, count: Int(UInt32.max))
        stray.u8(1)
        messages.insert((stray.bytes, []), at: 2)
        assertRefused(messages, containing: "output for unknown connection 4294967295")
        messages = Self.messages()
        var extra = UpgradeWriter(.output, count: 1)  // connection 1 announced 0 bytes
        extra.u8(1)
        messages.insert((extra.bytes, []), at: 2)
        assertRefused(messages, containing: "more output than announced for connection 1")
    }

    func testOutputOrStateWithFdsIsRefused() {
        var messages = Self.messages()
        messages[2].fds = [5]  // connection 0's first output chunk
        assertRefused(messages, containing: "output carries fds")
        messages = Self.messages()
        messages[5].fds = [5]  // connection 3's first state chunk
        assertRefused(messages, containing: "connection state carries fds")
        messages = Self.messages()
        messages[messages.count - 2].fds = [5]
        assertRefused(messages, containing: "process state carries fds")
        messages = Self.messages()
        messages[messages.count - 1].fds = [5]
        assertRefused(messages, containing: "end carries fds")
    }

    func testAnAbsurdPendingLengthIsRefusedBeforeAnyOutput() {
        var record = Self.connections[1]
        record.pendingLength = Int(UInt32.max)
        assertRefused(Self.messages(connections: [record]), containing: "announces 4294967295 bytes of pending output")
    }

    func testAnAbsurdStateLengthIsRefusedBeforeAnyState() {
        var record = Self.connections[1]
        record.stateLength = Int(UInt32.max)
        assertRefused(Self.messages(connections: [record]), containing: "announces 4294967295 bytes of state")
    }

    func testStateChunksForAnInlineStateOrPastTheLengthAreRefused() {
        var messages = Self.messages()
        var stray = UpgradeWriter(.connectionState, count: 0)  // connection 0's state is inline
        stray.u8(1)
        messages.insert((stray.bytes, []), at: 2)
        assertRefused(messages, containing: "whose state was inline")
        messages = Self.messages()
        var extra = UpgradeWriter(.connectionState, count: 3)
        extra.bytes += [UInt8](repeating: 0, count: 100_001)
        messages.insert((extra.bytes, []), at: 2)
        assertRefused(messages, containing: "more state than announced for connection 3")
        messages = Self.messages()
        var unknown = UpgradeWriter(.connectionState, count: 9)
        unknown.u8(0)
        messages.insert((unknown.bytes, []), at: 2)
        assertRefused(messages, containing: "state for unknown connection 9")
    }

    func testEndCountsAndLengthsMustMatch() {
        var messages = Self.messages()
        var end = UpgradeWriter(.end, count: 5)
        end.u64(UInt64(Self.processState.count))
        messages[messages.count - 1] = (end.bytes, [])
        assertRefused(messages, containing: "end says 5 connections, received 4")
        end = UpgradeWriter(.end, count: 4)
        end.u64(.max)
        messages[messages.count - 1] = (end.bytes, [])
        assertRefused(messages, containing: "end says 18446744073709551615 bytes of process state")
    }

    func testABlobLongerThanItsMessageIsRefused() {
        var l = UpgradeWriter(.listeners, count: 1)
        l.u16(0)
        l.u8(1)
        l.u8(0)
        l.u16(.max)  // 65,535 address bytes announced, none there
        assertRefused([(l.bytes, [3])], containing: "truncated")
    }

    // MARK: records

    func testUnknownFlagsAreRefused() {
        var record = Self.connections[1]
        record.flags = ConnectionRecord.Flags(rawValue: 1 << 9)
        assertRefused(Self.messages(connections: [record]), containing: "unknown connection flags 512")
        var l = UpgradeWriter(.listeners, count: 1)
        ListenerRecord(reactor: 0, fd: 3, address: Self.ipv4(1)).encode(into: &l)
        l.bytes[UpgradeWire.headerSize + 2] = 8
        assertRefused([(l.bytes, [3])], containing: "unknown listener flags 8")
    }

    func testInvalidAddressesAreRefused() {
        for address: [UInt8] in [[], [2], Array(Self.ipv4(1).prefix(15)), [0xff, 0xff] + Array(repeating: 0, count: 14),
                                 Self.ipv6(1) + [0]] {
            var record = Self.connections[1]
            record.peer = address
            assertRefused(Self.messages(connections: [record]), containing: "peer address is invalid")
            var l = UpgradeWriter(.listeners, count: 1)
            ListenerRecord(reactor: 0, fd: 3, address: address).encode(into: &l)
            assertRefused([(l.bytes, [3])], containing: "listener address invalid")
        }
    }

    func testACloseReasonOnAnOpenConnectionIsRefused() {
        var record = Self.connections[1]
        record.flags.remove(.closing)
        assertRefused(Self.messages(connections: [record]), containing: "not closing")
    }

    func testBodyReadersReadNoFurtherThanTheirBytes() throws {
        var w = UpgradeWriter()
        w.u64(.max)
        w.string8(String(repeating: "x", count: 300))  // cut to 255
        w.blob16([UInt8](repeating: 1, count: 70_000))  // cut to 65,535
        var r = UpgradeReader(body: w.bytes, of: .processState)
        XCTAssertEqual(try r.u64(), .max)
        XCTAssertEqual(try r.string8().utf8.count, 255)
        XCTAssertEqual(try r.blob16().count, 65_535)
        XCTAssertNoThrow(try r.expectEnd())
        XCTAssertThrowsError(try r.u8())
        XCTAssertThrowsError(try r.take(-1))
        XCTAssertThrowsError(try r.take(.max))
    }

    // MARK: hostile bytes

    /// Random messages, and valid ones with random bytes changed: the stream throws or accepts,
    /// never traps, and holds no more than it was given.
    func testRandomAndMutatedMessagesNeverTrap() {
        var rng = SystemRandomNumberGenerator()
        let valid = Self.messages(state: Array(Self.processState.prefix(1000)))
        var accepted = 0
        for _ in 0..<5_000 {
            var messages = valid
            let k = Int.random(in: 0..<messages.count, using: &rng)
            if Bool.random(using: &rng) {
                messages[k].bytes = (0..<Int.random(in: 0..<64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                if messages[k].bytes.count >= 4 { messages[k].bytes.replaceSubrange(0..<4, with: UpgradeWire.magic) }
                if messages[k].bytes.count >= 6 { messages[k].bytes[4] = UInt8(UpgradeWire.version); messages[k].bytes[5] = 0 }
            } else {
                for _ in 0..<Int.random(in: 1...4, using: &rng) where !messages[k].bytes.isEmpty {
                    let i = Int.random(in: 0..<min(messages[k].bytes.count, 400), using: &rng)
                    messages[k].bytes[i] = UInt8.random(in: 0...255, using: &rng)
                }
            }
            let given = messages.reduce(0) { $0 + $1.bytes.count }
            let (stream, error) = Self.run(messages)
            if error == nil && stream.finished { accepted += 1 }
            let held = stream.processState.count + stream.connections.reduce(0) { $0 + $1.pending.count + $1.state.count }
            XCTAssertLessThanOrEqual(held, given)
        }
        // Most mutations of a checked format are refused; some (a changed idle time) are not.
        XCTAssertLessThan(accepted, 5_000)
    }
}
