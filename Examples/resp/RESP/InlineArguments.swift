import Glibc

/// Splits an inline request into arguments the way Redis's `sdssplitargs` (redis/src/sds.c)
/// does: blanks separate arguments; `"..."` understands `\n \r \t \b \a`, `\xHH` and `\c`
/// (any other character); `'...'` understands only `\'`; a closing quote must be followed by a
/// blank or the end. The line is a C string to Redis, so it ends at its first NUL byte (the
/// parser refuses such lines before they get here).
public enum InlineArguments {
    /// Appends the decoded arguments to `decoded` and their (offset, length) pairs to `spans`
    /// (both emptied first). Returns false for unbalanced quotes.
    @inlinable
    public static func split(_ line: UnsafeRawBufferPointer, into decoded: inout ByteList, spans: inout IntList) -> Bool {
        decoded.removeAll()
        spans.removeAll()
        var n = line.count
        if let base = line.baseAddress, n > 0, let nul = memchr(base, 0, n) {
            n = base.distance(to: UnsafeRawPointer(nul))
        }
        var p = 0
        while true {
            while p < n && isSpace(line[p]) { p += 1 }
            if p == n { return true }
            var inDouble = false, inSingle = false, done = false
            let start = decoded.count
            while !done {
                // `c == nil` is C's `*p == '\0'`: the end of the string.
                let c: UInt8? = p < n ? line[p] : nil
                if inDouble {
                    if c == UInt8(ascii: "\\") && p + 3 < n && line[p + 1] == UInt8(ascii: "x")
                        && isHex(line[p + 2]) && isHex(line[p + 3]) {
                        decoded.append(hex(line[p + 2]) << 4 | hex(line[p + 3]))
                        p += 3
                    } else if c == UInt8(ascii: "\\") && p + 1 < n {
                        p += 1
                        switch line[p] {
                        case UInt8(ascii: "n"): decoded.append(UInt8(ascii: "\n"))
                        case UInt8(ascii: "r"): decoded.append(UInt8(ascii: "\r"))
                        case UInt8(ascii: "t"): decoded.append(UInt8(ascii: "\t"))
                        case UInt8(ascii: "b"): decoded.append(0x08)
                        case UInt8(ascii: "a"): decoded.append(0x07)
                        default: decoded.append(line[p])
                        }
                    } else if c == UInt8(ascii: "\"") {
                        if p + 1 < n && !isSpace(line[p + 1]) { return false }
                        done = true
                    } else if let c {
                        decoded.append(c)
                    } else {
                        return false
                    }
                } else if inSingle {
                    if c == UInt8(ascii: "\\") && p + 1 < n && line[p + 1] == UInt8(ascii: "'") {
                        p += 1
                        decoded.append(UInt8(ascii: "'"))
                    } else if c == UInt8(ascii: "'") {
                        if p + 1 < n && !isSpace(line[p + 1]) { return false }
                        done = true
                    } else if let c {
                        decoded.append(c)
                    } else {
                        return false
                    }
                } else {
                    switch c {
                    case nil, UInt8(ascii: " "), UInt8(ascii: "\n"), UInt8(ascii: "\r"), UInt8(ascii: "\t"):
                        done = true
                    case UInt8(ascii: "\""): inDouble = true
                    case UInt8(ascii: "'"): inSingle = true
                    case let c?: decoded.append(c)
                    }
                }
                if p < n { p += 1 }
            }
            spans.append(start, decoded.count - start)
        }
    }

    /// C's `isspace` in the C locale.
    @inlinable static func isSpace(_ c: UInt8) -> Bool { c == 0x20 || (c >= 0x09 && c <= 0x0D) }
    @inlinable static func isHex(_ c: UInt8) -> Bool {
        (c >= 0x30 && c <= 0x39) || ((c | 0x20) >= 0x61 && (c | 0x20) <= 0x66)
    }
    @inlinable static func hex(_ c: UInt8) -> UInt8 { c <= 0x39 ? c - 0x30 : (c | 0x20) - 0x61 + 10 }
}
