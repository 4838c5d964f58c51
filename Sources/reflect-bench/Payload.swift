import Glibc

/// The bytes every connection sends, made once before the run.
///
/// A connection's outgoing stream is a window onto one long pseudo-random pattern that repeats
/// every `period` bytes: byte `p` of the stream is `pattern[(start + p) % period]`, and each
/// connection starts somewhere else. So the echo of any byte can be checked with one `memcmp`
/// against the pattern, and a byte that comes back corrupted, out of order, or on the wrong
/// connection does not match. Sending and checking never allocate: both point into the pattern.
///
/// The pattern is stored with its first `pad` bytes repeated after its end, so any run of up to
/// `pad` bytes from any offset is contiguous.
///
/// Two kinds of pattern (`--payload`): `binary` (the default) has every byte value, `\n`, `\r`,
/// `e` and NUL included, except that `exit` never occurs in it, read cyclically, so no stream
/// cut from it holds an exit line (`exit\n` or `exit\r\n` at a line start) that would make
/// reflectd close; `text` is lines from an alphabet with no `e`.
struct Payload {
    /// The pattern, `period + pad` bytes.
    let bytes: UnsafeMutablePointer<UInt8>
    let period: Int
    let pad: Int
    /// Length of one message.
    let messageSize: Int
    /// How many different messages there are (lines mode), or 0 for a free-running stream.
    let variants: Int

    private static let alphabet = Array("ABCDFGHIJKLMNOPQRSTUVWXYZ0123456789abcdfghjklmnopqrsuvwyz+/".utf8)

    /// Lines: `variants` different messages of `size` bytes, each ending in `\n`, sent one after
    /// the other. Message `k` of a connection is variant `(first + k) % variants`, so two
    /// messages that swap places do not match.
    static func lines(size: Int, pad: Int) -> Payload {
        // Why 251: a prime, so consecutive connections and messages cycle through every
        // variant; capped so large messages do not make a large pattern.
        let variants = max(2, min(251, (8 << 20) / size))
        let period = variants * size
        let bytes = allocate(period: period, pad: pad)
        var rng = SplitMix(seed: 0x5EED_F00D)
        for v in 0..<variants {
            let message = bytes + v * size
            for j in 0..<(size - 1) { message[j] = alphabet[Int(rng.next() % UInt64(alphabet.count))] }
            message[size - 1] = UInt8(ascii: "\n")
        }
        repeatHead(bytes, period: period, pad: pad)
        return Payload(bytes: bytes, period: period, pad: pad, messageSize: size, variants: variants)
    }

    /// A stream of text lines of random length (1 to 200 bytes), cut into `size`-byte messages
    /// with no regard for line ends (bulk transfer).
    static func stream(size: Int, pad: Int) -> Payload {
        // Why this period: about 1 MiB (stays in cache), and prime, so that it is not a multiple
        // of any message size and every chunk of a long transfer is different.
        let period = 1_048_573
        let bytes = allocate(period: period, pad: pad)
        var rng = SplitMix(seed: 0xB01_D0C)
        var lineLeft = 0
        for i in 0..<period {
            if lineLeft == 0 {
                bytes[i] = UInt8(ascii: "\n")
                lineLeft = 1 + Int(rng.next() % 200)
            } else {
                bytes[i] = alphabet[Int(rng.next() % UInt64(alphabet.count))]
                lineLeft -= 1
            }
        }
        repeatHead(bytes, period: period, pad: pad)
        return Payload(bytes: bytes, period: period, pad: pad, messageSize: size, variants: 0)
    }

    /// A stream of pseudo-random bytes of every value, cut into `size`-byte messages (every
    /// scenario). Any `exit` in the pattern, including one that wraps around its end, is broken
    /// by replacing its `t` with NUL, which cannot start or extend another `exit`. Prefixes of
    /// it (`e`, `ex`, `exi`) stay, at line starts and at message ends too: a server that holds
    /// them back (reflectd's exit-line hold) shows as messages slower than the hold.
    static func binary(size: Int, pad: Int) -> Payload {
        // Why this period: as for `stream`, about 1 MiB and prime.
        let period = 1_048_573
        let bytes = allocate(period: period, pad: pad)
        var rng = SplitMix(seed: 0xB1_0A_7E5)
        var i = 0
        while i < period {
            var word = rng.next()
            for _ in 0..<8 where i < period {
                bytes[i] = UInt8(truncatingIfNeeded: word)
                word >>= 8
                i += 1
            }
        }
        breakExit(bytes, period: period)
        repeatHead(bytes, period: period, pad: pad)
        return Payload(bytes: bytes, period: period, pad: pad, messageSize: size, variants: 0)
    }

