import Foundation
import Glibc
import TestSupport
import XCTest

/// resp-server's SIGUSR2 upgrade (Examples/resp/Server/RespUpgrade.swift): every connection and
/// every key carried to the new process, through the real redis-benchmark and over raw sockets;
/// a failed upgrade keeps the old process serving with its keys.
final class RespUpgradeTests: XCTestCase {
    /// Why 20 s: an upgrade under a loaded CI machine (debug build, redis-benchmark running)
    /// takes well under a second; 20 s only bounds a hang.
    static let upgradeTimeout = 20.0

    func testRedisBenchmarkAcrossTwoUpgradesHasNoErrorAndEveryKeyStays() throws {
        _ = try Tools.require("redis-benchmark")
        let server = try UpgradableResp()
        defer { server.stop() }
        // 1,000 sampled keys with binary values (NUL, CR, LF, 0xFF among them), set before.
        var samples: [(key: [UInt8], value: [UInt8])] = []
        var rng = SystemRandomNumberGenerator()
        for i in 0..<1_000 {
            let value = (0..<Int.random(in: 0...300, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) } + [0, 13, 10, 255]
            samples.append((Array("sample:\(i)".utf8), value))
        }
        let loader = try TestSocket.connect(port: server.port)
        try loader.send(samples.flatMap { respCommand([Array("SET".utf8), $0.key, $0.value]) })
        XCTAssertEqual(try loader.receive(exactly: 5 * samples.count, timeout: 30), Array(String(repeating: "+OK\r\n", count: samples.count).utf8))
        loader.close()

        // A probe connection opened before: it must survive both swaps; its PINGs time the stall.
        let probe = Probe(try TestSocket.connect(port: server.port))
        probe.start()

        let runs = Locked<[BenchmarkRun]>([])
        let swapsDone = Locked(false)
        // redis-benchmark as the issue asks, again if a run ends before both upgrades are done
        // (a fast machine), so that both happen while one runs.
        let port = server.port
        let benchmark = TestThread {
            repeat {
                let run = BenchmarkRun(try? Tools.run("redis-benchmark", ["-h", "127.0.0.1", "-p", "\(port)", "-t", "set,get,incr",
                                                                          "-n", "200000", "-c", "50", "-P", "16", "--csv"], timeout: 180))
                runs.withLock { $0.append(run) }
            } while !swapsDone.withLock { $0 }
        }
        // The benchmark's SET and INCR keys exist once it runs (it uses two fixed keys).
        XCTAssertTrue(eventually(timeout: 30) { (try? server.dbsize()) == samples.count + 2 }, "redis-benchmark did not start")
        // Two upgrades that each carry the benchmark's 50 connections and the probe (an upgrade
        // that falls between two runs carries only the probe: it is checked, not counted).
        var taken: [Int] = []
        while taken.filter({ $0 == 51 }).count < 2 && taken.count < 8 {
            let (before, valuesBefore) = (try server.dbsize(), try server.mget(samples.map(\.key)))
            taken.append(try server.upgrade())
            XCTAssertEqual(try server.dbsize(), before, "DBSIZE after the upgrade")
            XCTAssertEqual(try server.mget(samples.map(\.key)), valuesBefore, "the 1,000 sampled values after the upgrade")
            XCTAssertEqual(valuesBefore, respArray(samples.map(\.value)), "the sampled values are the ones set")
        }
        swapsDone.withLock { $0 = true }
        XCTAssertTrue(benchmark.join(timeout: 200), "redis-benchmark did not finish")
        let stall = probe.stop()
        XCTAssertTrue(probe.alive, "the probe connection did not survive the upgrades: \(probe.failure ?? "")")

        let all = runs.withLock { $0 }
        for run in all {
            XCTAssertEqual(run.status, 0, "redis-benchmark: \(run.output) \(run.errors)")
            XCTAssertEqual(run.tests, ["SET", "GET", "INCR"], "redis-benchmark's CSV: \(run.output)")
            for bad in ["ERR", "rror", "WARNING"] {
                XCTAssertFalse(run.output.contains(bad) || run.errors.contains(bad), "\(bad) in: \(run.output) \(run.errors)")
            }
        }
        // 50 benchmark connections and the probe, unless a run had just ended (then only the probe).
        for count in taken { XCTAssertTrue(count == 51 || count == 1, "connections taken by an upgrade: \(count)") }
        XCTAssertEqual(taken.filter { $0 == 51 }.count, 2, "two upgrades carried the benchmark's 50 connections: \(taken)")
        let requests = all.count * 600_000
        let benchmarkMax = all.map(\.maxLatencyMs).max() ?? 0
        print("RESP UPGRADE RESULT: \(all.count) redis-benchmark run(s), \(requests) requests, 0 errors, \(taken.count) upgrades taking \(taken) connections; longest stall: redis-benchmark max latency \(benchmarkMax) ms, probe PING \(Int(stall * 1000)) ms")

        // Then a failed upgrade: the new binary exits 1. The old process serves on, with its keys.
        let (before, valuesBefore) = (try server.dbsize(), try server.mget(samples.map(\.key)))
        try server.failUpgrade()
        XCTAssertEqual(try server.dbsize(), before)
        XCTAssertEqual(try server.mget(samples.map(\.key)), valuesBefore)
    }

