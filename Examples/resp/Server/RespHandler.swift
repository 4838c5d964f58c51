import ClientAdmission
import Logging
import RESP
import Reactor
import ServerKit

/// The connection's state: where its byte stream is in the protocol. Between requests it is a
/// few integers and a nil stash, so an idle connection owns no heap memory.
struct RespConnection {
    var framer = RequestFramer()
    /// Stopped at a request boundary because the peer is behind on its replies; resumed by
    /// ``RespHandler/onWritable(_:state:)`` once they drain.
    var parked = false
    /// Its buffers are counted in ``ClientMemory`` (it held something after its last event), so
    /// the next event must update them even if they are empty now.
    var holdsMemory = false
    /// The PROXY header and the client's place under --max-connections-per-client (RespAdmission.swift).
    var admission = AdmissionGate()
    /// Present on a connection to --metrics-port (routed in RespAdmission.swift), which speaks HTTP, not RESP.
    var metrics: MetricsRequest?
}

/// The Redis protocol as a ``ConnectionHandler``: each read is cut into requests, the requests
/// run against the shared keyspace, and their replies go out together, in order, with one
/// write per read (not one per reply).
struct RespHandler: ConnectionHandler {
    typealias ConnectionState = RespConnection

    let context: RespContext

    func makeState() -> RespConnection { RespConnection() }

    func onRead(_ bytes: UnsafeRawBufferPointer, connection: borrowing Connection<Self>,
                state: inout RespConnection) -> Action {
        if _slowPath(state.admission.isWaiting) { return readHeader(bytes, connection: connection, state: &state) }
        if _slowPath(state.metrics != nil) { return context.metrics!.read(bytes, connection: connection, request: state.metrics!) }
        return serve(bytes, connection: connection, state: &state)
    }

    /// The protocol's bytes: requests, run and answered.
    func serve(_ bytes: UnsafeRawBufferPointer, connection: borrowing Connection<Self>,
               state: inout RespConnection) -> Action {
        let context = context
        context.begin(connection.id, on: connection.context, query: state.framer.stashedBytes)
        let result = state.framer.feed(bytes, scratch: context.scratch) { context.handle($0) }
        let action = context.finish(result)
        if case .pauseReading = action { state.parked = true }
        return context.account(action, connection.id, query: state.framer.stashedBytes, holdsMemory: &state.holdsMemory)
    }

    /// The replies of a parked connection drained below the low watermark (it stopped only once
    /// they passed the high one): go on with the requests it kept, then read again.
    func onWritable(_ connection: borrowing Connection<Self>, state: inout RespConnection) -> Action {
        let context = context
        guard state.parked else {
            // The replies drained: what it holds is less now.
            context.loop = connection.context
            return context.account(.continue, connection.id, query: state.framer.stashedBytes, holdsMemory: &state.holdsMemory)
        }
        state.parked = false
        context.begin(connection.id, on: connection.context, query: state.framer.stashedBytes)
        let result = state.framer.resume(scratch: context.scratch) { context.handle($0) }
        let action = context.finish(result)
        switch action {
        case .pauseReading: state.parked = true
        case .continue: connection.context.resumeReading(connection.id)
        case .close, .refuse: break
        }
        return context.account(action, connection.id, query: state.framer.stashedBytes, holdsMemory: &state.holdsMemory)
    }

    func onClose(_ connection: borrowing Connection<Self>, state: inout RespConnection, reason: CloseReason) {
        if let request = state.metrics {
            context.metrics?.closed(reason, request: request, connection: connection)
            return
        }
        // Not only if `holdsMemory`: a reply may have been counted in the event that closed it.
        if context.memory.isOn { context.memory.forget(connection.id) }
        context.logger.debug("closed \(state.admission.name(peer: connection.peer)) reason=\(reason)")
        state.admission.close(policy: context.admission)
    }
}

