import Glibc
import Histogram
import Reactor

/// What the load generator does.
enum Scenario: String, CaseIterable {
    /// Each connection keeps `depth` messages in flight and sends a new one per echo.
    case pingpong
    /// Each connection streams large writes, `depth` of them in flight: MB/s.
    case bulk
    /// Connections stay open; a few are probed with one message each second.
    case idle
    /// Connect, one echo, close, again, in `connections` concurrent slots.
    case churn
    /// UDP only: datagrams go out at `--rate` in all, whatever comes back; loss and latency.
    case flood
}

/// What the messages are made of (`--payload`).
enum PayloadKind: String, CaseIterable {
    /// Every byte value, with no `exit` anywhere (see `Payload.binary`).
    case binary
    /// Lines of letters and digits with no `e` (0.1.0's only payload).
    case text
}

/// How a run is set up (from the command line).
struct Settings: Sendable {
    var payload = PayloadKind.binary
    /// Messages slower than this are counted (the server's exit-line hold time).
    var holdMs = 250
    var scenario: Scenario
    var address: SocketAddress
    var sources: [SocketAddress]
    var connections: Int
    var depth: Int
    var size: Int
    var warmup: Double
    var duration: Double
    var probes: Int
    var quiet: Bool
    /// Open loop (`--rate`, pingpong): messages per second in all, or nil for a closed loop.
    var rate: Double? = nil
    /// Open loop (`--connect-rate`, churn): connect-echo-close cycles begun per second in all.
    var connectRate: Double? = nil
    /// Generator threads, each with its own reactor and share of the connections (`--threads`).
    var threads = 1
    /// The given bytes (`--message`, `--payload-file`), sent cyclically, or nil for a pattern.
    var message: [UInt8]? = nil
    /// The given bytes are a file's (`--payload-file`), cut every `size` bytes.
    var fileStream = false
    /// The run's name in `--json` (`--label`), for `reflect-bench plot`.
    var label: String? = nil
    /// UDP datagrams instead of TCP connections (`--udp`; flood is always UDP).
    var udp = false
    /// Fail the run if more than this percentage of the measured datagrams was lost (`--max-loss`).
    var maxLossPercent: Double? = nil
    /// Which thread these settings are for, and the run-wide number of its first connection.
    var thread = 0
    var firstConnection = 0

    /// Whether messages (or churn cycles) go out on a schedule instead of when echoes return.
    /// (`--connect-rate` in the other scenarios paces only the opening of connections.)
    var openLoop: Bool { rate != nil || (connectRate != nil && scenario == .churn) }

    /// What the summary calls one unit of traffic.
    var unit: String { udp ? "datagrams" : scenario == .churn ? "cycles" : "messages" }

    /// What thread `t` of `threads` does: its share of the connections, of the idle probes and
    /// of the rates.
    func share(_ t: Int) -> Settings {
        var s = self
        let base = connections / threads, extra = connections % threads
        s.thread = t
        s.connections = base + (t < extra ? 1 : 0)
        s.firstConnection = t * base + min(t, extra)
        // Idle probes are split like the connections (a thread may get none).
        s.probes = probes / threads + (t < probes % threads ? 1 : 0)
        let part = Double(s.connections) / Double(connections)
        s.rate = rate.map { $0 * part }
        s.connectRate = connectRate.map { $0 * part }
        return s
    }
}

enum Phase: Int, Sendable {
    /// Opening the connections.
    case connecting
    /// Running, nothing recorded yet.
    case warmup
    /// Running and recording.
    case measuring
    /// The run is over: nothing more is sent or counted.
    case done
}

