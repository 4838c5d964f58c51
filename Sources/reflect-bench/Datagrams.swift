import Glibc
import Histogram
import Reactor

// UDP load (`--udp`): pingpong (each socket keeps --depth datagrams in flight, closed loop) and
// flood (datagrams go out at --rate in all, open loop, whatever comes back).
//
// Every datagram is `size` bytes: an 8-byte sequence number (little-endian, per socket) and then
// `size - 8` bytes of the payload pattern at the socket's stream position for that number, so an
// echo is checked byte-exact with one memcmp and cannot be taken for another datagram's. UDP may
// drop: a datagram not back within `Bench.stallNs(holdMs:)` (4 × --hold-ms, at least 1 s) is
// lost, counted, and not an error. A duplicate, a wrong length, wrong bytes, a sequence number
// never sent, or an echo from another address is an error.
//
// Nothing is allocated per datagram: the state of each datagram in flight lives in a ring per
// socket, sends go through one scratch buffer, and the Reactor receives into its own area.

/// The bytes before the payload in every datagram: the sequence number.
let datagramHeader = 8

/// Where a datagram of the ring stands.
enum DatagramState: UInt8 {
    case free, outstanding, echoed, lost
}

/// One UDP socket of a generator thread (a "connection" of the summary).
struct Flow {
    /// The next sequence number to send, and the lowest one not yet echoed or lost.
    var next = 0
    var oldest = 0
    /// Datagrams sent and neither echoed nor lost yet.
    var outstanding = 0
    /// Where this socket's stream starts in the payload pattern.
    var start = 0
}

/// One datagram of a ring: its number, state, when it was meant to go out and when it did, and
/// whether it was sent in the measured window (then its outcome counts in the summary).
struct InFlight {
    var seq = -1
    var state = DatagramState.free
    var measured = false
    var intended: UInt64 = 0
    var actual: UInt64 = 0
}

/// Receives the echoes of one socket.
final class FlowHandler: DatagramHandler {
    unowned(unsafe) let bench: DatagramBench
    let index: Int

    init(bench: DatagramBench, index: Int) {
        self.bench = bench
        self.index = index
    }

    func onDatagrams(_ batch: DatagramBatch) {
        let t = now()
        for i in 0..<batch.count { bench.received(batch.payload(i), from: batch.source(i), on: index, at: t) }
        bench.refill(index, at: t)
    }
}

/// The reactor of a UDP generator thread serves no TCP connection.
struct NoConnections: ConnectionHandler {}

/// One generator thread of a UDP run.
final class DatagramBench {
    let settings: Settings
    let board: Board
    let payload: Payload
    let size: Int
    let bodySize: Int
    /// Datagrams of a socket tracked at once, from its oldest unresolved one (sent, neither
    /// echoed nor lost) to its newest. Pingpong keeps --depth of them outstanding, but a lost
    /// one holds its place until the loss timeout, while the others go on: 1,024 places (or
    /// 4 × --depth) let a socket go on at up to ~1,000 lost datagrams per timeout. Flood: enough
    /// for 1.5 × the loss timeout at the socket's rate.
    let ring: Int
    /// Pingpong: datagrams in flight per socket (--depth).
    let depth: Int
    let timeoutNs: UInt64
    let holdNs: UInt64
    let flood: Bool
    let serverPort: Int
    let flows: UnsafeMutablePointer<Flow>
    let slots: UnsafeMutablePointer<InFlight>
    let scratch: UnsafeMutableRawPointer
    let hot: UnsafeMutablePointer<Hot>
    /// Counts of the datagrams sent in the measured window (outcomes included, whenever known).
    var measured = Counters()
    /// Latencies since the last progress line (any phase), and of the datagrams sent in the
    /// measured window.
    var interval = Run.emptyHistogram()
    var total = Run.emptyHistogram()
    var service = Run.emptyHistogram()
    unowned(unsafe) var reactor: Reactor<NoConnections>!
    var measureStart: UInt64 = 0
    var measureEnd: UInt64 = 0
    var draining = false
    var interrupted = false
    var paced = 0
    var lastSend: UInt64 = 0
    var openingSeconds = 0.0
    var bindFailures: [String: Int] = [:]

