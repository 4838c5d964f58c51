// A scriptable SyscallInterposer: the test seam of Syscall.swift driven by a fault plan.
//
// The reactor consults the interposer on its own thread before each intercepted call; tests arm
// and read it from theirs. All state sits behind one lock, so both sides may use it at any time.

import TestSupport
import CEpoll
import Glibc
import SystemPackage
@testable import Reactor

/// What to do with calls of one kind.
enum FaultBehavior: Sendable {
    /// Make every call fail with EINTR once: EINTR, then the real call, then EINTR… for each
    /// fd. The call sites retry EINTR, so the retry is the "then proceed".
    case interruptOnce
    /// Make the real call with the length cut to at most this many bytes.
    case limit(Int)
    /// Per fd, go round these answers in order.
    case cycle([FaultAnswer])
    /// Fail with this errno, `times` times (then proceed). `Int.max` means always.
    case fail(Errno, times: Int)
    /// A seeded random mix of the transient faults the kernel may give: EINTR, EAGAIN (only for
    /// calls where it means "try later"), short transfers of 1…`maxLimit` bytes, and the real call.
    case random(maxLimit: Int)
}

/// A Sendable mirror of `Interposition`, for plans written on the test thread.
enum FaultAnswer: Sendable, Equatable {
    case proceed
    case limit(Int)
    case fail(Errno)

    var interposition: Interposition {
        switch self {
        case .proceed: return .proceed
        case .limit(let n): return .limit(n)
        case .fail(let e): return .fail(e)
        }
    }
}

/// One event of an epoll_wait batch, as a test sees it.
struct FaultEvent: Sendable, Equatable, CustomStringConvertible {
    var mask: UInt32
    var data: UInt64

    init(mask: UInt32, data: UInt64) {
        self.mask = mask
        self.data = data
    }

    init(mask: UInt32, index: Int32, generation: UInt32) {
        self.mask = mask
        data = ConnectionID(index: index, generation: generation).epollData
    }

    /// The reactor slot the event is for (epoll data carries slot index and generation).
    var index: Int32 { Int32(bitPattern: UInt32(truncatingIfNeeded: data)) }
    var generation: UInt32 { UInt32(truncatingIfNeeded: data >> 32) }

    var description: String { "slot \(index).\(generation) mask 0x\(String(mask, radix: 16))" }
}

/// Rewrites one epoll_wait batch in place. `capacity` is the most events the batch may hold.
typealias FaultEventRewriter = @Sendable (_ events: inout [FaultEvent], _ capacity: Int) -> Void

/// One accept4 the interposer saw, for back-off checks.
struct FaultAcceptRecord: Sendable {
    let answer: FaultAnswer
    /// epoll_wait calls seen before this accept4.
    let epollWaitsBefore: Int
    /// CLOCK_MONOTONIC, nanoseconds.
    let time: Int64
}

/// A scriptable syscall interposer: per call kind a `FaultBehavior`, optionally only for some fds,
/// plus an optional rewriter of epoll_wait batches.
final class FaultInterposer: SyscallInterposer, @unchecked Sendable {
    // @unchecked: the only stored property is the lock, which makes the class thread-safe.

    private struct Plan {
        var behavior: FaultBehavior
        /// Only these fds (nil: every fd).
        var fds: Set<CInt>?
        /// How many times `.fail` has fired.
        var fired = 0
    }

    private struct Key: Hashable {
        let call: SyscallName
        let fd: CInt
    }

    private struct State {
        var plans: [SyscallName: Plan] = [:]
        /// Per call kind and fd: how many times the plan was consulted (drives alternation and cycles).
        var perFD: [Key: Int] = [:]
        var calls: [SyscallName: Int] = [:]
        var injected: [SyscallName: Int] = [:]
        var rewriter: FaultEventRewriter?
        var batchesRewritten = 0
        var accepts: [FaultAcceptRecord] = []
        var random: FaultRandom
    }

    private let state: Locked<State>

    init(seed: UInt64 = 0x5EED) {
        state = Locked(State(random: FaultRandom(seed: seed)))
    }

    // MARK: arming (test thread)

    /// Plans `behavior` for every `call`, or only for calls on `fds`. Replaces an earlier plan.
    func plan(_ call: SyscallName, _ behavior: FaultBehavior, fds: Set<CInt>? = nil) {
        state.withLock { $0.plans[call] = Plan(behavior: behavior, fds: fds) }
    }

    /// Removes the plan for `call`: its calls proceed.
    func clear(_ call: SyscallName) {
        _ = state.withLock { $0.plans.removeValue(forKey: call) }
    }