/// Plain counters, written on the reactor's thread only.
struct Counters: Sendable {
    /// Complete messages echoed (for churn: connect-echo-close cycles).
    var messages = 0
    /// Echoed bytes, all checked.
    var bytes = 0
    /// Connections established.
    var connects = 0
    var mismatches = 0
    var connectFailures = 0
    var unexpectedCloses = 0
    /// Messages whose echo took longer than the hold time (`--hold-ms`), or are still unanswered
    /// after it at the end.
    var overHold = 0
    /// Connections whose echo was outstanding at the end for longer than `Bench.stallNs`.
    var timeouts = 0
    /// Open loop: messages (churn: cycles) sent more than `lateToleranceNs` after they were due.
    var late = 0
    /// Of those, the ones the generator itself made late: due with room to go, but its pacer
    /// woke (or got the CPU) too late. Many of these mean the generator, not the server, could
    /// not keep the schedule.
    var lateGenerator = 0
    /// Open loop: messages (churn: cycles) due by the end that never went out.
    var unsent = 0
    /// Open loop: messages (churn: cycles) sent, on time or late: the achieved rate.
    /// UDP: every datagram sent.
    var sent = 0
    /// UDP: datagrams not echoed within the loss timeout (not an error: UDP may drop).
    var lost = 0
    /// UDP: datagrams echoed more than once (an error).
    var duplicates = 0
    /// UDP: echoes that arrived after their datagram was counted as lost (not an error).
    var lateEchoes = 0
    /// UDP: echoes the generator's own sockets dropped for a full receive queue (whole run).
    var ownReceiveDrops = 0

    var errors: Int { mismatches + connectFailures + unexpectedCloses + timeouts + duplicates }
}

/// What is known about one connection slot, kept outside the reactor so that timers (idle
/// probes) can reach it too.
struct Peer {
    var id: ConnectionID?
    var open = false
    /// Where this connection's stream starts in the payload pattern.
    var start = 0
    /// Bytes written, and echoed bytes received and checked.
    var sent = 0
    var received = 0
    /// When the connect began (churn measures connect + echo; open loop: when it was due).
    var connectStart: UInt64 = 0
    /// When the connect call was made (open-loop churn: the service time counts from it).
    var connectCall: UInt64 = 0
    /// When echo bytes last arrived (0: never), so that a long message still coming in is not
    /// mistaken for a stall.
    var lastEcho: UInt64 = 0
    /// When the server last began to owe this connection an echo: the time of a write made with
    /// nothing outstanding. (In an open loop a message's intended time can be long before it
    /// went out, so silence is measured from this, not from the stamps.)
    var waitingSince: UInt64 = 0
}

/// The mutable scalars of the hot path, behind a pointer so that using them costs no
/// exclusivity check.
struct Hot {
    var phase = Phase.connecting
    var counters = Counters()
    /// Connections open and connecting now.
    var open = 0
    var connecting = 0
    /// Connections made so far (each gets its own place in the payload).
    var made = 0
    /// Open loop: when each message (churn: cycle) is due.
    var schedule = Schedule(perSecond: 1)
}

/// The monotonic clock in nanoseconds.
@inline(__always)
func now() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// One generator thread of a run: its reactor, its share of the connections, its payload,
/// counters and histograms. ``Run`` starts one per `--threads` and merges what they measured.
final class Bench {
    /// Connects in progress at once while opening connections. Why 256: well below the
    /// server's accept backlog (SOMAXCONN 4096), so a burst of SYNs is never dropped, and enough
    /// that thousands of idle connections open in well under a second.
    static let maxConnecting = 256
    /// Give up if the connections are not all open after this long: 10 s, or 1 s per 2,000
    /// connections for very many (a loaded server accepts a few thousand per second at least),
    /// plus the time the ramp itself takes (`--connect-rate`).
    var connectTimeout: Duration {
        let ramp = settings.scenario == .churn ? 0 : settings.connectRate.map { Double(settings.connections) / $0 } ?? 0
        return .seconds(max(10, settings.connections / 2000)) + .nanoseconds(Int64(ramp * 1e9))
    }
    /// The largest latency the histograms hold (larger values are recorded as this).
    static let maxLatencyNs: UInt64 = 60_000_000_000
    /// Error messages printed in full; after that they are only counted.
    static let maxErrorMessages = 10

    let settings: Settings
    let board: Board
    let payload: Payload
    let hot: UnsafeMutablePointer<Hot>
    let peers: UnsafeMutablePointer<Peer>
    /// Send time of each message in flight: `depth` entries per connection, by message number
    /// (open loop: when it was due).
    let sendTimes: UnsafeMutablePointer<UInt64>
    /// Open loop: when each message in flight actually went out, for the service time.
    let actualTimes: UnsafeMutablePointer<UInt64>
    /// Open loop: service times (from the actual send) of the measured run.
    let service: UnsafeMutablePointer<Histogram<UInt64>>
    /// Latencies since the last progress report, and the total of the measured run.
    let interval: UnsafeMutablePointer<Histogram<UInt64>>
    let total: UnsafeMutablePointer<Histogram<UInt64>>
    /// Messages in flight per connection (the sendTimes ring size).
    let ring: Int

