import CEpoll
import Glibc

/// A bounded in-memory queue of log lines, drained to a file descriptor (stderr) by one writer
/// thread, so that no other thread ever waits on the log's reader.
///
/// A line that does not fit is dropped and counted, as HAProxy does: a reader that stops reading
/// (a full pipe, a paused `| tee`, journald under pressure, a full disk behind a log shipper) costs
/// log lines, never service. When the writer can write again it reports how many lines were lost
/// (`N log lines dropped`), and ``droppedTotal`` keeps the count for metrics.
///
/// Lines are copied into one ring buffer allocated at creation; a producer takes a mutex only to
/// copy its bytes in (no system call, unless the writer sleeps and must be woken).
public final class LogQueue: @unchecked Sendable {
    /// Why 1 MiB: at about 100 bytes a line it holds some 10,000 lines, the open and close lines of
    /// 5,000 connections, so a reader that pauses for a few seconds (a log shipper's flush, a
    /// terminal scrolled back) loses nothing; and it is a fixed cost of the process, the same as
    /// the output buffers of 16 clients at the 64 KiB high watermark.
    public static let defaultCapacity = 1 << 20

    /// Why 16: a race with another writer of the same pipe fails once or twice; an error that
    /// lasts (a full disk) should cost 16 calls per chunk, not a spinning thread.
    static let attemptsPerChunk = 16

    /// The writer thread's name (`top -H`, `/proc/PID/task/TID/comm`).
    static let threadName = "log-writer"

    /// Where the lines go.
    public let fd: CInt
    /// Names the process in the drop report.
    public let label: String
    private let capacity: Int
    private let ring: UnsafeMutableRawPointer
    // All below are guarded by `mutex`.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    /// Signalled when lines arrive (the writer waits on it) and when the queue drains (flush waits).
    private let changed: UnsafeMutablePointer<pthread_cond_t>
    private var head = 0
    private var count = 0
    private var droppedSinceReport = 0
    private var dropped = 0
    private var writerIdle = true
    /// ``start()`` was called.
    private var wanted = false
    /// The writer thread was created (or its creation failed).
    private var started = false
    /// The CPU affinity of the thread that called ``start()`` (the kernel's mask, one bit per CPU;
    /// empty if unknown). The writer is created by whichever thread logs first, and a new thread
    /// inherits its creator's affinity: a reactor pinned to one core would get the writer on it.
    private var affinity: [UInt8] = []

