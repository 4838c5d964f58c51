/// `--message TEXT`: the escapes a shell cannot pass as bytes of an argument.
///
/// `\n` (LF), `\r` (CR), `\t` (TAB), `\\` (one backslash) and `\xNN` (the byte 0xNN, two hex
/// digits) are replaced; every other character is sent as its UTF-8 bytes. A NUL byte cannot be
/// in an argument at all, so `\x00` is the only way to send one. Any other backslash is an error,
/// not a literal, so that a typo does not silently change what is measured.
enum Escapes {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    static func decode(_ text: String) throws(Failure) -> [UInt8] {
        let input = Array(text.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(input.count)
        var i = 0
        while i < input.count {
            let b = input[i]
            guard b == UInt8(ascii: "\\") else {
                out.append(b)
                i += 1
                continue
            }
            guard i + 1 < input.count else {
                throw Failure(description: "--message ends in a lone backslash (write \\\\ for one backslash)")
            }
            switch input[i + 1] {
            case UInt8(ascii: "n"): out.append(10); i += 2
            case UInt8(ascii: "r"): out.append(13); i += 2
            case UInt8(ascii: "t"): out.append(9); i += 2
            case UInt8(ascii: "\\"): out.append(UInt8(ascii: "\\")); i += 2
            case UInt8(ascii: "x"):
                guard i + 3 < input.count, let high = hexValue(input[i + 2]), let low = hexValue(input[i + 3]) else {
                    let bad = String(decoding: input[i..<min(input.count, i + 4)], as: UTF8.self)
                    throw Failure(description: "--message has a bad escape \(bad) at byte \(i): \\x takes two hex digits (\\x00 … \\xff)")
                }
                out.append(high << 4 | low)
                i += 4
            default:
                let bad = String(decoding: input[i..<min(input.count, i + 2)], as: UTF8.self)
                throw Failure(description: "--message has an unknown escape \(bad) at byte \(i) (known: \\n \\r \\t \\\\ \\xNN)")
            }
        }
        return out
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
