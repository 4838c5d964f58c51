// Property-based tests of the echo + exit-line logic against a tiny reference model.
//
// The model: the exit line is the first line that is exactly "exit" or "exit\r", terminated by
// "\n", at the start of the stream or right after a "\n". The output is everything before that
// line, and the connection closes. Without an exit line the output is everything, once EOF has
// released the bytes held back while they could still have become the exit line.
//
// Random streams with `exit`, `exit\r`, `\n`, `\r` and NUL sprinkled in are cut into random
// segments; the output and the close decision must be the model's, after every segment and at
// EOF. Once against ExitLineDetector driven the way EchoProtocol drives it, and once end to end:
// EchoProtocol on a real Reactor over loopback, with the reactor's reads cut to the generated
// segment lengths through the syscall seam.

import TestSupport
import CEpoll
import Echo
import Foundation
import Glibc
import PropertyBased
import Testing
@testable import Reactor

// MARK: the reference model

enum ExitLineModel {
    static let exitLF = Array("exit".utf8)
    static let exitCR = Array("exit\r".utf8)
    static let newline = UInt8(ascii: "\n")

    /// The first exit line: where it starts, and where its terminating "\n" is.
    static func exitLine(in s: ArraySlice<UInt8>) -> (start: Int, newline: Int)? {
        var lineStart = s.startIndex
        while let nl = s[lineStart...].firstIndex(of: newline) {
            let line = s[lineStart..<nl]
            if line.elementsEqual(exitLF) || line.elementsEqual(exitCR) { return (lineStart, nl) }
            lineStart = nl + 1
        }
        return nil
    }

    /// After the whole stream and EOF: what is echoed, and whether the exit line closed it.
    static func atEOF(_ s: ArraySlice<UInt8>) -> (output: ArraySlice<UInt8>, exit: Bool) {
        if let e = exitLine(in: s) { return (s[..<e.start], true) }
        return (s, false)
    }

    /// After `s` was read but before EOF: the same, except that a last, unterminated line that
    /// could still become the exit line (a prefix of "exit\r") is held back.
    static func beforeEOF(_ s: ArraySlice<UInt8>) -> (output: ArraySlice<UInt8>, exit: Bool) {
        if let e = exitLine(in: s) { return (s[..<e.start], true) }
        let tailStart = s.lastIndex(of: newline).map { $0 + 1 } ?? s.startIndex
        if exitCR.starts(with: s[tailStart...]) { return (s[..<tailStart], false) }
        return (s, false)
    }
}

// MARK: generators

enum ExitLineGen {
    /// The pieces streams are made of, chosen to hit every state of the detector.
    static let pieces: [[UInt8]] = [
        "exit", "exit\r", "\n", "\r", "\0", "exit\n", "exit\r\n", "e", "ex", "exi", "x", "\r\n",
        "exits", "exit now", " exit", "ordinary text", "\u{FF}", String(repeating: "long line ", count: 12),
    ].map { Array($0.utf8) }

    /// A piece index (or, above the list, a random byte) and the byte to use then.
    static let stream = zip(Gen.int(in: 0...(pieces.count + 5)), Gen<UInt8>.value(in: 0...255))
        .array(of: 0...48)
        .map { tokens in
            tokens.flatMap { kind, byte in kind < pieces.count ? pieces[kind] : [byte] }
        }

    /// Segment lengths, used in turn (cycled when the stream is longer).
    static let cuts = Gen.int(in: 1...16).array(of: 1...24)

    static func segments(of count: Int, cuts: [Int]) -> [Range<Int>] {
        var out: [Range<Int>] = []
        var at = 0
        var i = 0
        while at < count {
            let n = min(cuts[i % cuts.count], count - at)
            out.append(at..<(at + n))
            at += n
            i += 1
        }
        return out
    }
}

func exitLineText(_ bytes: some Collection<UInt8>) -> String {
    "\"" + bytes.map { b -> String in
        switch b {
        case UInt8(ascii: "\n"): return "\\n"
        case UInt8(ascii: "\r"): return "\\r"
        case 0: return "\\0"
        case 0x20..<0x7F: return String(UnicodeScalar(b))
        default: return "\\x" + String(b, radix: 16)
        }
    }.joined() + "\""
}

// MARK: the detector, driven the way EchoProtocol drives it