    func testAHalfReadRequestAndUnwrittenRepliesCrossTheUpgrade() throws {
        let server = try UpgradableResp()
        defer { server.stop() }
        // A 1 MiB value, read 24 times by a client that does not read yet: most replies wait in
        // the server, unwritten, when the upgrade comes.
        let big = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 13) }
        let writer = try TestSocket.connect(port: server.port)
        try writer.send(respCommand([Array("SET".utf8), Array("big".utf8), big]))
        XCTAssertEqual(try writer.receive(exactly: 5), Array("+OK\r\n".utf8))
        let reader = try TestSocket.connect(port: server.port, receiveBuffer: 4096)
        try reader.send((0..<24).flatMap { _ in respCommand([Array("GET".utf8), Array("big".utf8)]) })
        // Half a request: the new process must finish reading it.
        let half = try TestSocket.connect(port: server.port)
        let request = respCommand([Array("SET".utf8), Array("half".utf8), [0, 1, 2, 13, 10, 3]])
        try half.send(Array(request.prefix(17)))
        usleep(200_000)
        XCTAssertEqual(try server.upgrade(), 3, "every connection taken")
        try half.send(Array(request.dropFirst(17)))
        XCTAssertEqual(try half.receive(exactly: 5), Array("+OK\r\n".utf8), "the request begun before the upgrade is answered after it")
        let reply = Array("$\(big.count)\r\n".utf8) + big + Array("\r\n".utf8)
        for k in 0..<24 {
            XCTAssertEqual(try reader.receive(exactly: reply.count, timeout: 30), reply, "reply \(k) to the pipelined GETs")
        }
        XCTAssertEqual(try server.mget([Array("half".utf8)]), respArray([[0, 1, 2, 13, 10, 3]]))
    }

    /// A parked connection (it stopped reading at a request boundary, its replies past the high
    /// watermark) handed over while its unsent replies are between the watermarks: below the
    /// high one, so the new reactor would not see backpressure on its own, above the low one, so
    /// the old reactor had not told the handler yet. It must go on in the new process with the
    /// requests it kept (in its framer and still in the socket): every reply, in order,
    /// byte-exact, then a PING answered.
    ///
    /// The client steers it there: a small MSS and receive buffer make resp-server's kernel take
    /// its output in small steps, and the client reads in small pieces, estimating the server's
    /// unsent replies from what it was sent (read, in its receive queue, in the server's send
    /// queue, asked of the kernel), until they sit between the watermarks, and stays there.
    func testAParkedConnectionBetweenItsWatermarksGoesOnAfterTheUpgrade() throws {
        let server = try UpgradableResp()
        defer { server.stop() }
        // resp-server's reactor watermarks (ReactorConfiguration's defaults).
        let (low, high) = (32 * 1024, 64 * 1024)
        let big = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 13) }
        let small: [UInt8] = [0, 13, 10, 0xff, 7]
        let writer = try TestSocket.connect(port: server.port)
        try writer.send(respCommand([Array("SET".utf8), Array("big".utf8), big]) + respCommand([Array("SET".utf8), Array("small".utf8), small]))
        XCTAssertEqual(try writer.receive(exactly: 10), Array("+OK\r\n+OK\r\n".utf8))
        writer.close()

        // 24 GETs of 1 MiB, then 5,000 small GETs (about 125 KiB of requests: more than one
        // read takes, so some wait in the socket while the connection is parked).
        let bigReply = Array("$\(big.count)\r\n".utf8) + big + Array("\r\n".utf8)
        let smallReply = Array("$\(small.count)\r\n".utf8) + small + Array("\r\n".utf8)
        let (bigGets, smallGets) = (24, 5_000)
        let client = try TestSocket.connect(port: server.port, receiveBuffer: 4096, maxSegment: 536)
        let requests = Array(repeating: respCommand([Array("GET".utf8), Array("big".utf8)]), count: bigGets).flatMap { $0 }
            + Array(repeating: respCommand([Array("GET".utf8), Array("small".utf8)]), count: smallGets).flatMap { $0 }
        try client.send(requests, timeout: 30)
        let expected = Array(repeating: bigReply, count: bigGets).flatMap { $0 } + Array(repeating: smallReply, count: smallGets).flatMap { $0 }

        // While only big replies are produced, the server runs one GET each time its unsent
        // replies fall below the low watermark, so they are less than one reply plus `low`:
        // (-(bytes it handed to its kernel)) modulo one reply is exactly what it holds.
        let clientPort = try Self.localPort(client.fd)
        var received: [UInt8] = []
        func unsent() -> Int? {
            guard let sendQueue = Self.tcpSendQueue(local: server.port, remote: clientPort),
                  let receiveQueue = Self.receiveQueue(client.fd) else { return nil }
            let handed = received.count + sendQueue + receiveQueue
            return (bigReply.count - handed % bigReply.count) % bigReply.count
        }
        let deadline = monotonicSeconds() + 90
        var parked = false
        while !parked && received.count < 20 * bigReply.count && monotonicSeconds() < deadline {
            if let bytes = try client.receiveNow(max: 1024) {
                XCTAssertFalse(bytes.isEmpty, "EOF from resp-server")
                if bytes.isEmpty { return }
                received += bytes
            }
            usleep(1_000)
            // Between the watermarks, with a margin, and still there a moment later: it stays.
            guard let first = unsent(), first > low + 4096, first < high - 4096 else { continue }
            usleep(200_000)
            guard let second = unsent() else { continue }
            parked = second > low + 2048 && second < high - 2048
        }
        guard parked else {
            return XCTFail("the connection's unsent replies never settled between the watermarks (\(received.count) bytes read): the case is not reached")
        }
        XCTAssertEqual(firstDifference(received, Array(expected.prefix(received.count))), nil, "the replies read before the upgrade")

        XCTAssertEqual(try server.upgrade(), 1, "the parked connection is taken")
        let rest = try client.receive(exactly: expected.count - received.count, timeout: 30)
        XCTAssertEqual(firstDifference(rest, Array(expected.dropFirst(received.count))), nil,
                       "every reply after the upgrade, in order, byte-exact (\(received.count) bytes were read before it)")
        try client.send(Array("PING\r\n".utf8))
        XCTAssertEqual(try client.receive(exactly: 7, timeout: 10), Array("+PONG\r\n".utf8), "the connection is still served")
    }

    /// A connected socket's local port.
    static func localPort(_ fd: CInt) throws -> Int {
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let rc = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard rc == 0 else { throw HarnessFailure("getsockname: errno \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// The bytes in the send queue (written, not yet acknowledged) of the IPv4 loopback TCP
    /// socket from port `local` to port `remote`, whichever process holds it: one exact lookup
    /// over NETLINK_SOCK_DIAG (what `ss` asks), so it can be asked every millisecond. Nil if
    /// there is no such socket or the kernel does not answer.
    static func tcpSendQueue(local: Int, remote: Int) -> Int? {
        let fd = socket(AF_NETLINK, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 4 /* NETLINK_SOCK_DIAG */)
        guard fd >= 0 else { return nil }
        defer { Glibc.close(fd) }
        // nlmsghdr (16) + inet_diag_req_v2 (8) + inet_diag_sockid (48).
        var request = [UInt8](repeating: 0, count: 72)
        func put32(_ value: UInt32, at offset: Int) { withUnsafeBytes(of: value) { request.replaceSubrange(offset..<offset + 4, with: $0) } }
        put32(72, at: 0)
        request[4] = 20  // SOCK_DIAG_BY_FAMILY
        request[6] = 1  // NLM_F_REQUEST: one socket, by its id
        request[16] = UInt8(AF_INET)
        request[17] = UInt8(IPPROTO_TCP)
        put32(UInt32.max, at: 20)  // every state
        request[24] = UInt8(local >> 8); request[25] = UInt8(local & 0xff)  // ports, big endian
        request[26] = UInt8(remote >> 8); request[27] = UInt8(remote & 0xff)
        request[28...31] = [127, 0, 0, 1][...]
        request[44...47] = [127, 0, 0, 1][...]
        put32(UInt32.max, at: 64)  // no cookie
        put32(UInt32.max, at: 68)
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == request.count else { return nil }
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, 1000) == 1 else { return nil }
        var reply = [UInt8](repeating: 0, count: 8192)
        let n = reply.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        // An inet_diag_msg answers (type 20); an error (type 2) means no such socket.
        guard n >= 96, reply[4] == 20 else { return nil }
        // nlmsghdr (16), then family, state, timer, retrans (4), sockid (48), expires (4), rqueue, wqueue.
        return Int(reply.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 76, as: UInt32.self) })
    }

    /// The bytes received and not read yet on `fd` (FIONREAD).
    static func receiveQueue(_ fd: CInt) -> Int? {
        var count: CInt = 0
        return ioctl(fd, UInt(FIONREAD), &count) == 0 ? Int(count) : nil
    }

    func testAServerAtItsMaxmemoryStillRefusesWritesAfterTheUpgrade() throws {
        let server = try UpgradableResp(["--maxmemory", "1mb"])
        defer { server.stop() }
        let client = try TestSocket.connect(port: server.port)
        let value = [UInt8](repeating: 0xab, count: 10_000)
        let oom = Array("-OOM command not allowed when used memory > 'maxmemory'.\r\n".utf8)
        var stored = 0
        // Fill until the limit refuses a write.
        while stored < 1_000 {
            try client.send(respCommand([Array("SET".utf8), Array("fill:\(stored)".utf8), value]))
            let first = try client.receive(exactly: 1)
            if first == [UInt8(ascii: "+")] {
                XCTAssertEqual(try client.receive(exactly: 4), Array("OK\r\n".utf8))
                stored += 1
                continue
            }
            XCTAssertEqual(first + (try client.receive(exactly: oom.count - 1)), oom)
            break
        }
        XCTAssertGreaterThan(stored, 10)
        XCTAssertLessThan(stored, 1_000, "--maxmemory 1mb never refused a write")
        XCTAssertEqual(try server.upgrade(), 1)
        XCTAssertEqual(try server.dbsize(), stored)
        try client.send(respCommand([Array("SET".utf8), Array("one-more".utf8), value]))
        XCTAssertEqual(try client.receive(exactly: oom.count), oom, "the limit holds against the keys carried over")
        try client.send(respCommand([Array("DEL".utf8), Array("fill:0".utf8)]))
        XCTAssertEqual(try client.receive(exactly: 4), Array(":1\r\n".utf8))
    }

    func testAFailedUpgradeKeepsServingWithItsKeysAndLaterOneWorks() throws {
        let server = try UpgradableResp()
        defer { server.stop() }
        let client = try TestSocket.connect(port: server.port)
        try client.send(respCommand([Array("SET".utf8), Array("k".utf8), [0xff, 0, 0x0a]]))
        XCTAssertEqual(try client.receive(exactly: 5), Array("+OK\r\n".utf8))
        try server.failUpgrade()
        try client.send(respCommand([Array("GET".utf8), Array("k".utf8)]))
        XCTAssertEqual(try client.receive(exactly: 9), Array("$3\r\n".utf8) + [0xff, 0, 0x0a] + Array("\r\n".utf8))
        server.restoreBinary()
        XCTAssertEqual(try server.upgrade(), 1)
        try client.send(respCommand([Array("GET".utf8), Array("k".utf8)]))
        XCTAssertEqual(try client.receive(exactly: 9), Array("$3\r\n".utf8) + [0xff, 0, 0x0a] + Array("\r\n".utf8))
    }
}