    init(settings: Settings, board: Board) {
        self.settings = settings
        self.board = board
        size = settings.size
        bodySize = settings.size - datagramHeader
        flood = settings.scenario == .flood
        timeoutNs = Bench.stallNs(holdMs: settings.holdMs)
        holdNs = UInt64(settings.holdMs) * 1_000_000
        serverPort = settings.address.port ?? 0
        if flood {
            let perSocket = (settings.rate ?? 1) / Double(max(1, settings.connections))
            // Why 1.5 × the timeout: a datagram's slot comes round again only after it was
            // resolved by the sweep, which runs every `sweepNs`. Capped (memory: 32 B a slot).
            ring = min(1 << 20, max(64, Int(perSocket * Double(timeoutNs) / 1e9 * 1.5) + 64))
        } else {
            ring = max(1024, 4 * settings.depth)
        }
        depth = max(1, settings.depth)
        let pad = max(64 * 1024, bodySize) + bodySize
        switch settings.payload {
        case _ where settings.message != nil: payload = Payload.given(settings.message!, size: bodySize, pad: pad)
        case .binary: payload = Payload.binary(size: bodySize, pad: pad)
        case .text: payload = Payload.lines(size: bodySize, pad: pad)
        }
        flows = .allocate(capacity: settings.connections)
        flows.initialize(repeating: Flow(), count: settings.connections)
        for c in 0..<settings.connections { flows[c].start = payload.start(forConnection: settings.firstConnection + c) }
        slots = .allocate(capacity: settings.connections * ring)
        slots.initialize(repeating: InFlight(), count: settings.connections * ring)
        scratch = .allocate(byteCount: max(size, 1), alignment: 8)
        hot = .allocate(capacity: 1)
        hot.initialize(to: Hot())
        if let rate = settings.rate { hot.pointee.schedule = Schedule(perSecond: rate) }
    }

    deinit {
        flows.deallocate()
        slots.deallocate()
        scratch.deallocate()
        hot.deallocate()
        payload.bytes.deallocate()
    }

    /// How often datagrams overdue are counted as lost (and pingpong sends their replacements).
    /// Why 50 ms: a small share of the 1 s minimum timeout, and cheap (it only looks at each
    /// socket's oldest datagrams).
    static let sweepNs: UInt64 = 50_000_000
    /// Flood: datagrams sent per pacer wake-up at most. Why 256: eight receive batches' worth
    /// (`DatagramBatch.capacity`), so a generator that falls behind still reads its echoes
    /// instead of only sending.
    static let paceBudget = 256

    // MARK: phases

    /// Binds the sockets, then warms up and measures.
    func start() {
        let begin = now()
        let local = settings.address.host.contains(":") ? "::" : "0.0.0.0"
        for c in 0..<settings.connections {
            let source = settings.sources.isEmpty ? try! SocketAddress(host: local, port: 0)
                : settings.sources[(settings.firstConnection + c) % settings.sources.count]
            do {
                _ = try reactor.bindDatagram(on: source, handler: FlowHandler(bench: self, index: c))
                hot.pointee.counters.connects += 1
            } catch {
                hot.pointee.counters.connectFailures += 1
                bindFailures[error.explanation, default: 0] += 1
                report("cannot bind a UDP socket on \(source): \(error)")
                finish()
                return
            }
        }
        hot.pointee.open = settings.connections
        openingSeconds = Double(now() - begin) / 1e9
        reactor.schedule(after: .seconds(1), repeating: .seconds(1)) { [unowned self] in self.tick() }
        reactor.schedule(after: .nanoseconds(Int64(Self.sweepNs)), repeating: .nanoseconds(Int64(Self.sweepNs))) { [unowned self] in
            self.sweep(at: now())
        }
        hot.pointee.phase = .warmup
        let t = now()
        if flood {
            hot.pointee.schedule.start = t
            pace()
        } else {
            for c in 0..<settings.connections { refill(c, at: t) }
        }
        if settings.warmup > 0 {
            reactor.schedule(after: .nanoseconds(Int64(settings.warmup * 1e9))) { [unowned self] in self.startMeasuring() }
        } else {
            startMeasuring()
        }
    }