@Suite struct ExitLinePropertyTests {
    @Test func detectorOutputAndCloseDecisionMatchTheModelForAnySegmentation() async {
        await propertyCheck(count: 3000, input: ExitLineGen.stream, ExitLineGen.cuts) { stream, cuts in
            let candidate = ExitLineModel.exitCR
            var detector = ExitLineDetector()
            var output: [UInt8] = []
            var exited = false
            for segment in ExitLineGen.segments(of: stream.count, cuts: cuts) {
                let bytes = Array(stream[segment])
                let verdict = bytes.withUnsafeBytes { detector.scan($0) }
                guard verdict.release >= 0, verdict.release <= candidate.count, verdict.echo >= 0, verdict.echo <= bytes.count else {
                    Issue.record("impossible verdict \(verdict) for segment \(exitLineText(bytes)) of \(exitLineText(stream))")
                    return
                }
                // What EchoProtocol.read writes: the released held bytes, then a prefix of the segment.
                output += candidate[verdict.released]
                output += bytes[..<verdict.echo]
                let model = ExitLineModel.beforeEOF(stream[..<segment.upperBound])
                guard output[...] == model.output, verdict.exit == model.exit else {
                    Issue.record("""
                        after \(exitLineText(stream[..<segment.upperBound])) cut by \(cuts): \
                        output \(exitLineText(output)) exit \(verdict.exit), model \(exitLineText(model.output)) exit \(model.exit)
                        """)
                    return
                }
                if verdict.exit { exited = true; break }
            }
            if !exited {
                // What EchoProtocol.readEOF writes: the bytes still held back.
                let held = detector.finish()
                output += candidate[held]
            }
            let model = ExitLineModel.atEOF(stream[...])
            #expect(output[...] == model.output, "at EOF, \(exitLineText(stream)) cut by \(cuts): \(exitLineText(output)) != \(exitLineText(model.output))")
            #expect(exited == model.exit, "at EOF, \(exitLineText(stream)) cut by \(cuts)")
        }
    }

    /// The bounded hold: after some segments (chosen at random) the hold runs out and the held
    /// bytes are released. The model: a release at stream position `p` makes everything before
    /// `p` echoed, and the line is still tracked. So after each segment the output is
    /// `stream[..<max(model, lastRelease)]`, the close decision is the model's, and an exit line
    /// echoes exactly the part of it released before it completed.
    @Test func detectorWithRandomReleasesMatchesTheModel() async {
        let releases = Gen.bool.array(of: 1...12)
        await propertyCheck(count: 3000, input: ExitLineGen.stream, ExitLineGen.cuts, releases) { stream, cuts, releases in
            let candidate = ExitLineModel.exitCR
            var detector = ExitLineDetector()
            var output: [UInt8] = []
            var exited = false
            var lastRelease = 0
            for (k, segment) in ExitLineGen.segments(of: stream.count, cuts: cuts).enumerated() {
                let bytes = Array(stream[segment])
                let verdict = bytes.withUnsafeBytes { detector.scan($0) }
                guard verdict.releaseFrom >= 0, verdict.releaseFrom + verdict.release <= candidate.count,
                      verdict.release >= 0, verdict.echo >= 0, verdict.echo <= bytes.count else {
                    Issue.record("impossible verdict \(verdict) for segment \(exitLineText(bytes)) of \(exitLineText(stream))")
                    return
                }
                output += candidate[verdict.released]
                output += bytes[..<verdict.echo]
                if !verdict.exit && releases[k % releases.count] {
                    output += candidate[detector.releaseHeld()]
                    lastRelease = segment.upperBound
                }
                let model = ExitLineModel.beforeEOF(stream[..<segment.upperBound])
                let expected = stream[..<max(model.output.count, lastRelease)]
                guard output[...] == expected, verdict.exit == model.exit else {
                    Issue.record("""
                        after \(exitLineText(stream[..<segment.upperBound])) cut by \(cuts), releases \(releases): \
                        output \(exitLineText(output)) exit \(verdict.exit), expected \(exitLineText(expected)) exit \(model.exit)
                        """)
                    return
                }
                if verdict.exit { exited = true; break }
            }
            if !exited { output += candidate[detector.finish()] }
            let model = ExitLineModel.atEOF(stream[...])
            let expected = model.exit ? stream[..<max(model.output.count, lastRelease)] : model.output
            #expect(output[...] == expected, "at EOF, \(exitLineText(stream)) cut by \(cuts), releases \(releases): \(exitLineText(output)) != \(exitLineText(expected))")
            #expect(exited == model.exit, "at EOF, \(exitLineText(stream)) cut by \(cuts)")
        }
    }

    @Test func heldBytesAreReleasedAtEOF() {
        for (input, expected) in [("exit", "exit"), ("exit\r", "exit\r"), ("ab\nexi", "ab\nexi"), ("e", "e"),
                                  ("exit\r\r", "exit\r\r"), ("x\nexit\n", "x\n"), ("exit\r\nmore", "")] {
            var detector = ExitLineDetector()
            var output: [UInt8] = []
            var exited = false
            for byte in input.utf8 {
                let verdict = [byte].withUnsafeBytes { detector.scan($0) }
                output += ExitLineModel.exitCR[verdict.released]
                output += [byte][..<verdict.echo]
                if verdict.exit { exited = true; break }
            }
            if !exited { output += ExitLineModel.exitCR[detector.finish()] }
            #expect(output == Array(expected.utf8), "\(exitLineText(Array(input.utf8)))")
        }
    }

