// libFuzzer target for the upgrade's hand-over wire decoder (Sources/ZeroDropUpgrade: the
// header reader, the listener and connection records, HandOverStream), which reads bytes another
// process sent. Build and run with fuzz/run-upgrade.sh.
//
// Input layout: a sequence of messages, each a u16 little-endian length, a u8 fd count (mod 254,
// fake fd numbers: the stream never touches them), then that many bytes (fewer at the end of the
// input). The messages are fed to one HandOverStream in order.
//
// Checked for every input (a mismatch prints the case and traps, which libFuzzer reports):
// - the decoder throws or accepts, never traps (ASan and Swift's checks catch any bad read);
// - it holds no more bytes than it was given (output, state and records grow only by what came);
// - every fd given is in receivedFDs, so a caller can close them all on an error;
// - a stream that finished, encoded again from what it decoded, decodes to the same records.

import Glibc

private func fail(_ message: String) -> Never {
    fputs("upgrade wire fuzz mismatch: \(message)\n", stderr)
    fatalError("hand-over decoder disagrees with itself")
}

private func messages(_ input: [UInt8]) -> [(bytes: [UInt8], fds: [CInt])] {
    var result: [(bytes: [UInt8], fds: [CInt])] = []
    var i = 0
    var nextFD: CInt = 1000
    while i + 3 <= input.count {
        let length = Int(input[i]) | Int(input[i + 1]) << 8
        let fdCount = Int(input[i + 2]) % 254
        i += 3
        let end = min(input.count, i + length)
        let fds = (0..<fdCount).map { k in nextFD + CInt(k) }
        nextFD += CInt(fdCount)
        result.append((Array(input[i..<end]), fds))
        i = end
    }
    return result
}

/// The messages an old process would send for what `stream` decoded.
private func reencode(_ stream: HandOverStream) -> [(bytes: [UInt8], fds: [CInt])] {
    var out: [(bytes: [UInt8], fds: [CInt])] = []
    var l = UpgradeWriter(.listeners, count: stream.listeners.count)
    for record in stream.listeners { record.encode(into: &l) }
    out.append((l.bytes, stream.listeners.map(\.fd)))
    var c = UpgradeWriter(.connections, count: stream.connections.count)
    for record in stream.connections { record.encode(into: &c) }
    out.append((c.bytes, stream.connections.map(\.fd)))
    for (k, record) in stream.connections.enumerated() {
        if !record.stateInline {
            var s = UpgradeWriter(.connectionState, count: k)
            s.bytes += record.state
            out.append((s.bytes, []))
        }
        if !record.pending.isEmpty {
            var o = UpgradeWriter(.output, count: k)
            o.bytes += record.pending
            out.append((o.bytes, []))
        }
    }
    if !stream.processState.isEmpty {
        var s = UpgradeWriter(.processState)
        s.bytes += stream.processState
        out.append((s.bytes, []))
    }
    var end = UpgradeWriter(.end, count: stream.connections.count)
    end.u64(UInt64(stream.processState.count))
    out.append((end.bytes, []))
    return out
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = Array(UnsafeBufferPointer(start: data, count: size))
    let given = messages(input)
    var stream = HandOverStream()
    var fedFDs: [CInt] = []
    for message in given {
        fedFDs += message.fds
        do { try stream.feed(message.bytes, fds: message.fds) } catch { break }
    }
    if stream.receivedFDs != fedFDs { fail("receivedFDs \(stream.receivedFDs.count) != fed \(fedFDs.count)") }
    let bytesGiven = given.reduce(0) { $0 + $1.bytes.count }
    let held = stream.processState.count
        + stream.connections.reduce(0) { $0 + $1.pending.count + $1.state.count + $1.peer.count }
        + stream.listeners.reduce(0) { $0 + $1.address.count }
    if held > bytesGiven { fail("holds \(held) bytes after being given \(bytesGiven)") }
    guard stream.finished else { return 0 }
    var again = HandOverStream()
    for message in reencode(stream) {
        do { try again.feed(message.bytes, fds: message.fds) } catch { fail("re-encoded stream refused: \(error)") }
    }
    if !again.finished || again.listeners != stream.listeners || again.connections != stream.connections
        || again.processState != stream.processState {
        fail("re-encoded stream decodes differently")
    }
    return 0
}