    unowned(unsafe) var reactor: Reactor<BenchHandler>!
    var nextToConnect = 0
    var probeCursor = 0
    var measureStart: UInt64 = 0
    var measureEnd: UInt64 = 0
    var measured = Counters()
    var atMeasureStart = Counters()
    var interrupted = false
    var timedOut = false
    var maxOpen = 0
    /// Open loop: messages (churn: cycles) of the schedule handed to connections so far.
    var paced = 0
    /// Open-loop churn: slots with no cycle going on.
    var freeSlots: [Int] = []
    /// `--connect-rate` (not churn): when each connection is due to be opened, and whether a
    /// timer to open the next ones is set.
    var connectSchedule = Schedule(perSecond: 1)
    var rampTimerSet = false
    /// When opening the connections began and ended (all open or failed; 0: not yet).
    var openingStart: UInt64 = 0
    var openingEnd: UInt64 = 0
    /// Failed connects by reason, in words ("connection refused").
    var connectFailureReasons: [String: Int] = [:]

    init(settings: Settings, board: Board) {
        self.settings = settings
        self.board = board
        ring = max(1, settings.depth)
        // Any write or read (at most the 64 KiB read buffer) must fit in one contiguous piece.
        let pad = max(64 * 1024, ring * settings.size) + settings.size
        switch (settings.payload, settings.scenario) {
        case _ where settings.message != nil: payload = Payload.given(settings.message!, size: settings.size, pad: pad)
        case (.binary, _): payload = Payload.binary(size: settings.size, pad: pad)
        case (.text, .bulk): payload = Payload.stream(size: settings.size, pad: pad)
        case (.text, _): payload = Payload.lines(size: settings.size, pad: pad)
        }
        hot = .allocate(capacity: 1)
        hot.initialize(to: Hot())
        hot.pointee.made = settings.firstConnection
        if let rate = settings.rate ?? (settings.scenario == .churn ? settings.connectRate : nil) {
            hot.pointee.schedule = Schedule(perSecond: rate)
        }
        if let rate = settings.connectRate, settings.scenario != .churn { connectSchedule = Schedule(perSecond: rate) }
        peers = .allocate(capacity: settings.connections)
        peers.initialize(repeating: Peer(), count: settings.connections)
        sendTimes = .allocate(capacity: settings.connections * ring)
        sendTimes.initialize(repeating: 0, count: settings.connections * ring)
        actualTimes = .allocate(capacity: settings.connections * ring)
        actualTimes.initialize(repeating: 0, count: settings.connections * ring)
        service = .allocate(capacity: 1)
        service.initialize(to: Histogram<UInt64>(highestTrackableValue: Self.maxLatencyNs, numberOfSignificantValueDigits: .three))
        interval = .allocate(capacity: 1)
        interval.initialize(to: Histogram<UInt64>(highestTrackableValue: Self.maxLatencyNs, numberOfSignificantValueDigits: .three))
        total = .allocate(capacity: 1)
        total.initialize(to: Histogram<UInt64>(highestTrackableValue: Self.maxLatencyNs, numberOfSignificantValueDigits: .three))
    }

    deinit {
        hot.deinitialize(count: 1)
        hot.deallocate()
        peers.deinitialize(count: settings.connections)
        peers.deallocate()
        sendTimes.deallocate()
        actualTimes.deallocate()
        service.deinitialize(count: 1)
        service.deallocate()
        interval.deinitialize(count: 1)
        interval.deallocate()
        total.deinitialize(count: 1)
        total.deallocate()
        payload.bytes.deallocate()
    }

    // MARK: connections

    /// Starts connects until `maxConnecting` are in progress or every connection was started;
    /// with `--connect-rate`, only those that are due (then a timer comes back for the rest).
    func connectMore() {
        guard settings.scenario != .churn else { return }
        var limit = settings.connections
        let ramp = settings.connectRate != nil
        if ramp { limit = min(limit, connectSchedule.due(at: now())) }
        while hot.pointee.connecting < Self.maxConnecting && nextToConnect < limit
            && hot.pointee.phase != .done {
            let index = nextToConnect
            nextToConnect += 1
            connect(index)
        }
        if ramp && !rampTimerSet && nextToConnect < settings.connections && hot.pointee.phase != .done {
            rampTimerSet = true
            let t = now(), next = connectSchedule.intended(nextToConnect)
            let wait = max(pacingQuantumNs, next > t ? next - t : 0)
            reactor.schedule(after: .nanoseconds(Int64(wait))) { [unowned self] in
                self.rampTimerSet = false
                self.connectMore()
            }
        }
        checkReady()
    }