    /// Creates a queue for `fd` holding at most `capacity` bytes of lines. Call ``start()`` to
    /// begin writing; lines queued before that wait for it.
    public init(fd: CInt = 2, capacity: Int = LogQueue.defaultCapacity, label: String = "log") {
        precondition(capacity > 0, "capacity must be positive")
        self.fd = fd
        self.label = label
        self.capacity = capacity
        ring = .allocate(byteCount: capacity, alignment: 16)
        mutex = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        changed = .allocate(capacity: 1)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(changed, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    // The writer thread holds the queue for the life of the process: it is never deallocated
    // while the writer runs.
    deinit {
        pthread_cond_destroy(changed)
        changed.deallocate()
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        ring.deallocate()
    }

    /// Lines dropped because the queue was full, since the queue was created.
    public var droppedTotal: Int { locked { dropped } }

    /// Bytes waiting to be written.
    public var pendingBytes: Int { locked { count } }

    /// Starts writing (once): the writer thread is created with the first line queued, or at once
    /// if lines are already waiting. So a process that logs nothing (a server at `warning` with
    /// nothing to warn about) stays single-threaded: in a process with several threads the kernel
    /// takes and drops a reference on the file of every fd passed to a system call (`fdget`), and
    /// an idle second thread cost the C epoll server 2 % more CPU per connect/echo/close cycle
    /// (median of 12 alternating pairs, 2026-12-07). The thread is created with every signal
    /// blocked, so signals reach the threads that handle them, never the writer.
    public func start() {
        var mask = [UInt8](repeating: 0, count: 1024)
        let size = cepoll_getaffinity(0, &mask, mask.count)
        let create = locked { () -> Bool in
            if !wanted && size > 0 { affinity = Array(mask.prefix(size)) }
            wanted = true
            guard !started, count > 0 || droppedSinceReport > 0 else { return false }
            started = true
            return true
        }
        if create { createWriter() }
    }

    private func createWriter() {
        var all = sigset_t()
        var previous = sigset_t()
        sigfillset(&all)
        pthread_sigmask(SIG_SETMASK, &all, &previous)
        defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
        let box = Unmanaged.passRetained(self).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { argument in
            let queue = Unmanaged<LogQueue>.fromOpaque(argument!).takeRetainedValue()
            _ = cepoll_name_thread(LogQueue.threadName)
            let affinity = queue.locked { queue.affinity }
            // Where the process runs, not where the thread that logged first was pinned.
            if !affinity.isEmpty { _ = cepoll_setaffinity(0, affinity, affinity.count) }
            queue.writeForever()
            return nil
        }, box)
        if rc != 0 {
            // No thread: nothing will ever drain the queue. Lines keep being dropped and counted.
            Unmanaged<LogQueue>.fromOpaque(box).release()
            return
        }
        pthread_detach(thread)
    }

    /// Queues one line (its bytes, newline included). Never blocks on the reader: returns false,
    /// and counts the line as dropped, when it does not fit.
    @discardableResult
    public func enqueue(_ line: UnsafeRawBufferPointer) -> Bool {
        guard !line.isEmpty else { return true }
        pthread_mutex_lock(mutex)
        let create = wanted && !started
        if create { started = true }
        let fits = line.count <= capacity - count
        if fits {
            let tail = (head + count) % capacity
            let first = min(line.count, capacity - tail)
            (ring + tail).copyMemory(from: line.baseAddress!, byteCount: first)
            if first < line.count {
                ring.copyMemory(from: line.baseAddress! + first, byteCount: line.count - first)
            }
            count += line.count
            if writerIdle { pthread_cond_broadcast(changed) }
        } else {
            droppedSinceReport += 1
            dropped += 1
        }
        pthread_mutex_unlock(mutex)
        if create { createWriter() }
        return fits
    }

    /// Queues the UTF-8 bytes of `line`.
    @discardableResult
    public func enqueue(_ line: String) -> Bool {
        var line = line
        return line.withUTF8 { enqueue(UnsafeRawBufferPointer($0)) }
    }

    /// Waits until everything queued is written (and any drop report with it), or `timeout`
    /// passes. Returns true if the queue drained. For the end of the process: a stalled reader
    /// delays the exit by at most `timeout`.
    @discardableResult
    public func flush(timeout: Duration) -> Bool {
        let (seconds, attoseconds) = timeout.components
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let total = Int64(now.tv_nsec) + attoseconds / 1_000_000_000
        var deadline = timespec(tv_sec: now.tv_sec + Int(seconds) + Int(total / 1_000_000_000),
                                tv_nsec: Int(total % 1_000_000_000))
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        guard started else { return count == 0 }
        while count > 0 || droppedSinceReport > 0 || !writerIdle {
            if pthread_cond_timedwait(changed, mutex, &deadline) != 0 {
                return count == 0 && droppedSinceReport == 0
            }
        }
        return true
    }

    // MARK: the writer thread

    private func writeForever() {
        while true {
            // Take the oldest contiguous run of bytes. Producers only write into the free part of
            // the ring, so these bytes can be written without holding the lock.
            pthread_mutex_lock(mutex)
            while count == 0 && droppedSinceReport == 0 {
                writerIdle = true
                pthread_cond_broadcast(changed)  // for flush()
                pthread_cond_wait(changed, mutex)
            }
            writerIdle = false
            let start = head
            let length = min(count, capacity - head)
            pthread_mutex_unlock(mutex)

            // A chunk that ends at the ring's end may end inside a line; the report waits for the
            // rest of that line, so that it never lands in the middle of one.
            var atLineEnd = true
            if length > 0 {
                atLineEnd = ring.load(fromByteOffset: start + length - 1, as: UInt8.self) == 10
                let written = writeAll(UnsafeRawBufferPointer(start: ring + start, count: length))
                locked {
                    if !written {
                        // The fd is gone (closed, an error): these lines are lost; count them.
                        let lost = UnsafeRawBufferPointer(start: ring + start, count: length).reduce(0) { $0 + ($1 == 10 ? 1 : 0) }
                        dropped += lost
                    }
                    head = (head + length) % capacity
                    count -= length
                }
            }
            // The reader took lines again: say how many it missed.
            let missed = locked { () -> Int in
                guard atLineEnd || count == 0 else { return 0 }
                defer { droppedSinceReport = 0 }
                return droppedSinceReport
            }
            if missed > 0 {
                _ = dropReport(missed).withUnsafeBytes { writeAll($0) }
            }
        }
    }

    private func dropReport(_ missed: Int) -> [UInt8] {
        Array("\(LogLineFormat.timestamp()) warning \(label): [NonBlockingLog] \(missed) log lines dropped (the log reader was too slow; the queue holds \(capacity / 1024) KiB)\n".utf8)
    }

    /// Writes everything, waiting in poll(2) while the fd is full (it may be non-blocking, shared
    /// with whoever set that). Returns false if the fd cannot take bytes any more.
    private func writeAll(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var offset = 0
        var failures = 0
        while offset < bytes.count {
            var pollFD = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            let ready = poll(&pollFD, 1, -1)
            if ready < 0 {  // EINTR: nothing is lost by asking again
                failures += 1
                if failures >= Self.attemptsPerChunk { return false }
                continue
            }
            if pollFD.revents & Int16(POLLERR | POLLNVAL) != 0 { return false }
            let n = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if n > 0 {
                offset += n
                failures = 0
            } else {
                // Writable by poll yet refused: EAGAIN (another writer filled the pipe after
                // poll) or EINTR, and then asking again works; or a lasting error (ENOSPC on a
                // full disk, EPIPE), and then asking again forever would spin.
                failures += 1
                if failures >= Self.attemptsPerChunk || pollFD.revents & Int16(POLLHUP) != 0 { return false }
            }
        }
        return true
    }

    private func locked<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }
}

/// The line format of swift-log's `StreamLogHandler`, so the output looks as it always did.
enum LogLineFormat {
    /// Local time as `2026-12-01T10:00:00+0000`.
    static func timestamp() -> String {
        var now = time(nil)
        var local = tm()
        guard localtime_r(&now, &local) != nil else { return "<unknown>" }
        return withUnsafeTemporaryAllocation(of: CChar.self, capacity: 64) { buffer in
            let n = strftime(buffer.baseAddress!, 64, "%Y-%m-%dT%H:%M:%S%z", &local)
            return String(decoding: UnsafeRawBufferPointer(start: buffer.baseAddress!, count: n), as: UTF8.self)
        }
    }
}