// MARK: the server under upgrade

/// resp-server started from a private copy of the binary, so the file at its path can be
/// replaced (as an operator would, and with a failing "binary"); follows its pid across upgrades.
final class UpgradableResp: @unchecked Sendable {
    let directory: URL
    let path: URL
    let original: URL
    let server: ChildServer
    var port: Int { server.port }
    private(set) var pid: pid_t

    init(_ arguments: [String] = []) throws {
        original = try ChildServer.binary("resp-server")
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("resp-upgrade-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        path = directory.appendingPathComponent("resp-server")
        try FileManager.default.copyItem(at: original, to: path)
        server = try ChildServer(binary: path, arguments: ["--host", "127.0.0.1", "--port", "0", "--log-level", "info"] + arguments)
        pid = server.process.processIdentifier
    }

    /// Takeovers logged so far: (connections, new pid).
    var takeovers: [(connections: Int, pid: pid_t)] {
        server.log.split(separator: "\n").compactMap { line in
            guard let took = line.range(of: "upgrade: took "), let this = line.range(of: "(this is pid ") else { return nil }
            let count = Int(line[took.upperBound...].prefix { $0.isNumber }) ?? -1
            let pid = pid_t(line[this.upperBound...].prefix { $0.isNumber }) ?? -1
            return (count, pid)
        }
    }

    /// SIGUSR2; waits for the new process to take over and the old one to exit. Returns the
    /// connections taken.
    func upgrade() throws -> Int {
        let before = takeovers.count
        let old = pid
        kill(old, SIGUSR2)
        guard eventually(timeout: RespUpgradeTests.upgradeTimeout, { takeovers.count > before }) else {
            throw HarnessFailure("no takeover within \(RespUpgradeTests.upgradeTimeout) s; log:\n\(server.log.suffix(3000))")
        }
        let last = takeovers[takeovers.count - 1]
        pid = last.pid
        guard eventually(timeout: RespUpgradeTests.upgradeTimeout, { !Self.alive(old) }) else {
            throw HarnessFailure("the old process \(old) did not exit after the hand-over")
        }
        return last.connections
    }

    /// Replaces the binary with one that exits 1, sends SIGUSR2, waits for the failure to be
    /// logged, and checks that this process still runs.
    func failUpgrade() throws {
        let failures = server.log.components(separatedBy: "upgrade failed").count
        try replaceBinary(with: "#!/bin/sh\nexit 1\n")
        kill(pid, SIGUSR2)
        guard eventually(timeout: RespUpgradeTests.upgradeTimeout, { server.log.components(separatedBy: "upgrade failed").count > failures }) else {
            throw HarnessFailure("the failed upgrade was not logged; log:\n\(server.log.suffix(3000))")
        }
        XCTAssertTrue(server.log.contains("exited with status 1"), "the failure names the exit status: \(server.log.suffix(2000))")
        XCTAssertTrue(Self.alive(pid), "the old process still runs after a failed upgrade")
    }

    func restoreBinary() {
        let temporary = directory.appendingPathComponent("resp-server.new")
        try? FileManager.default.removeItem(at: temporary)
        try? FileManager.default.copyItem(at: original, to: temporary)
        _ = rename(temporary.path, path.path)
    }

    func replaceBinary(with script: String) throws {
        let temporary = directory.appendingPathComponent("resp-server.new")
        try script.write(to: temporary, atomically: false, encoding: .utf8)
        chmod(temporary.path, 0o755)
        guard rename(temporary.path, path.path) == 0 else { throw HarnessFailure("rename failed: errno \(errno)") }
    }

    func dbsize() throws -> Int {
        let s = try TestSocket.connect(port: port)
        defer { s.close() }
        try s.send(respCommand([Array("DBSIZE".utf8)]))
        var line: [UInt8] = []
        while !line.suffix(2).elementsEqual([13, 10]) { line += try s.receive(exactly: 1) }
        guard line.first == UInt8(ascii: ":"), let n = Int(String(decoding: line.dropFirst().dropLast(2), as: UTF8.self)) else {
            throw HarnessFailure("DBSIZE answered \(TestSocket.preview(line))")
        }
        return n
    }

    /// The raw reply to MGET of `keys` (its length is known once the values are: read whole).
    func mget(_ keys: [[UInt8]]) throws -> [UInt8] {
        let s = try TestSocket.connect(port: port)
        defer { s.close() }
        try s.send(respCommand([Array("MGET".utf8)] + keys))
        var reply: [UInt8] = []
        func line() throws -> [UInt8] {
            var l: [UInt8] = []
            while !l.suffix(2).elementsEqual([13, 10]) { l += try s.receive(exactly: 1, timeout: 10) }
            reply += l
            return l
        }
        let header = try line()
        let count = Int(String(decoding: header.dropFirst().dropLast(2), as: UTF8.self)) ?? 0
        for _ in 0..<count {
            let h = try line()
            let n = Int(String(decoding: h.dropFirst().dropLast(2), as: UTF8.self)) ?? -1
            if n >= 0 { reply += try s.receive(exactly: n + 2, timeout: 10) }
        }
        return reply
    }

    /// SIGTERM to whichever process serves now; SIGKILL if it does not stop.
    func stop() {
        kill(pid, SIGTERM)
        if !eventually(timeout: 10, { !Self.alive(pid) }) { kill(pid, SIGKILL) }
        _ = server.waitForExit(timeout: 5)
        try? FileManager.default.removeItem(at: directory)
    }

    static func alive(_ pid: pid_t) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return false }
        return !(stat.split(separator: ")").last?.split(separator: " ").first == "Z")
    }
}

