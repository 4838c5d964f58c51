import Glibc
import Histogram
import Reactor
import Synchronization

/// What one generator thread measured.
struct ThreadResult: Sendable {
    /// Seconds it measured (0 if its run ended first).
    var seconds: Double
    /// Counts of its measured window, and of its whole run (warm-up included).
    var measured: Counters
    var whole: Counters
    var latency: Histogram<UInt64>
    /// Open loop: service times, from the actual send.
    var service: Histogram<UInt64>
    var maxOpen: Int
    var interrupted: Bool
    /// How long opening its connections took, and its failed connects by reason.
    var openingSeconds = 0.0
    var connectFailureReasons: [String: Int] = [:]
    /// CPU seconds the thread used (user + system, from /proc/self/task), or nil if unknown.
    var cpuSeconds: Double? = nil
    /// Why the thread could not run at all, or nil.
    var failure: String? = nil
}

/// What the generator threads share with the main thread: their progress once a second, their
/// reactors (to stop them on a signal), their results, and the run-wide error-message count.
final class Board: Sendable {
    /// One thread's state at its last once-a-second tick.
    struct Snapshot: Sendable {
        var phase: Phase
        var counters: Counters
        var open: Int
        /// The latencies of its last second.
        var interval: Histogram<UInt64>
    }

    let snapshots: Mutex<[Snapshot?]>
    let handles: Mutex<[ReactorHandle?]>
    let results: Mutex<[ThreadResult?]>
    /// Set by the main thread on SIGINT or SIGTERM; a thread that starts its reactor after it stops at once.
    let stopRequested = Atomic<Bool>(false)
    let finished = Atomic<Int>(0)
    let errorMessages = Atomic<Int>(0)

    init(threads: Int) {
        snapshots = Mutex(Array(repeating: nil, count: threads))
        handles = Mutex(Array(repeating: nil, count: threads))
        results = Mutex(Array(repeating: nil, count: threads))
    }

    func publish(_ thread: Int, _ snapshot: Snapshot) { snapshots.withLock { $0[thread] = snapshot } }
}


/// A whole run: one ``Bench`` per generator thread, each on its own reactor and thread (so each
/// can use a core), started together; the main thread prints the progress line once a second,
/// stops them all on SIGINT or SIGTERM, and merges their counts and latency histograms at the end.
enum Run {
    /// Runs the load described by `settings` and returns the merged outcome.
    static func execute(_ settings: Settings) -> Summary {
        let signals = [SIGINT, SIGTERM]
        // Before any thread exists, so that every thread inherits the mask and the signals wait
        // for the main thread's sigtimedwait.
        Signals.block(signals)
        let n = settings.threads
        let board = Board(threads: n)
        var threads: [pthread_t] = []
        for t in 0..<n {
            let share = settings.share(t)
            let udp = settings.udp
            guard let thread = ReactorThread.spawn({
                if udp { runDatagramThread(share, board: board) } else { runThread(share, board: board) }
            }) else {
                board.results.withLock { $0[t] = failed("cannot start thread \(t + 1) of \(n)") }
                _ = board.finished.add(1, ordering: .acquiringAndReleasing)
                continue
            }
            threads.append(thread)
        }

        var set = sigset_t()
        sigemptyset(&set)
        for s in signals { sigaddset(&set, s) }
        let started = now()
        // The threads publish at 1 s, 2 s … after they start; printing 250 ms after that finds
        // this second's figures of every thread.
        var lastPrint = started + 250_000_000
        var last = Counters()
        var signalled = false
        // Why 100 ms: how soon after the last thread ends the run returns, at no cost to the load.
        var wait = timespec(tv_sec: 0, tv_nsec: 100_000_000)
        while board.finished.load(ordering: .acquiring) < n {
            if sigtimedwait(&set, nil, &wait) > 0 && !signalled {
                signalled = true
                board.stopRequested.store(true, ordering: .releasing)
                for handle in board.handles.withLock({ $0 }) { handle?.stop() }
            }
            let t = now()
            if t > lastPrint && t - lastPrint >= 1_000_000_000 {
                if !settings.quiet { last = printProgress(board, settings, since: last, seconds: Double(t - lastPrint) / 1e9, elapsed: t - started) }
                lastPrint = t
            }
        }
        for thread in threads { pthread_join(thread, nil) }

        let results = board.results.withLock { $0.compactMap { $0 } }
        var latency = emptyHistogram(), service = emptyHistogram()
        var opening = 0.0, reasons: [String: Int] = [:], cpu: [Double] = []
        var measured = Counters(), whole = Counters()
        var seconds = 0.0, measuring = 0, maxOpen = 0
        var interrupted = signalled
        var failures: [String] = []
        for r in results {
            latency.add(r.latency)
            service.add(r.service)
            opening = max(opening, r.openingSeconds)
            reasons.merge(r.connectFailureReasons, uniquingKeysWith: +)
            cpu.append(r.cpuSeconds ?? -1)
            measured = measured + r.measured
            whole = whole + r.whole
            if r.seconds > 0 { seconds += r.seconds; measuring += 1 }
            maxOpen += r.maxOpen
            interrupted = interrupted || r.interrupted
            if let f = r.failure { failures.append(f) }
        }
        // Every thread measures its own window of --duration seconds; they begin within a few
        // milliseconds of each other, so the rates are the merged counts over the mean window.
        return Summary(settings: settings, seconds: measuring > 0 ? seconds / Double(measuring) : 0,
                       counters: measured, whole: whole, latency: latency, service: service, maxOpen: maxOpen,
                       interrupted: interrupted, threadFailures: failures, openingSeconds: opening,
                       connectFailureReasons: reasons, threadCPUSeconds: cpu)
    }

