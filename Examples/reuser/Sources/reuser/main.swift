// A tiny server on reflectd's products only. Usage: reuser PORT [--proxy-protocol] [--max-connections-per-client N]
// Protocol: once admitted, the server writes `hello <client>\n` (the PROXY header's source when one
// came, else the peer), then echoes every byte. SIGUSR2 swaps the binary keeping every connection.
import ClientAdmission
import Glibc
import Logging
import NonBlockingLog
import Reactor
import ServerKit
import ZeroDropUpgrade

struct Client { var gate = AdmissionGate(); var name = "" }

struct HelloEcho: ConnectionHandler {
    let policy: AdmissionPolicy
    func makeState() -> Client { Client() }
    func onOpen(_ connection: borrowing Connection<Self>, state: inout Client) -> Action {
        switch state.gate.open(peer: connection.peer, policy: policy) {
        case .serve: return admitted(connection, &state, UnsafeRawBufferPointer(start: nil, count: 0))
        case .wait: state.gate.proxy?.timer = connection.schedule(after: AdmissionPolicy.headerTimeout); return .continue
        case .refuse(let why): return .refuse(why.closeReason)
        }
    }
    func onRead(_ bytes: UnsafeRawBufferPointer, connection: borrowing Connection<Self>, state: inout Client) -> Action {
        guard state.gate.isWaiting else { _ = connection.write(bytes); return .continue }
        switch state.gate.feed(bytes, policy: policy) {
        case .wait: return .continue
        case .serve(let from): return admitted(connection, &state, UnsafeRawBufferPointer(rebasing: bytes[from...]))
        case .refuse(let why): return .refuse(why.closeReason)
        }
    }
    func admitted(_ connection: borrowing Connection<Self>, _ state: inout Client, _ rest: UnsafeRawBufferPointer) -> Action {
        if let timer = state.gate.proxy?.timer { connection.cancel(timer) }
        state.name = state.gate.header?.source.map { "\($0)" } ?? "\(connection.peer)"
        _ = connection.write("hello \(state.name)\n"); _ = connection.write(rest); return .continue
    }
    func onReadEOF(_ connection: borrowing Connection<Self>, state: inout Client) -> Action {
        state.gate.endOfInput().map { .refuse($0.closeReason) } ?? .close(.eof)
    }
    func onTimer(_ timer: TimerID, connection: borrowing Connection<Self>, state: inout Client) -> Action {
        state.gate.timedOut().map { .refuse($0.closeReason) } ?? .continue
    }
    func onClose(_ connection: borrowing Connection<Self>, state: inout Client, reason: CloseReason) { state.gate.close(policy: policy) }
}

/// Across an upgrade: the place's marker (0: none) and 8 bytes little-endian, then the name.
struct ClientCodec: HandOverCodec {
    func encode(_ state: Client) -> [UInt8] {
        guard let (marker, value) = state.gate.place?.handOver else { return [0] + Array(state.name.utf8) }
        return [marker] + withUnsafeBytes(of: value.littleEndian, Array.init) + Array(state.name.utf8)
    }
    func decode(_ bytes: ArraySlice<UInt8>, peer: SocketAddress) throws(UpgradeError) -> Client {
        var client = Client(), rest = bytes.dropFirst()
        if let marker = bytes.first, marker != 0 {
            let value = rest.prefix(8).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            guard rest.count >= 8, let key = ClientKey(handOverMarker: marker, value: value) else { throw UpgradeError("bad client key") }
            client.gate.restore(place: key)
            rest = rest.dropFirst(8)
        }
        client.name = String(decoding: rest, as: UTF8.self)
        return client
    }
}

let arguments = Array(CommandLine.arguments.dropFirst())
let limit = arguments.firstIndex(of: "--max-connections-per-client").flatMap { arguments.dropFirst($0 + 1).first }.flatMap { Int($0) }
guard let port = arguments.first.flatMap(Int.init) else { UnbufferedOutput.write("usage: reuser PORT [--proxy-protocol] [--max-connections-per-client N]\n", to: 2); exit(2) }
let policy = AdmissionPolicy(proxyProtocol: arguments.contains("--proxy-protocol"), clientLimit: limit.map(ClientLimit.init))
Signals.ignoreSIGPIPE()
Signals.block([SIGTERM, SIGINT, SIGUSR2])  // before any thread starts: only the signalfd sees them
let log = QueuedLogHandler.bootstrap(label: "reuser", logLevel: .info)
let logger = Logger(label: "reuser")
let environment = UpgradeEnvironment(prefix: "REUSER_UPGRADE")
let takeOver = try TakeOver.receiveIfUpgrading(environment: environment, codec: ClientCodec()) { _ in }
var hooks = UpgradeHooks<HelloEcho>()
hooks.include = { !$0.gate.isWaiting }  // those still sending their header close with this process
hooks.lost = { _, state in state.gate.place.map(policy.release) }
let upgrader = Upgrader(executable: Upgrader<HelloEcho, ClientCodec>.resolveExecutable(), arguments: arguments,
                        environment: environment, codec: ClientCodec(), hooks: hooks, logger: logger)
let reactor = try Reactor(handler: HelloEcho(policy: policy))
upgrader.add(ReactorPort(index: 0, reactor: reactor))
var bound = try SocketAddress(host: "127.0.0.1", port: port)
if let takeOver {
    for record in takeOver.listeners(reactor: 0, of: 1) { bound = try reactor.attachHandedOverListener(record.listener) }
    let installed = takeOver.install(on: reactor, index: 0, of: 1, logger: logger) { _, state in
        if let place = state.gate.place { policy.clientLimit?.forceAcquire(place) }
    }
    takeOver.confirm(installed: installed, logger: logger) {}  // the old process exits now
} else {
    bound = try reactor.listen(on: bound)
}
try reactor.onSignals([SIGUSR2]) { _ in upgrader.signalled() }
try reactor.onSignals([SIGTERM, SIGINT]) { signal in
    if upgrader.stopRequested(signal, force: false) == .stopHere { reactor.handle.stop() }
}
UnbufferedOutput.write("listening on \(bound) pid \(getpid())\n", to: 1)
reactor.run()
upgrader.waitForUpgrade()
log.flush(timeout: .seconds(1))