    /// Given bytes (`--message`, `--payload-file`) sent cyclically as every connection's stream,
    /// cut into messages of `size` bytes: for `--message` the size is its length, so every
    /// message is the message; for `--payload-file` it is `--size` (by default the file's
    /// length), so message boundaries fall every `size` bytes of the repeating file, wherever
    /// they land in it. The bytes are sent as they are: no `exit` is broken (see `binary`), so a
    /// file holding an exit line makes reflectd close the connection unless it runs with
    /// `--exit-line off`. When the size is the period, every message is the same, and a server
    /// that swaps two messages goes unseen; one that corrupts, drops or adds bytes does not.
    static func given(_ stream: [UInt8], size: Int, pad: Int) -> Payload {
        let period = stream.count
        let bytes = allocate(period: period, pad: pad)
        for (i, b) in stream.enumerated() { bytes[i] = b }
        repeatHead(bytes, period: period, pad: pad)
        // One variant: every connection's stream starts at the first byte.
        return Payload(bytes: bytes, period: period, pad: pad, messageSize: size, variants: 1)
    }

    /// The word no binary pattern contains, cyclically.
    static let exitWord: [UInt8] = Array("exit".utf8)

    /// Replaces the `t` of every `exit` in the cyclic pattern `bytes[0 ..< period]` with NUL.
    static func breakExit(_ bytes: UnsafeMutablePointer<UInt8>, period: Int) {
        guard period >= exitWord.count else { return }
        for i in 0..<period where bytes[i] == exitWord[0] {
            if bytes[(i + 1) % period] == exitWord[1] && bytes[(i + 2) % period] == exitWord[2]
                && bytes[(i + 3) % period] == exitWord[3] {
                bytes[(i + 3) % period] = 0
            }
        }
    }

    private static func allocate(period: Int, pad: Int) -> UnsafeMutablePointer<UInt8> {
        UnsafeMutablePointer<UInt8>.allocate(capacity: period + pad)
    }

    private static func repeatHead(_ bytes: UnsafeMutablePointer<UInt8>, period: Int, pad: Int) {
        for i in 0..<pad { bytes[period + i] = bytes[i % period] }
    }

    /// Where the stream of the `n`th connection made begins in the pattern.
    func start(forConnection n: Int) -> Int {
        if variants > 0 { return (n % variants) * messageSize }
        // Why 104,729: a prime far from the period, so neighbouring connections start far apart.
        return (n &* 104_729) % period
    }

    /// Bytes `position ..< position + count` of a stream (positions are `start + offset`),
    /// in contiguous pieces of at most `pad` bytes.
    @inline(__always)
    func piece(at position: Int, count: Int) -> UnsafeRawBufferPointer {
        let offset = position % period
        return UnsafeRawBufferPointer(start: bytes + offset, count: min(count, pad))
    }

    /// The first index in `received` that differs from the stream at `position`, or nil.
    @inline(__always)
    func firstMismatch(_ received: UnsafeRawBufferPointer, at position: Int) -> Int? {
        var checked = 0
        while checked < received.count {
            let expected = piece(at: position + checked, count: received.count - checked)
            if memcmp(received.baseAddress! + checked, expected.baseAddress!, expected.count) != 0 {
                for j in 0..<expected.count where received[checked + j] != expected[j] { return checked + j }
            }
            checked += expected.count
        }
        return nil
    }

    /// The byte the stream has at `position`.
    func expectedByte(at position: Int) -> UInt8 { bytes[position % period] }
}

/// A small fast pseudo-random generator (SplitMix64): the pattern is the same in every run.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
