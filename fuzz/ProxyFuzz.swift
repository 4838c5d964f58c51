// libFuzzer target for the PROXY protocol parser (Sources/ClientAdmission/ProxyProtocol.swift). Build and
// run with fuzz/run-proxy.sh.
//
// Input layout: byte 0 chooses how the stream is cut into segments for ProxyHeaderReader (as in
// ExitLineFuzz.swift: low 4 bits k, then k bytes of segment lengths, each 1 + byte % 64; k == 0:
// every segment is 1 + (byte0 >> 4) bytes). The rest is the stream.
//
// Checked for every input (a mismatch prints the case and traps, which libFuzzer reports):
// - parse() of every prefix agrees with parse() of the whole: a prefix that is a header or
//   invalid says the same as the whole stream; the whole stream of 108 bytes or more is never
//   incomplete; a header's length is at least the bytes it needed and at most 107 (v1) or
//   16 + 65535 (v2);
// - the reader, fed the cut segments, reaches the same verdict as parse() of the whole stream,
//   and the bytes it hands on as data are exactly the stream after the header.

import Glibc

private func fail(_ message: String) -> Never {
    fputs("proxy fuzz mismatch: \(message)\n", stderr)
    fatalError("PROXY parser disagrees with itself")
}

private func parse(_ bytes: ArraySlice<UInt8>) -> ProxyParseResult {
    bytes.withUnsafeBytes { ProxyProtocol.parse($0) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let input = Array(UnsafeBufferPointer(start: data, count: size))
    let control = input[0]
    let k = Int(control & 0x0F)
    let lengths: [Int] = k == 0 ? [1 + Int(control >> 4)] : input.dropFirst().prefix(k).map { 1 + Int($0) % 64 }
    let stream = Array(input.dropFirst(1 + (k == 0 ? 0 : min(k, size - 1))))

    let whole = parse(stream[...])
    switch whole {
    case .incomplete:
        if stream.count >= ProxyProtocol.decisionBytes { fail("incomplete after \(stream.count) bytes") }
    case .header(let h):
        let limit = h.version == 1 ? ProxyProtocol.v1MaxLength : 16 + 65535
        if h.length > limit || h.length < 15 { fail("header length \(h.length) for v\(h.version)") }
        if h.version == 1 && h.length > stream.count { fail("v1 length \(h.length) past the stream") }
    case .invalid:
        break
    }
    for n in 0..<stream.count {
        switch parse(stream[..<n]) {
        case .incomplete: continue
        case let verdict:
            if verdict != whole { fail("prefix of \(n) says \(verdict), the whole \(stream.count) says \(whole)") }
        }
    }

    var reader = ProxyHeaderReader()
    var start = 0
    var turn = 0
    var data: [UInt8] = []
    var verdict: ProxyHeaderReader.Step = .needMore
    while start < stream.count {
        let end = min(stream.count, start + lengths[turn % lengths.count])
        turn += 1
        let segment = stream[start..<end]
        start = end
        if case .done = verdict { data += segment; continue }
        verdict = segment.withUnsafeBytes { reader.feed($0) }
        switch verdict {
        case .needMore: continue
        case .invalid(let e):
            if whole != .invalid(e) { fail("reader says invalid \(e), parse says \(whole)") }
            return 0
        case .done(let h, let dataStart):
            if whole != .header(h) { fail("reader says \(h), parse says \(whole)") }
            if dataStart < 0 || dataStart > segment.count { fail("dataStart \(dataStart) of \(segment.count)") }
            data += segment[(segment.startIndex + dataStart)...]
        }
    }
    switch (verdict, whole) {
    case (.done(let h, _), _):
        if data != Array(stream[h.length...]) { fail("data after the header differs (\(data.count) bytes)") }
    case (.needMore, .header(let h)):
        if h.length <= stream.count { fail("reader still waiting for a header of \(h.length) in \(stream.count) bytes") }
    case (.needMore, .incomplete): break
    case (.needMore, .invalid(let e)): fail("reader waits, parse says invalid \(e)")
    case (.invalid, _): fail("unreachable")
    }
    return 0
}
