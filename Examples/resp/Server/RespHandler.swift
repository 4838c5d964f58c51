import Logging
import RESP
import Reactor

/// The connection's state: where its byte stream is in the protocol. Between requests it is a
/// few integers and a nil stash, so an idle connection owns no heap memory.
struct RespConnection {
    var framer = RequestFramer()
    /// Stopped at a request boundary because the peer is behind on its replies; resumed by
    /// ``RespHandler/onWritable(_:state:)`` once they drain.
    var parked = false
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
        let context = context
        context.begin(connection.id, on: connection.loop)
        let result = state.framer.feed(bytes, scratch: context.scratch) { context.handle($0) }
        let action = context.finish(result)
        if case .pauseReading = action { state.parked = true }
        return action
    }

    /// The replies of a parked connection drained below the low watermark (it stopped only once
    /// they passed the high one): go on with the requests it kept, then read again.
    func onWritable(_ connection: borrowing Connection<Self>, state: inout RespConnection) -> Action {
        guard state.parked else { return .continue }
        state.parked = false
        let context = context
        context.begin(connection.id, on: connection.loop)
        let result = state.framer.resume(scratch: context.scratch) { context.handle($0) }
        let action = context.finish(result)
        switch action {
        case .pauseReading: state.parked = true
        case .continue: connection.context.resumeReading(connection.id)
        case .close, .refuse: break
        }
        return action
    }

    func onClose(_ connection: borrowing Connection<Self>, state: inout RespConnection, reason: CloseReason) {
        context.logger.debug("closed \(connection.peer) reason=\(reason)")
    }
}

/// What the connections of one reactor share: the scratch lists, the reply buffer, the command
/// engine. One per reactor thread; the
/// keyspace inside is the process's one.
final class RespContext: ReplyDrain {
    static let quit = CloseReason("quit")
    static let protocolError = CloseReason("protocol")
    static let outputLimit = CloseReason("outputlimit")

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

    // The connection being served, set by `begin`.
    @exclusivity(unchecked) unowned(unsafe) var loop: Reactor<RespHandler>!
    @exclusivity(unchecked) var current: ConnectionID!
    @exclusivity(unchecked) var closeReason: CloseReason?

    init(keyspace: Keyspace, limits: RequestLimits, maxMemory: Int, maxOutput: Int,
         configuration: ReactorConfiguration, logger: Logger) {
        self.keyspace = keyspace
        scratch = ParserScratch(limits: limits)
        engine = CommandEngine(keyspace: keyspace, reply: reply, maxMemory: maxMemory)
        self.maxOutput = maxOutput
        highWatermark = configuration.highWatermark
        lowWatermark = configuration.lowWatermark
        self.logger = logger
        reply.drain = self
    }

    /// Starts serving one read of `id`: takes the keyspace lock once for all its requests.
    @inline(__always)
    func begin(_ id: ConnectionID, on loop: Reactor<RespHandler>) {
        self.loop = loop
        current = id
        closeReason = nil
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
                closeReason = Self.outputLimit
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
        let outcome = loop.write(to: current, reply.bytes.bytes)
        reply.bytes.removeAll()
        switch outcome {
        case .sent: return true
        case .queued(let pending):
            guard pending > maxOutput else { return true }
            logger.info("dropping \(current!): \(pending) bytes of replies unread (--max-output \(maxOutput))")
            closeReason = Self.outputLimit
            loop.close(current, reason: Self.outputLimit, discardingOutput: true)
            return false
        case .closed: return false
        }
    }

    /// A single reply passed the reply buffer's threshold (`MGET`): send it on in pieces. The
    /// lock stays held, so the command stays atomic.
    func drain(_ reply: ReplyBuffer) -> Bool { send() }
}