    /// One generator thread: its reactor, until its run ends.
    static func runThread(_ settings: Settings, board: Board) {
        defer { _ = board.finished.add(1, ordering: .acquiringAndReleasing) }
        let bench = Bench(settings: settings, board: board)
        var configuration = ReactorConfiguration()
        configuration.shutdownGrace = .seconds(1)
        configuration.logger.logLevel = .error
        // Never stop reading a connection because of its own unsent output: what the bench has
        // not written yet is at most its messages in flight (depth × size), and pausing the read
        // side while the server waits for us to read its echo is a deadlock (the server stops
        // reading once its own output is stuck, so ours never drains).
        configuration.highWatermark = max(configuration.highWatermark, settings.depth * settings.size + 1)
        configuration.lowWatermark = configuration.highWatermark / 2
        let reactor: Reactor<BenchHandler>
        do {
            reactor = try Reactor(handler: BenchHandler(bench: bench), configuration: configuration)
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
        var result = bench.result
        result.cpuSeconds = ThreadCPU.seconds()
        board.results.withLock { $0[settings.thread] = result }
    }

    static func emptyHistogram() -> Histogram<UInt64> {
        Histogram<UInt64>(highestTrackableValue: Bench.maxLatencyNs, numberOfSignificantValueDigits: .three)
    }

    static func failed(_ why: String) -> ThreadResult {
        ThreadResult(seconds: 0, measured: Counters(), whole: Counters(), latency: emptyHistogram(), service: emptyHistogram(),
                     maxOpen: 0, interrupted: false, failure: why)
    }

    /// The once-a-second progress line on stderr, from the threads' latest snapshots. Returns
    /// the summed counters, to subtract next time.
    static func printProgress(_ board: Board, _ settings: Settings, since last: Counters, seconds: Double, elapsed: UInt64) -> Counters {
        let snapshots = board.snapshots.withLock { $0.compactMap { $0 } }
        var c = Counters(), open = 0
        var interval = emptyHistogram()
        var phase = Phase.done
        for s in snapshots {
            c = c + s.counters
            open += s.open
            interval.add(s.interval)
            if s.phase.rawValue < phase.rawValue { phase = s.phase }
        }
        if snapshots.isEmpty { phase = .connecting }
        let delta = c - last
        let p99 = interval.totalCount > 0 ? interval.valueAtPercentile(99) : 0
        let name: String
        switch phase {
        case .connecting: name = "connect"
        case .warmup: name = "warmup "
        case .measuring: name = "measure"
        case .done: name = "done   "
        }
        var line = "reflect-bench: [\(pad(String(Int((Double(elapsed) / 1e9).rounded())), 4))s] \(name)"
        line += "  msg/s \(pad(fixed(Double(delta.messages) / seconds, 0), 9))"
        line += "  MB/s \(pad(fixed(Double(delta.bytes) / seconds / 1e6, 1), 7))"
        line += "  p99 \(pad(latencyText(p99), 9))"
        line += "  open \(open)"
        if settings.scenario == .churn { line += "  conn/s \(fixed(Double(delta.connects) / seconds, 0))" }
        if delta.late > 0 { line += "  late \(delta.late)" }
        if settings.udp { line += "  lost \(delta.lost)" }
        line += "  errors \(c.errors)\n"
        writeAll(line, to: 2)
        return c
    }
}