    // MARK: end to end: EchoProtocol on a real Reactor, reads cut through the syscall seam

    @Test func echoOverLoopbackMatchesTheModelForAnySegmentation() async throws {
        let server = try ExitLineServer()
        defer { server.stop() }
        await propertyCheck(count: 150, input: ExitLineGen.stream, ExitLineGen.cuts) { stream, cuts in
            server.cuts.set(cuts)
            let expected = ExitLineModel.atEOF(stream[...])
            do {
                let client = try TestSocket.connect(port: server.port)
                try client.send(stream, timeout: 5)
                client.shutdownWrite()
                let (received, end) = client.receiveUntilEnd(timeout: 5)
                let eof = end == .eof
                #expect(eof, "no EOF after \(exitLineText(stream)) cut by \(cuts)")
                #expect(received[...] == expected.output,
                        "\(exitLineText(stream)) cut by \(cuts): echoed \(exitLineText(received)), model \(exitLineText(expected.output))")
                let reason = server.recorder.waitForClose(peerPort: client.localPort)
                #expect(reason == (expected.exit ? EchoProtocol.exitReason : .eof),
                        "\(exitLineText(stream)) cut by \(cuts): closed with \(String(describing: reason))")
            } catch {
                Issue.record("\(error)")
            }
        }
    }
}

// MARK: end-to-end harness

/// Cuts every read the reactor makes to the next of a list of lengths.
final class ExitLineReadCuts: SyscallInterposer, @unchecked Sendable {
    // @unchecked: the only stored property is a lock.
    private let state = Locked<(cuts: [Int], next: Int)>(([], 0))

    func set(_ cuts: [Int]) { state.withLock { $0 = (cuts, 0) } }

    func intercept(_ call: SyscallName, fd: CInt) -> Interposition {
        guard call == .read else { return .proceed }
        return state.withLock { s in
            guard !s.cuts.isEmpty else { return .proceed }
            defer { s.next += 1 }
            return .limit(s.cuts[s.next % s.cuts.count])
        }
    }

    func rewriteEvents(_ events: UnsafeMutablePointer<epoll_event>, count: Int, capacity: Int) -> Int { count }
}

/// Close reasons by the client's port.
final class ExitLineRecorder: Sendable {
    private let reasons = Locked<[Int: CloseReason]>([:])

    func closed(peerPort: Int, _ reason: CloseReason) { reasons.withLock { $0[peerPort] = reason } }

    func waitForClose(peerPort: Int, timeout: Double = 5) -> CloseReason? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let r = reasons.withLock({ $0[peerPort] }) { return r }
            usleep(500)
        }
        return nil
    }
}

/// The echo protocol exactly as EchoHandler runs it, plus a record of each close reason. The hold
/// is long, so that the end-to-end result does not depend on timing: nothing is released early.
struct ExitLineEchoHandler: ConnectionHandler {
    typealias ConnectionState = EchoState
    let recorder: ExitLineRecorder
    let policy = ExitLinePolicy(hold: .seconds(60))

    func makeState() -> EchoState { EchoState() }

    func onRead(_ bytes: UnsafeRawBufferPointer, connection: borrowing Connection<Self>,
                state: inout EchoState) -> Action {
        EchoProtocol.read(bytes, connection: connection, state: &state, policy: policy)
    }

    func onReadEOF(_ connection: borrowing Connection<Self>, state: inout EchoState) -> Action {
        EchoProtocol.readEOF(connection: connection, state: &state)
    }

    func onTimer(_ timer: TimerID, connection: borrowing Connection<Self>, state: inout EchoState) -> Action {
        EchoProtocol.timerFired(timer, connection: connection, state: &state)
        return .continue
    }

    func onClose(_ connection: borrowing Connection<Self>, state: inout EchoState, reason: CloseReason) {
        recorder.closed(peerPort: connection.peer.port ?? -1, reason)
    }
}

/// A reactor running ExitLineEchoHandler on 127.0.0.1 port 0, with its reads cut by `cuts`
/// (TestSupport's ReactorRunner).
final class ExitLineServer: Sendable {
    let cuts = ExitLineReadCuts()
    let recorder = ExitLineRecorder()
    let runner: ReactorRunner<Int>
    var port: Int { runner.port }

    init() throws {
        let (cuts, recorder) = (self.cuts, self.recorder)
        runner = try ReactorRunner.start(
            make: { try Reactor(handler: ExitLineEchoHandler(recorder: recorder), configuration: ReactorConfiguration(), interposer: cuts) },
            setUp: { reactor in try reactor.listen(on: try SocketAddress(host: "127.0.0.1", port: 0)).port ?? 0 })
    }

    func stop() { runner.stop(timeout: 10, thenNow: true) }
}
