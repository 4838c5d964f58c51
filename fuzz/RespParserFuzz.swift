// libFuzzer target for the RESP request parser and framer (Examples/resp/RESP), driven the way
// resp-server drives them, plus the command engine on every request. Build and run with
// fuzz/resp-run.sh.
//
// Input layout: byte 0 is a header. Its low 4 bits, k, say how many of the following bytes are
// read sizes (each 1 + byte % 64, used in turn); with k == 0 every read is 1 + (header >> 4)
// bytes. Bit 4 of byte 1 (when k > 0) also makes the consumer stop after every request and
// resume, as resp-server does for a peer behind on its replies. The rest is the byte stream.
//
// Checked for every input, with small limits so that every limit is reached:
// - the frames (requests and the error that ends the stream) are the same whether the stream
//   arrives in one read or in the cut reads, with or without stop/resume;
// - the bytes kept between reads never pass maxRequest + a 64 KiB line + one read;
// - every multibulk request re-encoded and parsed again gives the same arguments;
// - the command engine runs every request without trapping.
// A mismatch prints the case and traps, which libFuzzer reports as a crash.

import Glibc

private let limits = RequestLimits(maxBulk: 200, maxArguments: 50, maxRequest: 2000)

private enum Got: Equatable {
    case request([[UInt8]])
    case failure(ProtocolError)
}

private func run(_ chunks: [ArraySlice<UInt8>], stopping: Bool, engine: CommandEngine?) -> [Got] {
    let scratch = ParserScratch(limits: limits)
    var framer = RequestFramer()
    var out: [Got] = []
    let body: (Frame) -> FrameVerdict = { frame in
        switch frame {
        case .request(let r):
            out.append(.request((0..<r.count).map { Array(r[$0]) }))
            if let engine {
                _ = engine.execute(r)
                engine.reply.bytes.removeAll()
            }
            return stopping ? .stop : .continue
        case .failure(let e):
            out.append(.failure(e))
            return .close
        }
    }
    for chunk in chunks {
        var result = chunk.withUnsafeBytes { framer.feed($0, scratch: scratch, body) }
        while result == .stopped { result = framer.resume(scratch: scratch, body) }
        if result == .closed { break }
        if framer.stashedBytes > limits.maxRequest + RequestLimits.maxLine + 2 + 64 {
            fail("kept \(framer.stashedBytes) bytes between reads")
        }
    }
    return out
}

private func encode(_ args: [[UInt8]]) -> [UInt8] {
    var out = Array("*\(args.count)\r\n".utf8)
    for arg in args { out += Array("$\(arg.count)\r\n".utf8) + arg + [13, 10] }
    return out
}

private func fail(_ message: String) -> Never {
    fputs("resp parser fuzz mismatch: \(message)\n", stderr)
    fatalError("the RESP framer disagrees with itself")
}

@_cdecl("LLVMFuzzerTestOneInput")
public func respParserFuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 1 else { return 0 }
    let input = UnsafeBufferPointer(start: data, count: size)
    let header = input[0]
    let k = min(Int(header & 0x0F), size - 1)
    let cuts: [Int] = k == 0 ? [1 + Int(header >> 4)] : input[1...k].map { 1 + Int($0 % 64) }
    let stopping = k > 0 && input[1] & 0x10 != 0
    let stream = Array(input[(1 + k)...])

    var chunks: [ArraySlice<UInt8>] = []
    var at = 0
    var turn = 0
    while at < stream.count {
        let n = min(cuts[turn % cuts.count], stream.count - at)
        chunks.append(stream[at..<(at + n)])
        at += n
        turn += 1
    }
    let whole = run([stream[...]], stopping: false, engine: nil)
    let engine = CommandEngine(keyspace: Keyspace(initialCapacity: 16), reply: ReplyBuffer(), maxMemory: 4096)
    let cut = run(chunks, stopping: stopping, engine: engine)
    guard whole == cut else {
        fail("stream of \(stream.count) bytes, reads \(cuts), stopping \(stopping): \(whole.count) frames in one read, \(cut.count) when cut")
    }
    for case .request(let args) in whole where args.count <= limits.maxArguments && args.allSatisfy({ $0.count <= limits.maxBulk }) {
        let again = encode(args)
        guard again.count <= limits.maxRequest else { continue }
        guard run([again[...]], stopping: false, engine: nil) == [.request(args)] else { fail("re-encoded request parses differently") }
    }
    return 0
}