    /// Counts a failed connect under its reason.
    func connectFailed(_ reason: String) {
        hot.pointee.counters.connectFailures += 1
        connectFailureReasons[reason, default: 0] += 1
    }

    /// Opens connection slot `index`; a churn cycle's latency counts from `start` (by default now).
    func connect(_ index: Int, start: UInt64? = nil) {
        let made = hot.pointee.made
        hot.pointee.made += 1
        let peer = peers + index
        let t = now()
        peer.pointee = Peer(id: nil, open: false, start: payload.start(forConnection: made), sent: 0, received: 0,
                            connectStart: start ?? t, connectCall: t)
        let source = settings.sources.isEmpty ? nil : settings.sources[made % settings.sources.count]
        do {
            peer.pointee.id = try reactor.connect(to: settings.address, from: source, state: Int32(index))
            hot.pointee.connecting += 1
        } catch {
            connectFailed(error.explanation)
            report("cannot connect to \(settings.address)\(source.map { " from \($0.host)" } ?? ""): \(error)")
            if settings.scenario == .churn { retry(index) }
        }
    }

    /// A churn slot whose connection failed tries again a little later, so an unreachable
    /// server does not make a busy loop.
    func retry(_ index: Int) {
        reactor.schedule(after: .milliseconds(10)) { [unowned self] in
            guard self.hot.pointee.phase != .done else { return }
            // Open loop: the slot takes the next cycle that is due, if any.
            if self.settings.openLoop { self.cycleDone(index) } else { self.connect(index) }
        }
    }

    /// Every connection is open (or failed): the run begins.
    func checkReady() {
        guard hot.pointee.phase == .connecting, nextToConnect == settings.connections,
              hot.pointee.connecting == 0 else { return }
        openingEnd = now()
        if hot.pointee.open == 0 && settings.scenario != .churn {
            finish()
            return
        }
        startWarmup()
    }

    // MARK: phases

    func start() {
        openingStart = now()
        connectSchedule.start = openingStart
        reactor.schedule(after: .seconds(1), repeating: .seconds(1)) { [unowned self] in self.tick() }
        reactor.schedule(after: connectTimeout) { [unowned self] in
            guard self.hot.pointee.phase == .connecting else { return }
            self.timedOut = true
            self.hot.pointee.counters.connectFailures += self.hot.pointee.connecting
            self.connectFailureReasons["no answer within \(self.connectTimeout)", default: 0] += self.hot.pointee.connecting
            self.report("timed out: \(self.hot.pointee.open) of \(self.settings.connections) connections open after \(self.connectTimeout)")
            self.finish()
        }
        if settings.scenario == .churn {
            nextToConnect = settings.connections
            if settings.openLoop {
                freeSlots = Array((0..<settings.connections).reversed())
            } else {
                for index in 0..<settings.connections { connect(index) }
            }
            startWarmup()
        } else {
            connectMore()
        }
    }

