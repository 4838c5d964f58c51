import Reactor

/// One connection's admission, kept in its handler's state: a small state machine fed the
/// connection's first bytes, which says what to do with them.
///
/// ```swift
/// func onOpen(_ connection: borrowing Connection<Self>, state: inout State) -> Action {
///     switch state.gate.open(peer: connection.peer, policy: policy) {
///     case .serve: return .continue
///     case .wait:  state.headerTimer = connection.schedule(after: AdmissionPolicy.headerTimeout); return .continue
///     case .refuse(let why): return .refuse(why.closeReason)
///     }
/// }
/// func onRead(_ bytes: UnsafeRawBufferPointer, connection: borrowing Connection<Self>, state: inout State) -> Action {
///     guard state.gate.isWaiting else { return serve(bytes) }
///     switch state.gate.feed(bytes, policy: policy) {
///     case .wait: return .continue
///     case .serve(let from): return serve(UnsafeRawBufferPointer(rebasing: bytes[from...]))
///     case .refuse(let why): return .refuse(why.closeReason)
///     }
/// }
/// // onReadEOF while waiting: state.gate.endOfInput(); onTimer: state.gate.timedOut();
/// // onClose: state.gate.close(policy: policy) gives the client's place back.
/// ```
///
/// Nothing is allocated for a connection without a PROXY header; one with a header allocates its
/// ``ProxyGate`` once.
public struct AdmissionGate {
    /// The PROXY header, being read or read; nil when none is expected.
    public private(set) var proxy: ProxyGate?
    /// The client's place under the per-client limit, given back by ``close(policy:)``.
    public private(set) var place: ClientKey?

    /// What to do with the bytes fed so far.
    public enum Step: Equatable {
        /// The connection's bytes from this offset on are the protocol's (an empty rest is fine).
        case serve(from: Int)
        /// A PROXY header is pending: nothing for the protocol yet.
        case wait
        /// Close at once, holding nothing (`.refuse(refusal.closeReason)`).
        case refuse(AdmissionRefusal)
    }

    /// A gate that has decided nothing yet.
    public init() {}

    /// True while the PROXY header is pending.
    public var isWaiting: Bool {
        guard let proxy else { return false }
        return proxy.header == nil
    }

    /// The header, once it is in (for log lines); nil without one.
    public var header: ProxyHeader? { proxy?.header }

    /// The name for log lines: the client's address, with the balancer's beside it once known
    /// (`203.0.113.7:5000 via 127.0.0.1:41000`); `peer` without a header.
    public func name(peer: SocketAddress) -> String {
        proxy?.name ?? peer.description
    }

    /// A connection from `peer` was accepted. `.wait` means a header is expected: arm a timer of
    /// ``AdmissionPolicy/headerTimeout`` and call ``timedOut()`` when it fires.
    public mutating func open(peer: SocketAddress, policy: AdmissionPolicy) -> Step {
        if policy.proxyProtocol {
            if let trusted = policy.proxyFrom, !trusted.contains(peer) { return .refuse(.untrusted) }
            proxy = ProxyGate(balancer: peer)
            return .wait
        }
        guard policy.clientLimit != nil else { return .serve(from: 0) }
        switch policy.take(ClientKey(peer)) {
        case .success(let place):
            self.place = place
            return .serve(from: 0)
        case .failure(let refusal):
            return .refuse(refusal)
        }
    }

    /// The connection's next bytes while ``isWaiting``.
    public mutating func feed(_ bytes: UnsafeRawBufferPointer, policy: AdmissionPolicy) -> Step {
        guard let proxy, proxy.header == nil else { return .serve(from: 0) }
        switch proxy.feed(bytes, policy: policy) {
        case .wait:
            return .wait
        case .refuse(let refusal):
            return .refuse(refusal)
        case .admitted(let place, let dataStart):
            self.place = place
            return .serve(from: dataStart)
        }
    }

