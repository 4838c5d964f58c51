// libFuzzer target for the exit-line logic (Sources/Echo/ExitLineDetector.swift), driven the way
// EchoProtocol drives it, against a reference model. Build and run with fuzz/run.sh.
//
// Input layout: byte 0 is a header. Its low 4 bits, k, say how many of the following bytes are
// segment lengths (each 1 + byte % 64, used in turn; bit 6 of the byte set means the exit-line
// hold runs out after that segment, releasing the held bytes); with k == 0 every segment is
// 1 + (header >> 4) bytes long and nothing is released early. The rest is the byte stream.
//
// Checked for every input:
// - after each segment, the bytes written so far and the close decision equal the model's for
//   the part of the stream read so far (a last line that may still become the exit line is
//   held back), where a release at stream position p makes everything before p written;
// - an exit line echoes exactly the part of it that was released before it completed;
// - at EOF (no exit line), the bytes written equal the whole stream;
// - every verdict is possible (release <= 5, echo <= segment length).
// A mismatch prints the case and traps, which libFuzzer reports as a crash.

import Glibc

private let exitLF: [UInt8] = Array("exit".utf8)
private let exitCR: [UInt8] = Array("exit\r".utf8)
private let newline = UInt8(ascii: "\n")

/// The reference model. `atEOF == false`: the stream may go on, so a last, unterminated line
/// that is a prefix of "exit\r" is held back.
private func model(_ s: ArraySlice<UInt8>, atEOF: Bool) -> (output: ArraySlice<UInt8>, exit: Bool) {
    var lineStart = s.startIndex
    while let nl = s[lineStart...].firstIndex(of: newline) {
        let line = s[lineStart..<nl]
        if line.elementsEqual(exitLF) || line.elementsEqual(exitCR) { return (s[..<lineStart], true) }
        lineStart = nl + 1
    }
    if !atEOF && exitCR.starts(with: s[lineStart...]) { return (s[..<lineStart], false) }
    return (s, false)
}

private func show(_ bytes: some Collection<UInt8>) -> String {
    "\"" + bytes.map { b -> String in
        switch b {
        case 10: return "\\n"
        case 13: return "\\r"
        case 0x20..<0x7F: return String(UnicodeScalar(b))
        default: return "\\x" + String(b, radix: 16)
        }
    }.joined() + "\""
}

private func fail(_ message: String) -> Never {
    fputs("exit-line fuzz mismatch: \(message)\n", stderr)
    fatalError("exit-line detector disagrees with the model")
}

@_cdecl("LLVMFuzzerTestOneInput")
public func exitLineFuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 1 else { return 0 }
    let input = UnsafeBufferPointer(start: data, count: size)
    let header = input[0]
    let k = min(Int(header & 0x0F), size - 1)
    let cuts: [Int] = k == 0 ? [1 + Int(header >> 4)] : input[1...k].map { 1 + Int($0 % 64) }
    let releases: [Bool] = k == 0 ? [false] : input[1...k].map { $0 & 64 != 0 }
    var lastRelease = 0
    let stream = Array(input[(1 + k)...])

    var detector = ExitLineDetector()
    var output: [UInt8] = []
    var at = 0
    var turn = 0
    var exited = false
    while at < stream.count {
        let n = min(cuts[turn % cuts.count], stream.count - at)
        turn += 1
        let segment = stream[at..<(at + n)]
        // As EchoProtocol.read does it: skim (the inlined common case), and scan from where the
        // skim found a line starting with `e`; checked against a plain scan of the segment.
        var plain = detector
        let full = segment.withUnsafeBytes { plain.scan($0) }
        let verdict: ExitLineDetector.Verdict
        if let clear = segment.withUnsafeBytes({ detector.skim($0) }) {
            verdict = segment.withUnsafeBytes { detector.scan($0, clearUpTo: clear) }
        } else {
            verdict = ExitLineDetector.Verdict(release: 0, echo: n, exit: false)
        }
        guard verdict == full, detector == plain else {
            fail("skim then scan gave \(verdict), a plain scan \(full), for segment \(show(segment)) of \(show(stream))")
        }
        guard verdict.release >= 0, verdict.releaseFrom >= 0, verdict.releaseFrom + verdict.release <= exitCR.count,
              verdict.echo >= 0, verdict.echo <= n else {
            fail("impossible verdict \(verdict) for segment \(show(segment)) of \(show(stream)), cuts \(cuts)")
        }
        // What EchoProtocol.read writes: the held bytes released, then a prefix of the segment.
        output += exitCR[verdict.released]
        output += segment.prefix(verdict.echo)
        at += n
        if !verdict.exit && releases[(turn - 1) % releases.count] {
            // The hold ran out: what EchoProtocol.timerFired writes.
            output += exitCR[detector.releaseHeld()]
            lastRelease = at
        }
        let modelled = model(stream[..<at], atEOF: false)
        let expected = (output: stream[..<max(modelled.output.count, lastRelease)], exit: modelled.exit)
        guard output[...] == expected.output, verdict.exit == expected.exit else {
            fail("""
                after \(show(stream[..<at])) (cuts \(cuts)): wrote \(show(output)) exit \(verdict.exit); \
                model \(show(expected.output)) exit \(expected.exit)
                """)
        }
        if verdict.exit { exited = true; break }
    }
    if !exited {
        // What EchoProtocol.readEOF writes.
        output += exitCR[detector.finish()]
    }
    let modelled = model(stream[...], atEOF: true)
    let expected = (output: modelled.exit ? stream[..<max(modelled.output.count, lastRelease)] : modelled.output,
                    exit: modelled.exit)
    guard output[...] == expected.output, exited == expected.exit else {
        fail("at EOF of \(show(stream)) (cuts \(cuts)): wrote \(show(output)) exit \(exited); model \(show(expected.output)) exit \(expected.exit)")
    }
    return 0
}