    func startWarmup() {
        hot.pointee.phase = .warmup
        if settings.openLoop {
            hot.pointee.schedule.start = now()
            pace()
        }
        if settings.scenario == .idle {
            reactor.schedule(after: .zero, repeating: .seconds(1)) { [unowned self] in self.probe() }
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
        atMeasureStart = hot.pointee.counters
        interval.pointee.reset()
        total.pointee.reset()
        service.pointee.reset()
        reactor.schedule(after: .nanoseconds(Int64(settings.duration * 1e9))) { [unowned self] in self.finish() }
    }

    /// Ends the run: takes the measurements, then stops the reactor (open connections close).
    func finish() {
        guard hot.pointee.phase != .done else { return }
        if openingEnd == 0 { openingEnd = now() }
        if hot.pointee.phase == .measuring {
            measureEnd = now()
            countUnanswered(at: measureEnd)
            if settings.openLoop { countUnsent(at: measureEnd) }
            total.pointee.add(interval.pointee)
            measured = hot.pointee.counters - atMeasureStart
        }
        hot.pointee.phase = .done
        reactor.handle.stop()
    }

    /// Messages still unanswered when the run ends never get a latency, so a server that holds an
    /// echo forever would go unseen. Each open connection whose oldest unanswered message has
    /// waited longer than the hold counts in `overHold`; one that has had no echo byte for longer
    /// than `Bench.stallNs(hold)` since that message was sent is a timeout, an error.
    func countUnanswered(at t: UInt64) {
        let hold = UInt64(settings.holdMs) * 1_000_000
        let size = settings.size
        for index in 0..<settings.connections {
            let peer = peers[index]
            guard peer.open, peer.received < peer.sent else { continue }
            let sentAt = sendTimes[index * ring + (peer.received / size) % ring]
            if t &- sentAt > hold { hot.pointee.counters.overHold += 1 }
            let silent = t &- max(peer.waitingSince, peer.lastEcho)
            if silent > Self.stallNs(holdMs: settings.holdMs) {
                hot.pointee.counters.timeouts += 1
                report("connection \(index) timed out: no echo for \(latencyText(silent)) (\(peer.received) of \(peer.sent) bytes echoed)")
            }
        }
    }

    /// How long an echo may be outstanding at the end of a run before it is a timeout: 4 × the
    /// hold, and at least 1 s (a loaded machine can delay a healthy echo by a few hundred ms).
    static func stallNs(holdMs: Int) -> UInt64 { UInt64(max(1000, 4 * holdMs)) * 1_000_000 }

    /// Once a second: the interval's latencies join the total, and the progress board hears
    /// what this thread did (``Run`` prints the line).
    func tick() {
        board.publish(settings.thread, Board.Snapshot(
            phase: hot.pointee.phase, counters: hot.pointee.counters, open: hot.pointee.open, interval: interval.pointee))
        if hot.pointee.phase == .measuring { total.pointee.add(interval.pointee) }
        interval.pointee.reset()
    }

    /// What this thread measured, for ``Run`` to merge.
    var result: ThreadResult {
        let seconds = measureEnd > measureStart ? Double(measureEnd - measureStart) / 1e9 : 0
        return ThreadResult(seconds: seconds, measured: measured, whole: hot.pointee.counters, latency: total.pointee,
                            service: service.pointee, maxOpen: maxOpen, interrupted: interrupted,
                            openingSeconds: openingEnd > openingStart ? Double(openingEnd - openingStart) / 1e9 : 0,
                            connectFailureReasons: connectFailureReasons)
    }

    /// Idle: sends one message on each of the next `probes` open connections with nothing in flight.
    func probe() {
        guard hot.pointee.phase == .warmup || hot.pointee.phase == .measuring else { return }
        var probed = 0
        var looked = 0
        let n = settings.connections
        while probed < settings.probes && looked < n {
            let index = probeCursor
            probeCursor = (probeCursor + 1) % n
            looked += 1
            let peer = peers + index
            guard peer.pointee.open, peer.pointee.sent == peer.pointee.received, let id = peer.pointee.id else { continue }
            let t = now()
            sendTimes[index * ring] = t
            peer.pointee.waitingSince = t
            reactor.context.write(to: id, payload.piece(at: peer.pointee.start + peer.pointee.sent, count: settings.size))
            peer.pointee.sent += settings.size
            probed += 1
        }
    }

    /// Prints an error on stderr, up to `maxErrorMessages` of them in the whole run.
    func report(_ message: String) {
        let number = board.errorMessages.add(1, ordering: .relaxed).newValue
        if number <= Self.maxErrorMessages {
            writeAll("reflect-bench: error: \(message)\n", to: 2)
        } else if number == Self.maxErrorMessages + 1 {
            writeAll("reflect-bench: (further errors are only counted)\n", to: 2)
        }
    }
}

extension Counters {
    static func - (a: Counters, b: Counters) -> Counters {
        var d = a
        d.messages -= b.messages
        d.bytes -= b.bytes
        d.connects -= b.connects
        d.mismatches -= b.mismatches
        d.connectFailures -= b.connectFailures
        d.unexpectedCloses -= b.unexpectedCloses
        d.overHold -= b.overHold
        d.timeouts -= b.timeouts
        d.late -= b.late
        d.lateGenerator -= b.lateGenerator
        d.unsent -= b.unsent
        d.sent -= b.sent
        d.lost -= b.lost
        d.duplicates -= b.duplicates
        d.lateEchoes -= b.lateEchoes
        d.ownReceiveDrops -= b.ownReceiveDrops
        return d
    }

