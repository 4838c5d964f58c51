/// What a ``RequestFramer`` hands to its caller, in stream order.
public enum Frame {
    case request(Request)
    /// The stream broke the protocol here; nothing after it is parsed.
    case failure(ProtocolError)
}

/// What the caller of ``RequestFramer/feed(_:scratch:_:)`` wants after each frame.
public enum FrameVerdict {
    /// Go on with the next request.
    case `continue`
    /// Stop here and keep the rest of the input for ``RequestFramer/resume(scratch:_:)``
    /// (the peer is behind on its replies).
    case stop
    /// Drop the rest: the connection is closing.
    case close
}

/// How a feed ended.
public enum FeedResult: Equatable {
    /// Every complete request was handed on; an unfinished one is kept for the next feed.
    case needMore
    /// The caller said ``FrameVerdict/stop``; the unprocessed bytes are kept.
    case stopped
    /// The caller said ``FrameVerdict/close``, or the stream broke the protocol.
    case closed
}

/// The per-reactor scratch lists the parser fills: one per thread, reused for every request.
public final class ParserScratch {
    // Used by one thread, and never re-entrantly: no dynamic exclusivity checks.
    @exclusivity(unchecked) public var spans = IntList()
    @exclusivity(unchecked) public var decoded = ByteList()
    public let limits: RequestLimits

    public init(limits: RequestLimits) { self.limits = limits }

    deinit {
        spans.free()
        decoded.free()
    }
}

/// The bytes a connection sent that are not yet handed on, and the parsed arguments of the
/// unfinished request among them.
public final class Stash {
    @usableFromInline var bytes = ByteList()
    @usableFromInline var spans = IntList()
    @usableFromInline init() {}

    deinit {
        bytes.free()
        spans.free()
    }
}

/// Cuts one connection's byte stream into requests, whatever the reads' boundaries.
///
/// The common case costs no copy: requests complete inside one read are parsed and handed on
/// straight from the read buffer. Only the unfinished tail of a read is copied, into a
/// ``Stash`` that exists only while there is one, so an idle connection owns no heap memory
/// here. The next read is appended to the stash and the parser resumes where it stopped.
public struct RequestFramer {
    public var parser = RequestParser()
    public internal(set) var stash: Stash?

    public init() {}

    /// Bytes received and kept (an unfinished request, or requests left after a stop).
    public var stashedBytes: Int { stash?.bytes.count ?? 0 }

    /// Hands every complete request in the stream so far to `body`, in order.
    @inlinable
    public mutating func feed(_ bytes: UnsafeRawBufferPointer, scratch: ParserScratch,
                              _ body: (Frame) -> FrameVerdict) -> FeedResult {
        if let stash {
            stash.bytes.append(bytes)
            return drainStash(stash, scratch: scratch, body)
        }
        var offset = 0
        while offset < bytes.count {
            let rest = UnsafeRawBufferPointer(rebasing: bytes[offset...])
            switch parser.parse(rest, spans: &scratch.spans, decoded: &scratch.decoded, limits: scratch.limits) {
            case .request(let consumed, let inline):
                offset += consumed
                switch body(.request(Self.request(inline ? scratch.decoded.bytes : rest, scratch))) {
                case .continue: continue
                case .stop:
                    keep(UnsafeRawBufferPointer(rebasing: bytes[offset...]), scratch: scratch)
                    return .stopped
                case .close: return .closed
                }
            case .empty(let consumed):
                offset += consumed
            case .incomplete:
                keep(rest, scratch: scratch)
                return .needMore
            case .failure(let error):
                _ = body(.failure(error))
                return .closed
            }
        }
        return .needMore
    }

    /// Goes on after a ``FrameVerdict/stop`` with the bytes kept then.
    @inlinable
    public mutating func resume(scratch: ParserScratch, _ body: (Frame) -> FrameVerdict) -> FeedResult {
        guard let stash else { return .needMore }
        return drainStash(stash, scratch: scratch, body)
    }

    /// Starts a stash with `rest`, and the arguments already parsed of its unfinished request.
    @usableFromInline
    mutating func keep(_ rest: UnsafeRawBufferPointer, scratch: ParserScratch) {
        guard !rest.isEmpty else { return }
        let stash = Stash()
        stash.bytes.append(rest)
        swap(&stash.spans, &scratch.spans)
        self.stash = stash
    }

    @usableFromInline
    mutating func drainStash(_ stash: Stash, scratch: ParserScratch, _ body: (Frame) -> FrameVerdict) -> FeedResult {
        // The unfinished request's arguments go back to the parser (a swap, not a copy: a
        // request of a million arguments arriving in many reads is not copied per read).
        swap(&stash.spans, &scratch.spans)
        var offset = 0
        var result = FeedResult.needMore
        loop: while offset < stash.bytes.count {
            let all = stash.bytes.bytes
            let rest = UnsafeRawBufferPointer(rebasing: all[offset...])
            switch parser.parse(rest, spans: &scratch.spans, decoded: &scratch.decoded, limits: scratch.limits) {
            case .request(let consumed, let inline):
                offset += consumed
                switch body(.request(Self.request(inline ? scratch.decoded.bytes : rest, scratch))) {
                case .continue: continue
                case .stop:
                    result = .stopped
                    break loop
                case .close:
                    self.stash = nil
                    return .closed
                }
            case .empty(let consumed):
                offset += consumed
            case .incomplete:
                swap(&stash.spans, &scratch.spans)
                break loop
            case .failure(let error):
                self.stash = nil
                _ = body(.failure(error))
                return .closed
            }
        }
        if offset == stash.bytes.count {
            self.stash = nil  // frees it: memory follows activity
        } else if offset > 0 {
            if stash.bytes.capacity > 256 * 1024 && stash.bytes.count - offset < stash.bytes.capacity / 4 {
                // What is left is small next to what a big request needed: give that memory back.
                let smaller = Stash()
                smaller.bytes.append(UnsafeRawBufferPointer(rebasing: stash.bytes.bytes[offset...]))
                swap(&smaller.spans, &stash.spans)
                self.stash = smaller
            } else {
                stash.bytes.removeFirst(offset)
            }
        }
        return result
    }

    @inlinable
    static func request(_ base: UnsafeRawBufferPointer, _ scratch: ParserScratch) -> Request {
        // An inline request of empty quoted strings ("" "") decodes to no bytes at all.
        Request(base: base.baseAddress ?? UnsafeRawPointer(bitPattern: 0x10)!,
                spans: UnsafePointer(scratch.spans.base!), count: scratch.spans.count / 2)
    }
}
