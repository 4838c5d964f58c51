import Glibc

/// The limits a request must keep, each answered with `-ERR Protocol error: ...` and a close.
public struct RequestLimits: Sendable, Equatable {
    /// The longest line: an inline request, or a `*N` / `$N` header. Redis's
    /// `PROTO_INLINE_MAX_SIZE`. Checked on the line's length alone, so the verdict does not
    /// depend on how the line was split across reads.
    public static let maxLine = 64 * 1024
    /// The longest bulk string (`--max-bulk`; Redis's `proto-max-bulk-len` is 512 MB).
    public var maxBulk = 1 << 20
    /// The most arguments in one multibulk request (`*N`), as Redis before 7.0 had it.
    public var maxArguments = 1024 * 1024
    /// The most bytes in one request, headers included (`--max-request`). Without it, 1M
    /// arguments of `maxBulk` bytes each would be one legal request of a terabyte. Redis's
    /// nearest limit is `client-query-buffer-limit` (1 GB).
    public var maxRequest = 64 << 20

    public init(maxBulk: Int = 1 << 20, maxArguments: Int = 1024 * 1024, maxRequest: Int = 64 << 20) {
        self.maxBulk = maxBulk
        self.maxArguments = maxArguments
        self.maxRequest = maxRequest
    }
}

/// A request that breaks the protocol or a limit. ``message`` is the error text (Redis's own
/// where Redis has one); the server replies `-ERR` with it and closes the connection.
public enum ProtocolError: Error, Equatable, Sendable {
    case inlineTooLong
    case multibulkCountTooLong
    case bulkCountTooLong
    case invalidMultibulkLength
    case invalidBulkLength
    case expectedDollar(UInt8)
    case unbalancedQuotes
    /// A header line's `\r` is followed by something else than `\n` (Redis does not check).
    case missingLineFeed
    /// Bulk data is not followed by `\r\n` (Redis skips two bytes without looking).
    case missingBulkTerminator
    /// The request would pass ``RequestLimits/maxRequest`` bytes.
    case requestTooLarge(limit: Int)
    /// A NUL byte in an inline request. Redis searches inline lines as C strings, so such a line
    /// never ends for it (it waits for 64 KiB, then says "too big inline request"); binary
    /// data belongs in a multibulk request.
    case nulInInline

    public var message: String {
        switch self {
        case .inlineTooLong: return "Protocol error: too big inline request"
        case .multibulkCountTooLong: return "Protocol error: too big mbulk count string"
        case .bulkCountTooLong: return "Protocol error: too big bulk count string"
        case .invalidMultibulkLength: return "Protocol error: invalid multibulk length"
        case .invalidBulkLength: return "Protocol error: invalid bulk length"
        case .expectedDollar(let byte):
            let shown = (0x21...0x7E).contains(byte) ? String(UnicodeScalar(byte)) : (byte == 0x20 ? " " : "\\x" + String(byte, radix: 16))
            return "Protocol error: expected '$', got '\(shown)'"
        case .unbalancedQuotes: return "Protocol error: unbalanced quotes in request"
        case .missingLineFeed: return "Protocol error: expected '\\n' after '\\r'"
        case .missingBulkTerminator: return "Protocol error: expected '\\r\\n' after bulk data"
        case .requestTooLarge(let limit): return "Protocol error: request larger than \(limit) bytes"
        case .nulInInline: return "Protocol error: NUL byte in inline request"
        }
    }
}

/// One parsed request: its arguments, valid only during the call it is given to.
public struct Request {
    @usableFromInline let base: UnsafeRawPointer
    @usableFromInline let spans: UnsafePointer<Int>
    /// The number of arguments, command name included (at least 1).
    public let count: Int

    @inlinable init(base: UnsafeRawPointer, spans: UnsafePointer<Int>, count: Int) {
        self.base = base
        self.spans = spans
        self.count = count
    }

    /// Argument `i` (0 is the command name), binary safe.
    @inlinable
    public subscript(i: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base + spans[2 * i], count: spans[2 * i + 1])
    }
}

/// What one step of the parser found at the start of the input.
public enum ParseStep: Equatable {
    /// A whole request of `consumed` bytes; its arguments are in the scratch lists (offsets into
    /// the input for a multibulk request, into the decoded bytes for an inline one).
    case request(consumed: Int, inline: Bool)
    /// `consumed` bytes that hold no command: an empty inline line, `*0` or a negative count.
    case empty(consumed: Int)
    /// The input ends inside the request; call again with the same input and more after it.
    case incomplete
    case failure(ProtocolError)
}

/// A resumable RESP2 request parser (multibulk `*N\r\n$L\r\n...` and inline `CMD a b\r\n`).
///
/// The parser keeps only its position inside the request being parsed, so a request split
/// across reads is never parsed twice: call ``parse(_:spans:decoded:limits:)`` again with the
/// same request start and more bytes, and it goes on where it stopped. It follows Redis's
/// `processMultibulkBuffer` / `processInlineBuffer` (redis/src/networking.c) and
/// `sdssplitargs` (redis/src/sds.c), with two deliberate differences: every line limit is
/// checked on the line's own length (Redis checks how much is buffered, so its verdict depends
/// on the reads' sizes), `\r\n` after a header or bulk is checked, not skipped, and a NUL in an inline request is an
/// error (see ``ProtocolError/nulInInline``).
public struct RequestParser {
    @usableFromInline enum Kind: UInt8 { case none, multibulk, inline }
    @usableFromInline var kind = Kind.none
    /// Arguments announced by `*N` (0 while the header is unread).
    @usableFromInline var expected = 0
    /// Bytes of this request parsed so far.
    @usableFromInline var position = 0
    /// The length a `$N` header announced, or -1 before the next header.
    @usableFromInline var bulkLength = -1
    /// How far the current line has been searched for its end, so that a long line arriving in
    /// many reads is searched once.
    @usableFromInline var scanned = 0

