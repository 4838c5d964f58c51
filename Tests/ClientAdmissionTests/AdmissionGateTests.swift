import ClientAdmission
import Reactor
import XCTest

/// The admission state machine any handler feeds its first bytes to: PROXY header, trust list,
/// per-client limit. No sockets: the gate sees only bytes and the peer's address
/// (RespProxyTests runs it behind a real HAProxy).
final class AdmissionGateTests: XCTestCase {
    let balancer = try! SocketAddress(host: "127.0.0.1", port: 40_000)
    let v1 = Array("PROXY TCP4 203.0.113.7 127.0.0.1 5000 6379\r\n".utf8)
    /// v2 signature, version 2 / command LOCAL, family UNSPEC, no addresses.
    let v2Local: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x20, 0x00, 0x00, 0x00]

    private func feed(_ gate: inout AdmissionGate, _ bytes: [UInt8], _ policy: AdmissionPolicy) -> AdmissionGate.Step {
        bytes.withUnsafeBytes { gate.feed($0, policy: policy) }
    }

    func testNoHeaderAndNoLimitServesAtOnceAndHoldsNothing() {
        var gate = AdmissionGate()
        XCTAssertFalse(AdmissionPolicy().isActive)
        XCTAssertEqual(gate.open(peer: balancer, policy: AdmissionPolicy()), .serve(from: 0))
        XCTAssertFalse(gate.isWaiting)
        XCTAssertNil(gate.place)
    }

    func testHeaderSplitAcrossSegmentsServesTheBytesAfterIt() {
        let policy = AdmissionPolicy(proxyProtocol: true)
        var gate = AdmissionGate()
        XCTAssertEqual(gate.open(peer: balancer, policy: policy), .wait)
        XCTAssertEqual(feed(&gate, Array(v1[..<10]), policy), .wait)
        let rest = Array(v1[10...]) + Array("PING\r\n".utf8)
        XCTAssertEqual(feed(&gate, rest, policy), .serve(from: v1.count - 10))
        XCTAssertFalse(gate.isWaiting)
        XCTAssertEqual(gate.name(peer: balancer), "203.0.113.7:5000 via 127.0.0.1:40000")
        XCTAssertFalse(gate.isHealthCheck)
        // After the header, bytes are the protocol's from their first.
        XCTAssertEqual(feed(&gate, Array("PING\r\n".utf8), policy), .serve(from: 0))
    }

    func testUntrustedSourceIsRefusedBeforeAnyByte() throws {
        let policy = AdmissionPolicy(proxyProtocol: true, proxyFrom: try AddressPrefixList(parsing: "10.0.0.0/8"))
        var gate = AdmissionGate()
        XCTAssertEqual(gate.open(peer: balancer, policy: policy), .refuse(.untrusted))
        XCTAssertEqual(AdmissionRefusal.untrusted.closeReason, AdmissionPolicy.proxyReason)
    }

    func testBytesThatAreNotAHeaderAreRefusedWithReasonProxy() {
        let policy = AdmissionPolicy(proxyProtocol: true)
        var gate = AdmissionGate()
        _ = gate.open(peer: balancer, policy: policy)
        guard case .refuse(let refusal) = feed(&gate, Array("*1\r\n$4\r\nPING\r\n".utf8), policy) else {
            return XCTFail("RESP bytes passed for a PROXY header")
        }
        XCTAssertEqual(refusal.closeReason, AdmissionPolicy.proxyReason)
    }

    func testPerClientLimitCountsTheHeaderSourceNotTheBalancer() {
        let limit = ClientLimit(maximum: 1)
        let policy = AdmissionPolicy(proxyProtocol: true, clientLimit: limit)
        func admit(_ source: String) -> (AdmissionGate, AdmissionGate.Step) {
            var gate = AdmissionGate()
            _ = gate.open(peer: balancer, policy: policy)
            let step = feed(&gate, Array("PROXY TCP4 \(source) 127.0.0.1 5000 6379\r\n".utf8), policy)
            return (gate, step)
        }
        var (first, step) = admit("203.0.113.7")
        XCTAssertEqual(step, .serve(from: v1.count))
        XCTAssertEqual(first.place, ClientKey(host: "203.0.113.7"))
        // Another client behind the same balancer has a place of its own.
        XCTAssertEqual(admit("198.51.100.9").1, .serve(from: "PROXY TCP4 198.51.100.9 127.0.0.1 5000 6379\r\n".utf8.count))
        // The same client again is over its limit.
        XCTAssertEqual(admit("203.0.113.7").1, .refuse(.overLimit(ClientKey(host: "203.0.113.7")!, maximum: 1)))
        XCTAssertEqual(AdmissionRefusal.overLimit(ClientKey(host: "203.0.113.7")!, maximum: 1).closeReason, .limit)
        // Closing gives the place back, once.
        first.close(policy: policy)
        XCTAssertNil(first.place)
        XCTAssertEqual(limit.count(ClientKey(host: "203.0.113.7")!), 0)
        XCTAssertEqual(admit("203.0.113.7").1, .serve(from: v1.count))
    }

    func testWithoutHeaderTheLimitCountsThePeer() {
        let policy = AdmissionPolicy(clientLimit: ClientLimit(maximum: 1))
        var first = AdmissionGate(), second = AdmissionGate()
        XCTAssertEqual(first.open(peer: balancer, policy: policy), .serve(from: 0))
        XCTAssertEqual(second.open(peer: balancer, policy: policy), .refuse(.overLimit(ClientKey(balancer)!, maximum: 1)))
        XCTAssertNil(second.place, "a refused connection holds no place")
    }

    func testLocalCommandIsTheBalancersOwnConnectionAndAHealthCheck() {
        let limit = ClientLimit(maximum: 5)
        let policy = AdmissionPolicy(proxyProtocol: true, clientLimit: limit)
        var gate = AdmissionGate()
        _ = gate.open(peer: balancer, policy: policy)
        XCTAssertEqual(feed(&gate, v2Local, policy), .serve(from: v2Local.count))
        XCTAssertTrue(gate.isHealthCheck)
        XCTAssertEqual(gate.place, ClientKey(balancer))
        XCTAssertEqual(gate.name(peer: balancer), "127.0.0.1:40000")
    }

    func testEndOfInputOrTimeoutWhileTheHeaderIsPendingIsARefusal() {
        let policy = AdmissionPolicy(proxyProtocol: true)
        var gate = AdmissionGate()
        _ = gate.open(peer: balancer, policy: policy)
        XCTAssertEqual(feed(&gate, Array(v1[..<7]), policy), .wait)
        XCTAssertEqual(gate.endOfInput(), .endedInHeader(received: 7))
        XCTAssertEqual(gate.timedOut(), .headerTimeout(received: 7))
        XCTAssertEqual(feed(&gate, Array(v1[7...]), policy), .serve(from: v1.count - 7))
        XCTAssertNil(gate.endOfInput(), "after the header, the end of input is the protocol's")
        XCTAssertNil(gate.timedOut())
    }
}