/// One connection that PINGs in a loop and records the longest wait for a PONG.
final class Probe: @unchecked Sendable {
    let socket: TestSocket
    private let running = Locked(true)
    private let longest = Locked(0.0)
    private(set) var failure: String?
    private var thread: TestThread?
    var alive: Bool { failure == nil }

    init(_ socket: TestSocket) { self.socket = socket }

    func start() {
        thread = TestThread { [self] in
            while running.withLock({ $0 }) {
                let start = monotonicSeconds()
                do {
                    try socket.send(Array("PING\r\n".utf8))
                    guard try socket.receive(exactly: 7, timeout: 20) == Array("+PONG\r\n".utf8) else { failure = "wrong reply"; return }
                } catch {
                    failure = "\(error)"
                    return
                }
                let took = monotonicSeconds() - start
                longest.withLock { $0 = max($0, took) }
                usleep(1_000)
            }
        }
    }

    /// Stops the loop; the longest PING round trip in seconds.
    func stop() -> Double {
        running.withLock { $0 = false }
        _ = thread?.join(timeout: 30)
        return longest.withLock { $0 }
    }
}

/// One redis-benchmark run and what its CSV says.
struct BenchmarkRun {
    var status: Int32 = -1
    var output = ""
    var errors = ""
    /// The tests in its CSV, in order.
    var tests: [String] = []
    /// The largest max_latency_ms of its tests.
    var maxLatencyMs = 0.0

    init(_ result: (status: Int32, stdout: [UInt8], stderr: String)?) {
        guard let result else { errors = "did not finish"; return }
        status = result.status
        output = String(decoding: result.stdout, as: UTF8.self)
        errors = result.stderr
        for line in output.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: ",").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
            guard fields.count >= 8 else { continue }
            tests.append(fields[0])
            maxLatencyMs = max(maxLatencyMs, Double(fields[7]) ?? 0)
        }
    }
}

/// A command as a RESP multibulk request.
func respCommand(_ arguments: [[UInt8]]) -> [UInt8] {
    var out = Array("*\(arguments.count)\r\n".utf8)
    for a in arguments { out += Array("$\(a.count)\r\n".utf8) + a + [13, 10] }
    return out
}

/// The reply to an MGET whose values are `values` (all present).
func respArray(_ values: [[UInt8]]) -> [UInt8] {
    var out = Array("*\(values.count)\r\n".utf8)
    for v in values { out += Array("$\(v.count)\r\n".utf8) + v + [13, 10] }
    return out
}