    public init() {}

    /// True between requests.
    public var isIdle: Bool { kind == .none }

    @usableFromInline static let cr = UInt8(ascii: "\r")
    @usableFromInline static let lf = UInt8(ascii: "\n")

    @inlinable
    mutating func reset() {
        kind = .none
        expected = 0
        position = 0
        bulkLength = -1
        scanned = 0
    }

    /// Parses the request at the start of `input`. `spans` receives (offset, length) pairs of
    /// its arguments, and must be given back unchanged while the result is `.incomplete`.
    @inlinable
    public mutating func parse(_ input: UnsafeRawBufferPointer, spans: inout IntList, decoded: inout ByteList,
                               limits: RequestLimits) -> ParseStep {
        if kind == .none {
            guard !input.isEmpty else { return .incomplete }
            kind = input[0] == UInt8(ascii: "*") ? .multibulk : .inline
            spans.removeAll()
        }
        if kind == .multibulk { return parseMultibulk(input, spans: &spans, limits: limits) }
        return parseInline(input, spans: &spans, decoded: &decoded)
    }

    @usableFromInline enum Line { case found(Int), incomplete, tooLong, badTerminator }

    /// Finds the `\r\n` ending the header line that starts at `start`.
    @inlinable
    mutating func headerLine(_ input: UnsafeRawBufferPointer, start: Int) -> Line {
        let end = min(input.count, start + RequestLimits.maxLine + 1)
        let from = max(start, scanned)
        guard from < end, let found = memchr(input.baseAddress! + from, Int32(Self.cr), end - from) else {
            if input.count - start > RequestLimits.maxLine { return .tooLong }
            scanned = max(input.count, start)
            return .incomplete
        }
        let cr = input.baseAddress!.distance(to: UnsafeRawPointer(found))
        guard cr + 1 < input.count else {
            scanned = cr
            return .incomplete
        }
        guard input[cr + 1] == Self.lf else { return .badTerminator }
        scanned = 0
        return .found(cr)
    }

    @inlinable
    mutating func parseMultibulk(_ input: UnsafeRawBufferPointer, spans: inout IntList, limits: RequestLimits) -> ParseStep {
        if expected == 0 {
            switch headerLine(input, start: 0) {
            case .incomplete: return .incomplete
            case .tooLong: return .failure(.multibulkCountTooLong)
            case .badTerminator: return .failure(.missingLineFeed)
            case .found(let cr):
                guard let n = Integers.parse(UnsafeRawBufferPointer(rebasing: input[1..<cr])),
                      n <= Int64(limits.maxArguments) else { return .failure(.invalidMultibulkLength) }
                position = cr + 2
                if n <= 0 {
                    // Redis runs nothing for `*0` or `*-1`, and says nothing.
                    let consumed = position
                    reset()
                    return .empty(consumed: consumed)
                }
                expected = Int(n)
            }
        }
        while spans.count < 2 * expected {
            if bulkLength < 0 {
                switch headerLine(input, start: position) {
                case .incomplete: return .incomplete
                case .tooLong: return .failure(.bulkCountTooLong)
                case .badTerminator: return .failure(.missingLineFeed)
                case .found(let cr):
                    let first = input[position]
                    guard first == UInt8(ascii: "$") else { return .failure(.expectedDollar(first)) }
                    guard let n = Integers.parse(UnsafeRawBufferPointer(rebasing: input[(position + 1)..<cr])),
                          n >= 0, n <= Int64(limits.maxBulk) else { return .failure(.invalidBulkLength) }
                    position = cr + 2
                    bulkLength = Int(n)
                    guard position + bulkLength + 2 <= limits.maxRequest else {
                        return .failure(.requestTooLarge(limit: limits.maxRequest))
                    }
                }
            }
            let end = position + bulkLength
            guard end + 2 <= input.count else { return .incomplete }
            guard input[end] == Self.cr, input[end + 1] == Self.lf else { return .failure(.missingBulkTerminator) }
            spans.append(position, bulkLength)
            position = end + 2
            bulkLength = -1
        }
        let consumed = position
        reset()
        return .request(consumed: consumed, inline: false)
    }

    @inlinable
    mutating func parseInline(_ input: UnsafeRawBufferPointer, spans: inout IntList, decoded: inout ByteList) -> ParseStep {
        // A line of maxLine bytes may still be followed by `\r\n`: search maxLine + 2 bytes.
        let end = min(input.count, RequestLimits.maxLine + 2)
        let from = scanned
        guard from < end, let found = memchr(input.baseAddress! + from, Int32(Self.lf), end - from) else {
            if input.count >= RequestLimits.maxLine + 2 { return .failure(.inlineTooLong) }
            scanned = input.count
            return .incomplete
        }
        let newline = input.baseAddress!.distance(to: UnsafeRawPointer(found))
        var lineEnd = newline
        if newline > 0 && input[newline - 1] == Self.cr { lineEnd -= 1 }
        guard lineEnd <= RequestLimits.maxLine else { return .failure(.inlineTooLong) }
        if lineEnd > 0 && memchr(input.baseAddress!, 0, lineEnd) != nil { return .failure(.nulInInline) }
        guard InlineArguments.split(UnsafeRawBufferPointer(rebasing: input[..<lineEnd]), into: &decoded, spans: &spans) else {
            return .failure(.unbalancedQuotes)
        }
        reset()
        return spans.count == 0 ? .empty(consumed: newline + 1) : .request(consumed: newline + 1, inline: true)
    }
}