    /// Installs (or with nil removes) a rewriter of epoll_wait batches.
    func rewriteBatches(_ rewriter: FaultEventRewriter?) {
        state.withLock { $0.rewriter = rewriter }
    }

    // MARK: reading (any thread)

    /// Calls of this kind the reactor made (each retry counts).
    func calls(_ call: SyscallName) -> Int { state.withLock { $0.calls[call, default: 0] } }

    /// Calls of this kind that got something other than `.proceed`.
    func injected(_ call: SyscallName) -> Int { state.withLock { $0.injected[call, default: 0] } }

    /// Every accept4 seen, in order.
    var accepts: [FaultAcceptRecord] { state.withLock { $0.accepts } }

    /// epoll_wait batches the rewriter was given.
    var batchesRewritten: Int { state.withLock { $0.batchesRewritten } }

    // MARK: SyscallInterposer (reactor thread)

    func intercept(_ call: SyscallName, fd: CInt) -> Interposition {
        state.withLock { s in
            s.calls[call, default: 0] += 1
            let answer = Self.decide(call, fd, &s)
            if answer != .proceed { s.injected[call, default: 0] += 1 }
            if call == .accept4 {
                s.accepts.append(FaultAcceptRecord(answer: answer, epollWaitsBefore: s.calls[.epollWait, default: 0],
                                                   time: cepoll_monotonic_ns()))
            }
            return answer.interposition
        }
    }

    private static func decide(_ call: SyscallName, _ fd: CInt, _ s: inout State) -> FaultAnswer {
        guard var plan = s.plans[call] else { return .proceed }
        if let fds = plan.fds, !fds.contains(fd) { return .proceed }
        let key = Key(call: call, fd: fd)
        let n = s.perFD[key, default: 0]
        s.perFD[key] = n + 1
        switch plan.behavior {
        case .interruptOnce:
            return n % 2 == 0 ? .fail(.interrupted) : .proceed
        case .limit(let bytes):
            return .limit(bytes)
        case .cycle(let answers):
            return answers.isEmpty ? .proceed : answers[n % answers.count]
        case .fail(let e, let times):
            guard plan.fired < times else { return .proceed }
            plan.fired += 1
            s.plans[call] = plan
            return .fail(e)
        case .random(let maxLimit):
            let roll = s.random.next() % 100
            switch call {
            case .read, .write, .spliceIn, .spliceOut:
                if roll < 15 { return .fail(.interrupted) }
                if roll < 30 { return .fail(.resourceTemporarilyUnavailable) }
                if roll < 70 { return .limit(1 + Int(s.random.next() % UInt64(max(1, maxLimit)))) }
                return .proceed
            case .accept4:
                if roll < 25 { return .fail(.interrupted) }
                if roll < 50 { return .fail(.resourceTemporarilyUnavailable) }
                if roll < 60 { return .fail(.connectionAbort) }
                return .proceed
            case .epollWait:
                return roll < 20 ? .fail(.interrupted) : .proceed
            case .close:
                return roll < 20 ? .fail(.interrupted) : .proceed  // close is never retried; the fd is freed anyway
            case .epollCtl, .shutdown, .linger:
                return .proceed  // none reports a transient error
            case .recvmmsg, .sendmmsg:
                if roll < 15 { return .fail(.interrupted) }
                if roll < 30 { return .fail(.resourceTemporarilyUnavailable) }
                if roll < 60 { return .limit(1 + Int(s.random.next() % UInt64(max(1, maxLimit)))) }
                return .proceed
            }
        }
    }

    func rewriteEvents(_ events: UnsafeMutablePointer<epoll_event>, count: Int, capacity: Int) -> Int {
        guard let rewriter = state.withLock({ s -> FaultEventRewriter? in
            if s.rewriter != nil { s.batchesRewritten += 1 }
            return s.rewriter
        }) else { return count }
        var batch = (0..<count).map { i in
            FaultEvent(mask: cepoll_event_mask(events + i), data: cepoll_event_data(events + i))
        }
        // Called without the lock held: the rewriter may read or arm this interposer.
        rewriter(&batch, capacity)
        precondition(batch.count <= capacity, "a rewriter returned \(batch.count) events for a batch of capacity \(capacity)")
        for (i, event) in batch.enumerated() {
            cepoll_event_set(events + i, event.mask, event.data)
        }
        return batch.count
    }
}

/// SplitMix64: small, fast and reproducible from a seed.
struct FaultRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// `count` bytes, none of them equal to `excluding`.
    mutating func bytes(_ count: Int, excluding: UInt8? = nil) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(count)
        while out.count < count {
            let b = UInt8(truncatingIfNeeded: next())
            if b != excluding { out.append(b) }
        }
        return out
    }
}