/// What the connections of one reactor share: the scratch lists, the reply buffer, the command
/// engine. One per reactor thread; the
/// keyspace inside is the process's one.
final class RespContext: ReplyDrain {
    static let quit = CloseReason("quit")
    static let protocolError = CloseReason("protocol")
    static let outputLimit = CloseReason("outputlimit")
    /// Closed by `--maxmemory-clients`: its buffers were the largest when all clients' passed it.
    static let evicted = CloseReason("evicted")

    let keyspace: Keyspace
    let scratch: ParserScratch
    let reply = ReplyBuffer()
    let engine: CommandEngine
    let logger: Logger
    /// `--max-output`: a connection whose unsent replies pass this is dropped (one command's
    /// reply can be huge: `MGET` of many large values), as Redis's client-output-buffer-limit does.
    let maxOutput: Int
    let highWatermark: Int
    let lowWatermark: Int
    /// `--maxmemory-clients`, this reactor's share.
    let memory: ClientMemory
    let evictions: EvictionCount
    /// --proxy-protocol, --proxy-protocol-from and --max-connections-per-client.
    let admission: AdmissionPolicy
    /// --metrics-port, on reactor 0 only.
    let metrics: MetricsEndpoint?

    // The connection being served, set by `begin`.
    @exclusivity(unchecked) var loop: ReactorContext<RespHandler>!
    @exclusivity(unchecked) var current: ConnectionID!
    @exclusivity(unchecked) var closeReason: CloseReason?
    /// The current connection's query buffer when its event began.
    @exclusivity(unchecked) var currentQuery = 0

    init(keyspace: Keyspace, limits: RequestLimits, maxMemory: Int, maxOutput: Int, maxClientMemory: Int,
         evictions: EvictionCount, admission: AdmissionPolicy = AdmissionPolicy(), metrics: MetricsEndpoint? = nil,
         configuration: ReactorConfiguration, logger: Logger) {
        self.keyspace = keyspace
        scratch = ParserScratch(limits: limits)
        engine = CommandEngine(keyspace: keyspace, reply: reply, maxMemory: maxMemory)
        self.maxOutput = maxOutput
        highWatermark = configuration.highWatermark
        lowWatermark = configuration.lowWatermark
        memory = ClientMemory(limit: maxClientMemory)
        self.evictions = evictions
        self.admission = admission
        self.metrics = metrics
        self.logger = logger
        reply.drain = self
    }

    /// Starts serving one read of `id`: takes the keyspace lock once for all its requests.
    @inline(__always)
    func begin(_ id: ConnectionID, on loop: ReactorContext<RespHandler>, query: Int) {
        self.loop = loop
        current = id
        closeReason = nil
        currentQuery = query
        keyspace.lock()
    }

    /// One request, or the protocol error that ends the stream.
    @inline(__always)
    func handle(_ frame: Frame) -> FrameVerdict {
        switch frame {
        case .request(let request):
            switch engine.execute(request) {
            case .continue:
                guard reply.isFull else { return .continue }
                // Many replies in one read: send what is built, outside the lock.
                keyspace.unlock()
                let delivered = send()
                keyspace.lock()
                guard delivered else { return .close }
                // The peer is behind: stop here, keep the rest of the input, and go on when it
                // has caught up. The reactor's backpressure stops reading more meanwhile.
                return loop.pendingOutputBytes(current) > highWatermark ? .stop : .continue
            case .quit:
                closeReason = Self.quit
                return .close
            case .stop:
                closeReason = closeReason ?? Self.outputLimit
                return .close
            }
        case .failure(let error):
            reply.error("ERR " + error.message)
            closeReason = Self.protocolError
            logger.debug("protocol error from \(current!): \(error.message)")
            return .close
        }
    }

    /// Ends a read: the lock goes, the replies go out in one write.
    @inline(__always)
    func finish(_ result: FeedResult) -> Action {
        keyspace.unlock()
        let delivered = send()
        switch result {
        case .needMore: return delivered ? .continue : .close(closeReason ?? Self.outputLimit)
        case .stopped: return delivered ? .pauseReading : .close(closeReason ?? Self.outputLimit)
        case .closed: return .close(closeReason ?? Self.protocolError)
        }
    }