    func startMeasuring() {
        guard hot.pointee.phase == .warmup else { return }
        hot.pointee.phase = .measuring
        measureStart = now()
        if flood {
            // The measured schedule begins now: what was due in the warm-up does not count as unsent.
            hot.pointee.schedule.start = measureStart
            paced = 0
        }
        reactor.schedule(after: .nanoseconds(Int64(settings.duration * 1e9))) { [unowned self] in self.stopSending() }
    }

    /// The measured window is over: nothing more is sent, and what is in flight has until the
    /// loss timeout to come back.
    func stopSending() {
        guard hot.pointee.phase == .measuring, !draining else { return }
        measureEnd = now()
        draining = true
        if flood {
            // Due more than the tolerance before the end and still not sent (the last pacer
            // wake-up may simply not have come yet for the very last ones).
            let missed = max(0, hot.pointee.schedule.due(at: measureEnd - min(measureEnd, lateToleranceNs)) - paced)
            measured.unsent += missed
            hot.pointee.counters.unsent += missed
        }
        drain()
    }

    /// Ends the run once every datagram is echoed or lost.
    func drain() {
        let t = now()
        sweep(at: t)
        var left = 0
        for c in 0..<settings.connections { left += flows[c].outstanding }
        if left == 0 || t > measureEnd + timeoutNs + Self.sweepNs {
            finish()
        } else {
            reactor.schedule(after: .milliseconds(5)) { [unowned self] in self.drain() }
        }
    }

    func finish() {
        guard hot.pointee.phase != .done else { return }
        if hot.pointee.phase == .measuring && measureEnd == 0 { measureEnd = now() }
        hot.pointee.phase = .done
        reactor.handle.stop()
    }

    func tick() {
        board.publish(settings.thread, Board.Snapshot(
            phase: hot.pointee.phase, counters: hot.pointee.counters, open: hot.pointee.open, interval: interval))
        interval.reset()
    }

    var result: ThreadResult {
        var r = ThreadResult(seconds: measureEnd > measureStart ? Double(measureEnd - measureStart) / 1e9 : 0,
                             measured: measured, whole: hot.pointee.counters, latency: total, service: service,
                             maxOpen: hot.pointee.open, interrupted: interrupted)
        r.openingSeconds = openingSeconds
        r.connectFailureReasons = bindFailures
        return r
    }

    var sending: Bool { (hot.pointee.phase == .warmup || hot.pointee.phase == .measuring) && !draining }

    // MARK: sending

    /// Sends the next datagram of socket `c`, meant to go out at `intended`; false if the
    /// socket's ring is full or the send buffer dropped it.
    @inline(__always)
    func send(_ c: Int, intended: UInt64, at t: UInt64) -> Bool {
        let flow = flows + c
        let seq = flow.pointee.next
        guard seq - flow.pointee.oldest < ring else { return false }
        var header = UInt64(seq).littleEndian
        withUnsafeBytes(of: &header) { scratch.copyMemory(from: $0.baseAddress!, byteCount: datagramHeader) }
        if bodySize > 0 {
            let body = payload.piece(at: flow.pointee.start + seq * bodySize, count: bodySize)
            (scratch + datagramHeader).copyMemory(from: body.baseAddress!, byteCount: bodySize)
        }
        guard reactor.sendDatagram(UnsafeRawBufferPointer(start: scratch, count: size), to: settings.address, from: c) else {
            return false
        }
        let measuring = hot.pointee.phase == .measuring
        slots[c * ring + seq % ring] = InFlight(seq: seq, state: .outstanding, measured: measuring, intended: intended, actual: t)
        flow.pointee.next = seq + 1
        flow.pointee.outstanding += 1
        hot.pointee.counters.sent &+= 1
        if measuring { measured.sent &+= 1 }
        lastSend = t
        return true
    }

    /// Pingpong: socket `c` sends until it has --depth datagrams unresolved.
    @inline(__always)
    func refill(_ c: Int, at t: UInt64) {
        guard !flood, sending else { return }
        while flows[c].outstanding < depth && flows[c].next - flows[c].oldest < ring {
            if !send(c, intended: t, at: t) {
                // A full send buffer: try again at the next sweep, not in a busy loop.
                hot.pointee.counters.unsent &+= 1
                if hot.pointee.phase == .measuring { measured.unsent &+= 1 }
                break
            }
        }
    }

