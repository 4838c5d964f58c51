import Glibc

/// The bytes a connection's peer has not taken yet.
///
/// A connection has one only after a short write, and gives it back when it drains (see
/// `OutputBufferPool`): idle connections and connections that keep up own no output memory.
@usableFromInline
final class OutputBuffer {
    @usableFromInline var storage: UnsafeMutableRawPointer
    @usableFromInline var capacity: Int
    @usableFromInline var head = 0
    @usableFromInline var tail = 0

@usableFromInline
    init(capacity: Int) {
        self.capacity = capacity
        storage = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
    }

    deinit { storage.deallocate() }

    @usableFromInline var count: Int { tail - head }
@usableFromInline
    var isEmpty: Bool { head == tail }

    /// The bytes still to send.
@usableFromInline
    var unsent: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: storage + head, count: tail - head) }

@usableFromInline
    func append(_ bytes: UnsafeRawBufferPointer) {
        guard let source = bytes.baseAddress, !bytes.isEmpty else { return }
        if tail + bytes.count > capacity {
            let live = count
            if live + bytes.count <= capacity {
                // Enough room once the sent prefix is dropped.
                memmove(storage, storage + head, live)
            } else {
                var newCapacity = capacity
                while newCapacity < live + bytes.count { newCapacity *= 2 }
                let grown = UnsafeMutableRawPointer.allocate(byteCount: newCapacity, alignment: 16)
                grown.copyMemory(from: storage + head, byteCount: live)
                storage.deallocate()
                storage = grown
                capacity = newCapacity
            }
            head = 0
            tail = live
        }
        (storage + tail).copyMemory(from: source, byteCount: bytes.count)
        tail += bytes.count
    }

    /// Drops `n` bytes the kernel took.
@usableFromInline
    func consume(_ n: Int) {
        head += n
        if head == tail { head = 0; tail = 0 }
    }
}

/// A few drained output buffers kept for reuse, so a connection that keeps having short writes
/// does not cost a malloc and a free each time.
@usableFromInline
struct OutputBufferPool {
    /// Why 16 KiB: it holds a typical burst (a few pipelined messages, or a 16 KiB TLS-record-sized
    /// chunk) without growing, and 64 idle pooled buffers then cost at most 1 MiB per reactor.
    static let initialCapacity = 16 * 1024
    /// Why 64: enough that steady partial writes on many connections hit the pool; few enough that
    /// the pool's memory stays small next to the connections themselves.
    static let maxPooled = 64

    @usableFromInline var free: [OutputBuffer] = []

@usableFromInline
    init() { free.reserveCapacity(Self.maxPooled) }

@usableFromInline
    mutating func take() -> OutputBuffer {
        free.popLast() ?? OutputBuffer(capacity: Self.initialCapacity)
    }

@usableFromInline
    mutating func give(_ buffer: OutputBuffer) {
        // Grown buffers go back to malloc: memory follows activity.
        guard free.count < Self.maxPooled, buffer.capacity == Self.initialCapacity else { return }
        buffer.head = 0
        buffer.tail = 0
        free.append(buffer)
    }
}