    static func + (a: Counters, b: Counters) -> Counters {
        var d = a
        d.messages += b.messages
        d.bytes += b.bytes
        d.connects += b.connects
        d.mismatches += b.mismatches
        d.connectFailures += b.connectFailures
        d.unexpectedCloses += b.unexpectedCloses
        d.overHold += b.overHold
        d.timeouts += b.timeouts
        d.late += b.late
        d.lateGenerator += b.lateGenerator
        d.unsent += b.unsent
        d.sent += b.sent
        d.lost += b.lost
        d.duplicates += b.duplicates
        d.lateEchoes += b.lateEchoes
        d.ownReceiveDrops += b.ownReceiveDrops
        return d
    }
}

/// The reactor's handler: every connection of the load generator. The state of a connection
/// is its slot index in `Bench.peers`.
struct BenchHandler: ConnectionHandler {
    typealias ConnectionState = Int32

    static let mismatch = CloseReason("mismatch")
    static let cycleDone = CloseReason("done")

    unowned(unsafe) let bench: Bench
    let payload: Payload
    let hot: UnsafeMutablePointer<Hot>
    let peers: UnsafeMutablePointer<Peer>
    let sendTimes: UnsafeMutablePointer<UInt64>
    let actualTimes: UnsafeMutablePointer<UInt64>
    let interval: UnsafeMutablePointer<Histogram<UInt64>>
    let service: UnsafeMutablePointer<Histogram<UInt64>>
    let scenario: Scenario
    let size: Int
    let ring: Int
    let holdNs: UInt64
    /// Messages go out on a schedule (`--rate`), not when echoes return.
    let openLoop: Bool

    init(bench: Bench) {
        self.bench = bench
        payload = bench.payload
        hot = bench.hot
        peers = bench.peers
        sendTimes = bench.sendTimes
        actualTimes = bench.actualTimes
        interval = bench.interval
        service = bench.service
        scenario = bench.settings.scenario
        size = bench.settings.size
        ring = bench.ring
        holdNs = UInt64(bench.settings.holdMs) * 1_000_000
        openLoop = bench.settings.openLoop
    }

    func makeState() -> Int32 { -1 }

    func onOpen(_ connection: borrowing Connection<BenchHandler>, state: inout Int32) -> Action {
        let index = Int(state)
        let peer = peers + index
        peer.pointee.open = true
        hot.pointee.connecting -= 1
        hot.pointee.open += 1
        hot.pointee.counters.connects += 1
        if hot.pointee.open > bench.maxOpen { bench.maxOpen = hot.pointee.open }
        switch scenario {
        case .pingpong, .bulk, .flood:
            // Open loop: the pacer sends, once every connection is open.
            if hot.pointee.phase != .done && !openLoop {
                let t = now()
                send(ring, index: index, at: t, now: t, on: connection)
            }
            bench.connectMore()
        case .idle:
            bench.connectMore()
        case .churn:
            // Latency of a churn cycle: from the connect call (open loop: from when the cycle was
            // due) to the echo.
            if hot.pointee.phase != .done {
                if openLoop { actualTimes[index * ring] = peer.pointee.connectCall }
                send(1, index: index, at: peer.pointee.connectStart, now: now(), on: connection)
            }
        }
        return .continue
    }

    /// Sends the next `count` messages of a connection, stamped `time`.
    @inline(__always)
    func send(_ count: Int, index: Int, at time: UInt64, now t: UInt64, on connection: borrowing Connection<BenchHandler>) {
        let peer = peers + index
        let first = peer.pointee.sent / size
        let times = sendTimes + index * ring
        for k in first..<(first + count) { times[k % ring] = time }
        write(count, index: index, now: t, on: connection)
    }

    /// Writes the next `count` messages of a connection (already stamped).
    @inline(__always)
    func write(_ count: Int, index: Int, now t: UInt64, on connection: borrowing Connection<BenchHandler>) {
        let peer = peers + index
        if peer.pointee.sent == peer.pointee.received { peer.pointee.waitingSince = t }
        var left = count * size
        while left > 0 {
            let piece = payload.piece(at: peer.pointee.start + peer.pointee.sent, count: left)
            connection.write(piece)
            peer.pointee.sent += piece.count
            left -= piece.count
        }
    }