    /// Flood: sends every datagram that has fallen due, round robin over the sockets, then
    /// sleeps until the next is due.
    func pace() {
        guard sending else { return }
        let t = now()
        let schedule = hot.pointee.schedule
        let due = schedule.due(at: t)
        let n = settings.connections
        // At most `paceBudget` sends per wake-up, so that echoes are read between them when the
        // generator cannot keep up (what is left goes out at once, late, and counts as such).
        let end = min(due, paced + Self.paceBudget)
        while paced < end {
            let intended = schedule.intended(paced)
            if !send(paced % n, intended: intended, at: t) {
                hot.pointee.counters.unsent &+= 1
                if hot.pointee.phase == .measuring { measured.unsent &+= 1 }
            } else if t > intended && t - intended > lateToleranceNs {
                hot.pointee.counters.late &+= 1
                hot.pointee.counters.lateGenerator &+= 1
                if hot.pointee.phase == .measuring { measured.late &+= 1; measured.lateGenerator &+= 1 }
            }
            paced += 1
        }
        if paced < due {
            reactor.schedule(after: .zero, paceAgain)
            return
        }
        let next = schedule.intended(due)
        let wait = max(pacingQuantumNs, next > t ? next - t : 0)
        reactor.schedule(after: .nanoseconds(Int64(wait)), paceAgain)
    }

    /// The pacer's timer body, made once: a closure made per wake-up would be an allocation per
    /// wake-up, which at low rates is one per datagram.
    lazy var paceAgain: () -> Void = { [unowned self] in self.pace() }

    // MARK: receiving

