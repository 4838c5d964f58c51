/// Sends a ``ReplyBuffer``'s bytes on when it fills up in the middle of one command's reply.
public protocol ReplyDrain: AnyObject {
    /// Takes (writes out) everything `reply` holds and empties it. Returns false when the
    /// connection can take no more (it is being closed): the command stops building its reply.
    func drain(_ reply: ReplyBuffer) -> Bool
}

/// The replies to one read's requests, built back to back and written with one system call.
///
/// One per reactor, reused for every read of every connection (replies are written out before
/// the next connection's read is handled), so pipelined replies cost no allocation and no
/// system call each. A reply that would make it pass ``drainThreshold`` (an `MGET` of large
/// values) is sent on in pieces through ``drain``, so it never holds more than about that much
/// plus one value.
public final class ReplyBuffer {
    /// Why 64 KiB: one write of that size is as cheap per byte as a larger one, and the
    /// reactor's high watermark is the same size.
    public static let drainThreshold = 64 * 1024

    // Used by one thread, and never re-entrantly: no dynamic exclusivity checks.
    @exclusivity(unchecked) public var bytes = ByteList()
    /// Where to send the bytes when a single reply grows past ``drainThreshold``.
    public unowned(unsafe) var drain: ReplyDrain?

    public init() { bytes.reserve(Self.drainThreshold + 1024) }
    deinit { bytes.free() }

    public var count: Int { bytes.count }
    public var isEmpty: Bool { bytes.count == 0 }
    public var isFull: Bool { bytes.count >= Self.drainThreshold }

    /// Passes the bytes to ``drain`` if they reached the threshold. False if it refused.
    @inline(__always)
    public func drainIfFull() -> Bool {
        guard isFull, let drain else { return true }
        return drain.drain(self)
    }

    @inline(__always)
    public func raw(_ text: StaticString) {
        bytes.append(UnsafeRawBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }

    /// `+OK\r\n`
    @inline(__always) public func ok() { raw("+OK\r\n") }
    /// `$-1\r\n`, the nil reply.
    @inline(__always) public func null() { raw("$-1\r\n") }

    /// `-ERR text\r\n` (or `-CODE text` when `text` starts with a code, as `OOM ...`).
    public func error(_ text: String) {
        bytes.append(UInt8(ascii: "-"))
        var text = text
        text.withUTF8 { bytes.append(UnsafeRawBufferPointer($0)) }
        raw("\r\n")
    }

    @inline(__always)
    public func integer(_ value: Int64) {
        let out = bytes.tail(reserving: 24)
        out.storeBytes(of: UInt8(ascii: ":"), as: UInt8.self)
        let n = Integers.format(value, into: out + 1)
        (out + 1 + n).storeBytes(of: UInt16(0x0A0D), as: UInt16.self)  // "\r\n", little endian
        bytes.commit(n + 3)
    }

    /// `$LEN\r\nBYTES\r\n`
    @inline(__always)
    public func bulk(_ value: UnsafeRawBufferPointer) {
        let out = bytes.tail(reserving: 24 + value.count)
        out.storeBytes(of: UInt8(ascii: "$"), as: UInt8.self)
        var n = 1 + Integers.format(Int64(value.count), into: out + 1)
        (out + n).storeBytes(of: UInt16(0x0A0D), as: UInt16.self)
        n += 2
        if let v = value.baseAddress { (out + n).copyMemory(from: v, byteCount: value.count) }
        n += value.count
        (out + n).storeBytes(of: UInt16(0x0A0D), as: UInt16.self)
        bytes.commit(n + 2)
    }

    /// `$LEN\r\nDIGITS\r\n`: an integer as a bulk string.
    public func bulk(_ text: String) {
        var text = text
        text.withUTF8 { bulk(UnsafeRawBufferPointer($0)) }
    }

    /// `*COUNT\r\n`, followed by that many replies.
    @inline(__always)
    public func array(_ count: Int) {
        let out = bytes.tail(reserving: 24)
        out.storeBytes(of: UInt8(ascii: "*"), as: UInt8.self)
        let n = Integers.format(Int64(count), into: out + 1)
        (out + 1 + n).storeBytes(of: UInt16(0x0A0D), as: UInt16.self)
        bytes.commit(n + 3)
    }
}