    @inline(__always)
    func onRead(_ bytes: UnsafeRawBufferPointer, connection: borrowing Connection<BenchHandler>,
                state: inout Int32) -> Action {
        let index = Int(state)
        let peer = peers + index
        let received = peer.pointee.received
        let n = bytes.count
        if received + n > peer.pointee.sent {
            return mismatch(index, "the server sent \(received + n - peer.pointee.sent) bytes more than it was sent")
        }
        if let at = payload.firstMismatch(bytes, at: peer.pointee.start + received) {
            let expected = payload.expectedByte(at: peer.pointee.start + received + at)
            return mismatch(index, "byte \(received + at) of the echo is \(hex(bytes[at])), expected \(hex(expected))")
        }
        peer.pointee.received = received + n
        hot.pointee.counters.bytes &+= n
        let before = received / size
        let completed = (received + n) / size - before
        let t = now()
        peer.pointee.lastEcho = t
        guard completed > 0 else { return .continue }
        let times = sendTimes + index * ring
        for k in before..<(before + completed) {
            let sentAt = times[k % ring]
            let latency = t > sentAt ? t - sentAt : 0
            if !interval.pointee.record(latency) { interval.pointee.record(Bench.maxLatencyNs) }
            if latency > holdNs { hot.pointee.counters.overHold &+= 1 }
        }
        if openLoop && hot.pointee.phase == .measuring {
            // The service time: from when each message actually went out.
            let actual = actualTimes + index * ring
            for k in before..<(before + completed) {
                let wentAt = actual[k % ring]
                if !service.pointee.record(t > wentAt ? t - wentAt : 0) { service.pointee.record(Bench.maxLatencyNs) }
            }
        }
        hot.pointee.counters.messages &+= completed
        switch scenario {
        case .pingpong, .bulk, .flood:
            guard hot.pointee.phase != .done else { return .continue }
            if openLoop {
                // Room in the pipeline: messages that were due while it was full go now, late.
                let count = bench.takeDue(index, at: t, byPacer: false)
                if count > 0 { write(count, index: index, now: t, on: connection) }
            } else {
                send(completed, index: index, at: t, now: t, on: connection)
            }
            return .continue
        case .idle:
            return .continue
        case .churn:
            return peer.pointee.received == peer.pointee.sent ? .close(Self.cycleDone) : .continue
        }
    }

    func mismatch(_ index: Int, _ what: String) -> Action {
        hot.pointee.counters.mismatches += 1
        bench.report("mismatch on connection \(index): \(what)")
        return .close(Self.mismatch)
    }

    func onReadEOF(_ connection: borrowing Connection<BenchHandler>, state: inout Int32) -> Action {
        .close(.eof)
    }

    func onClose(_ connection: borrowing Connection<BenchHandler>, state: inout Int32, reason: CloseReason) {
        let index = Int(state)
        guard index >= 0 else { return }
        let peer = peers + index
        let wasOpen = peer.pointee.open
        peer.pointee.open = false
        peer.pointee.id = nil
        if wasOpen { hot.pointee.open -= 1 } else { hot.pointee.connecting -= 1 }
        let phase = hot.pointee.phase
        if reason == Self.cycleDone {
            if phase != .done {
                if openLoop { bench.cycleDone(index) } else { bench.connect(index) }
            }
            return
        }
        if reason == .shutdown {
            // The reactor stops: at the end of the run, or because of a signal.
            if phase != .done { bench.interrupted = true; bench.finish() }
            return
        }
        if reason != Self.mismatch && phase != .done {
            if wasOpen {
                hot.pointee.counters.unexpectedCloses += 1
                bench.report("connection \(index) closed by the server (\(reason.explanation)) after \(peer.pointee.received) of \(peer.pointee.sent) bytes echoed")
            } else {
                bench.connectFailed(reason.explanation)
                bench.report("cannot connect to \(bench.settings.address): \(reason.explanation)")
            }
        }
        guard phase != .done else { return }
        switch scenario {
        case .churn:
            bench.retry(index)
        case .pingpong, .bulk, .idle, .flood:
            if wasOpen {
                if hot.pointee.open + hot.pointee.connecting == 0 && bench.nextToConnect == bench.settings.connections {
                    bench.finish()
                }
            } else {
                bench.connectMore()
            }
        }
    }
}

func hex(_ byte: UInt8) -> String {
    let digits = Array("0123456789abcdef")
    return "0x\(digits[Int(byte >> 4)])\(digits[Int(byte & 15)])"
}