    /// One echoed datagram on socket `c`.
    @inline(__always)
    func received(_ bytes: UnsafeRawBufferPointer, from source: DatagramSource, on c: Int, at t: UInt64) {
        guard hot.pointee.phase != .done else { return }
        let flow = flows + c
        if source.port != serverPort {
            return error(c, "a datagram from port \(source.port), not the server's \(serverPort)")
        }
        guard bytes.count == size else {
            return error(c, "an echo of \(bytes.count) bytes, expected \(size)")
        }
        var raw: UInt64 = 0
        withUnsafeMutableBytes(of: &raw) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[0..<datagramHeader])) }
        let seq = Int(truncatingIfNeeded: UInt64(littleEndian: raw))
        guard seq >= 0, seq < flow.pointee.next else {
            return error(c, "an echo of datagram \(UInt64(littleEndian: raw)), which was never sent (\(flow.pointee.next) sent)")
        }
        if bodySize > 0 {
            let body = UnsafeRawBufferPointer(rebasing: bytes[datagramHeader...])
            if let at = payload.firstMismatch(body, at: flow.pointee.start + seq * bodySize) {
                let expected = payload.expectedByte(at: flow.pointee.start + seq * bodySize + at)
                return error(c, "byte \(datagramHeader + at) of the echo of datagram \(seq) is \(hex(body[at])), expected \(hex(expected))")
            }
        }
        let slot = slots + (c * ring + seq % ring)
        guard slot.pointee.seq == seq else {
            // Its slot has been reused: it was lost long ago (or echoed, and this is a duplicate
            // too old to tell).
            hot.pointee.counters.lateEchoes &+= 1
            return
        }
        if slot.pointee.state == .outstanding && t > slot.pointee.actual && t - slot.pointee.actual > timeoutNs {
            // Back after the loss timeout, before the sweep came round (a busy generator): lost,
            // as the rule says, whatever the order of the timers.
            slot.pointee.state = .lost
            flow.pointee.outstanding -= 1
            hot.pointee.counters.lost &+= 1
            hot.pointee.counters.lateEchoes &+= 1
            if slot.pointee.measured { measured.lost &+= 1; measured.lateEchoes &+= 1 }
            advance(c)
            return
        }
        switch slot.pointee.state {
        case .outstanding:
            slot.pointee.state = .echoed
            flow.pointee.outstanding -= 1
            let latency = t > slot.pointee.intended ? t - slot.pointee.intended : 0
            if !interval.record(latency) { interval.record(Bench.maxLatencyNs) }
            hot.pointee.counters.messages &+= 1
            hot.pointee.counters.bytes &+= size
            if latency > holdNs { hot.pointee.counters.overHold &+= 1 }
            if slot.pointee.measured {
                if !total.record(latency) { total.record(Bench.maxLatencyNs) }
                measured.messages &+= 1
                measured.bytes &+= size
                if latency > holdNs { measured.overHold &+= 1 }
                if flood {
                    let s = t > slot.pointee.actual ? t - slot.pointee.actual : 0
                    if !service.record(s) { service.record(Bench.maxLatencyNs) }
                }
            }
            advance(c)
        case .echoed:
            hot.pointee.counters.duplicates &+= 1
            if slot.pointee.measured { measured.duplicates &+= 1 }
            report("datagram \(seq) on socket \(c) came back twice")
        case .lost:
            hot.pointee.counters.lateEchoes &+= 1
            if slot.pointee.measured { measured.lateEchoes &+= 1 }
        case .free:
            break
        }
    }

    /// Moves socket `c`'s oldest cursor past the datagrams that are resolved.
    @inline(__always)
    func advance(_ c: Int) {
        let flow = flows + c
        while flow.pointee.oldest < flow.pointee.next {
            let state = slots[c * ring + flow.pointee.oldest % ring].state
            guard state == .echoed || state == .lost else { return }
            flow.pointee.oldest += 1
        }
    }

    /// Counts as lost every datagram not back within the timeout; pingpong sends new ones in
    /// their place.
    func sweep(at t: UInt64) {
        guard hot.pointee.phase != .done else { return }
        for c in 0..<settings.connections {
            let flow = flows + c
            while flow.pointee.oldest < flow.pointee.next {
                let slot = slots + (c * ring + flow.pointee.oldest % ring)
                if slot.pointee.state == .outstanding {
                    guard t > slot.pointee.actual && t - slot.pointee.actual > timeoutNs else { break }
                    slot.pointee.state = .lost
                    flow.pointee.outstanding -= 1
                    hot.pointee.counters.lost &+= 1
                    if slot.pointee.measured { measured.lost &+= 1 }
                }
                flow.pointee.oldest += 1
            }
            refill(c, at: t)
        }
    }

    func error(_ c: Int, _ what: String) {
        hot.pointee.counters.mismatches &+= 1
        if hot.pointee.phase == .measuring { measured.mismatches &+= 1 }
        report("mismatch on UDP socket \(c): \(what)")
    }

    func report(_ message: String) {
        let number = board.errorMessages.add(1, ordering: .relaxed).newValue
        if number <= Bench.maxErrorMessages {
            writeAll("reflect-bench: error: \(message)\n", to: 2)
        } else if number == Bench.maxErrorMessages + 1 {
            writeAll("reflect-bench: (further errors are only counted)\n", to: 2)
        }
    }
}

extension Run {
    /// One UDP generator thread: its reactor, until its run ends.
    static func runDatagramThread(_ settings: Settings, board: Board) {
        defer { _ = board.finished.add(1, ordering: .acquiringAndReleasing) }
        let bench = DatagramBench(settings: settings, board: board)
        var configuration = ReactorConfiguration()
        configuration.shutdownGrace = .seconds(1)
        configuration.logger.logLevel = .error
        let reactor: Reactor<NoConnections>
        do {
            reactor = try Reactor(handler: NoConnections(), configuration: configuration)
        } catch {
            board.results.withLock { $0[settings.thread] = failed("thread \(settings.thread + 1): cannot make a reactor: \(error)") }
            return
        }
        bench.reactor = reactor
        board.handles.withLock { $0[settings.thread] = reactor.handle }
        if board.stopRequested.load(ordering: .acquiring) {
            bench.interrupted = true
            reactor.handle.stop()
        }
        bench.start()
        reactor.run()
        if bench.hot.pointee.phase != .done { bench.interrupted = true }
        // Echoes the generator's own sockets had no room for (SO_RXQ_OVFL): loss that is ours,
        // not the server's.
        let drops = reactor.statistics.datagramDrops
        bench.hot.pointee.counters.ownReceiveDrops = drops[.receiveQueueFull]
        var result = bench.result
        result.cpuSeconds = ThreadCPU.seconds()
        board.results.withLock { $0[settings.thread] = result }
    }
}