    /// Writes the reply buffer to the current connection. False if the connection is closed, or
    /// was just dropped for passing `maxOutput`.
    @inline(__always)
    func send() -> Bool {
        guard !reply.isEmpty else { return true }
        if memory.isOn && !roomForReply() {
            reply.bytes.removeAll()
            return false
        }
        let outcome = loop.write(to: current, reply.bytes.bytes)
        reply.bytes.removeAll()
        switch outcome {
        case .sent: return true
        case .queued(let pending):
            guard pending > maxOutput else {
                // One command's reply (MGET) can pass --maxmemory-clients by itself: count it as
                // it grows, not only when the read is done.
                guard memory.isOn else { return true }
                memory.record(current, query: currentQuery, output: pending)
                guard memory.isOver, evictLargest(current: current) else { return true }
                closeReason = Self.evicted
                return false
            }
            logger.info("dropping \(current!): \(pending) bytes of replies unread (--max-output \(maxOutput))")
            closeReason = Self.outputLimit
            loop.close(current, reason: Self.outputLimit, discardingOutput: true)
            return false
        case .closed: return false
        }
    }

    /// `--maxmemory-clients` before a write that may be queued: the connection already has
    /// replies queued, or this one is large (a piece of an `MGET`). Counted as if all of it were
    /// queued, so the clients with the largest buffers are closed before an output buffer grows
    /// past the bound (it grows by doubling: checked after, one 32 MiB buffer became 64 MiB).
    /// False if the current connection is one of them. A small reply to a connection that is
    /// keeping up, the common case, costs a look at its pending count and two comparisons.
    @inline(__always)
    func roomForReply() -> Bool {
        let pending = loop.pendingOutputBytes(current)
        guard pending > 0 || reply.count > ReplyBuffer.drainThreshold else { return true }
        // The reply is not in the reactor's count yet: the refresh must not drop it.
        memory.record(current, query: currentQuery, output: pending + reply.count)
        guard memory.isOver, evictLargest(current: current, adding: reply.count) else { return true }
        closeReason = Self.evicted
        return false
    }

    /// Ends an event of `id` for `--maxmemory-clients`: records what it holds now (its unread
    /// requests, its unsent replies) and, if all clients' buffers passed the limit, closes the
    /// largest. `action` is what the event decided; `.close(evicted)` if `id` is closed here.
    @inline(__always)
    func account(_ action: Action, _ id: ConnectionID, query: Int, holdsMemory: inout Bool) -> Action {
        guard memory.isOn else { return action }
        // A connection closing is forgotten in onClose.
        if case .close = action { return action }
        let output = loop.pendingOutputBytes(id)
        // The common case: it holds nothing, and held nothing before. No table operation.
        guard holdsMemory || query > 0 || output > 0 else { return action }
        memory.record(id, query: query, output: output)
        holdsMemory = query + output > 0
        guard memory.isOver, evictLargest(current: id) else { return action }
        return .close(Self.evicted)
    }

    /// Closes the clients with the largest buffers until the total is under the limit, as Redis
    /// evicts clients. `adding`: bytes about to be written to `current`, counted as its output
    /// too. Returns whether `current` is one of them.
    func evictLargest(current: ConnectionID, adding: Int = 0) -> Bool {
        let loop = loop!
        let victims = memory.evict { id in loop.pendingOutputBytes(id) + (id == current ? adding : 0) }
        guard !victims.isEmpty else { return false }
        evictions.add(victims.count)
        var closesCurrent = false
        for victim in victims {
            logger.warning("evicting client \(victim.id): it held the most (\(victim.bytes) bytes of requests and replies) when all clients together passed --maxmemory-clients (\(memory.limit) bytes on this reactor)")
            loop.close(victim.id, reason: Self.evicted, discardingOutput: true)
            if victim.id == current { closesCurrent = true }
        }
        return closesCurrent
    }

    /// A single reply passed the reply buffer's threshold (`MGET`): send it on in pieces. The
    /// lock stays held, so the command stays atomic.
    func drain(_ reply: ReplyBuffer) -> Bool { send() }
}