    /// The peer ended its stream: a refusal while the header is pending, else nil.
    public func endOfInput() -> AdmissionRefusal? {
        guard let proxy, proxy.header == nil else { return nil }
        return .endedInHeader(received: proxy.reader.received)
    }

    /// The header timer fired: a refusal while the header is pending, else nil.
    public func timedOut() -> AdmissionRefusal? {
        guard let proxy, proxy.header == nil else { return nil }
        return .headerTimeout(received: proxy.reader.received)
    }

    /// A connection carried from another process (an upgrade) holds `place` already: it is given
    /// back at close like one this gate took. The caller takes it in this process's table
    /// (``ClientLimit/forceAcquire(_:)``).
    public mutating func restore(place: ClientKey?) { self.place = place }

    /// The connection closed, however it ended: its place goes back.
    public mutating func close(policy: AdmissionPolicy) {
        proxy = nil
        if let place {
            policy.release(place)
            self.place = nil
        }
    }

    /// Whether the header is one a balancer's health check sends (v2 `LOCAL`, v1 `UNKNOWN`):
    /// count the peer's close as ``AdmissionPolicy/checkReason``.
    public var isHealthCheck: Bool { proxy?.isHealthCheck ?? false }
}

/// A connection's PROXY header: the balancer it comes from, the reader's inline buffer while it
/// is read, and the header once it is in. A class, so that a connection's state holds one nil
/// reference when no header is expected.
public final class ProxyGate {
    /// The address the connection came from: the balancer's.
    public let balancer: SocketAddress
    /// The header read so far.
    public var reader = ProxyHeaderReader()
    /// The header, once it is in.
    public internal(set) var header: ProxyHeader?
    /// The handler's timer that gives up on the header (``AdmissionPolicy/headerTimeout``), if it keeps one here.
    public var timer: TimerID?

    /// A header from `balancer`.
    public init(balancer: SocketAddress) { self.balancer = balancer }

    /// What ``feed(_:policy:)`` decided.
    public enum Arrival: Equatable {
        /// The header goes on in the next segment.
        case wait
        /// Close at once, holding nothing.
        case refuse(AdmissionRefusal)
        /// The header is in and the client admitted, holding `place` under the per-client limit
        /// (nil for none): the segment's bytes from `dataStart` on are the client's.
        case admitted(place: ClientKey?, dataStart: Int)

        /// The refusal, for a log line; nil unless ``refuse(_:)``.
        public var refusal: AdmissionRefusal? {
            if case .refuse(let refusal) = self { return refusal }
            return nil
        }
    }

    /// Feeds the connection's next segment while the header is pending. Once it is in, the
    /// client (the header's source, or the balancer for a v2 `LOCAL` or a header without one)
    /// takes its place under `policy`'s per-client limit.
    public func feed(_ bytes: UnsafeRawBufferPointer, policy: AdmissionPolicy) -> Arrival {
        switch reader.feed(bytes) {
        case .needMore:
            return .wait
        case .invalid(let error):
            return .refuse(.invalidHeader(error))
        case .done(let header, let dataStart):
            self.header = header
            switch policy.take(header.source.map { ClientKey($0) } ?? ClientKey(balancer)) {
            case .success(let place): return .admitted(place: place, dataStart: dataStart)
            case .failure(let refusal): return .refuse(refusal)
            }
        }
    }

    /// The name for log lines once the header is in: the client's address with the balancer's
    /// beside it (`203.0.113.7:5000 via 127.0.0.1:41000`), or the balancer's alone.
    public var name: String {
        guard let source = header?.source else { return balancer.description }
        return "\(source) via \(balancer)"
    }

    /// Whether the header is one a balancer's health check sends (v2 `LOCAL`, v1 `UNKNOWN`).
    public var isHealthCheck: Bool {
        guard let header else { return false }
        return header.source == nil && (header.isLocal || header.version == 1)
    }
}
