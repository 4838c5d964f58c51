// Running the built `reflectd` executable as a user would (on top of OpsProcess), and /proc
// readings for the binary tests.

import TestSupport
import Foundation
import Glibc
import Synchronization

/// How a child process ended.
typealias ExitStatus = OpsProcess.End

/// A child process started by a test, with the conveniences the binary tests use. Spawning,
/// output collection, signals and reaping are OpsProcess's (Operations/OpsProcess.swift).
final class ServerProcess: @unchecked Sendable {
    let process: OpsProcess
    var pid: pid_t { process.pid }
    var stdout: OpsOutput { process.stdout }
    var stderr: OpsOutput { process.stderr }

    private init(_ process: OpsProcess) { self.process = process }

    /// The `reflectd` executable next to the running test bundle (for example `.build/debug/`).
    static func reflectdPath() throws -> String { try Ops.reflectdPath() }

    /// Starts the built reflectd with `arguments`.
    static func reflectd(_ arguments: [String]) throws -> ServerProcess {
        try launch(try reflectdPath(), arguments)
    }

    /// Starts `executable` with `arguments` (see OpsProcess.spawn).
    static func launch(_ executable: String, _ arguments: [String]) throws -> ServerProcess {
        ServerProcess(try OpsProcess.spawn(executable, arguments))
    }

    /// Waits for the `listening on HOST:PORT` line; returns the line and the port in it.
    func waitForListening(timeout: Double = 10) throws -> (line: String, port: Int) {
        let address = try process.waitForListening(count: 1, timeout: timeout)[0]
        guard let port = Ops.port(of: address) else {
            throw OpsFailure("cannot parse a port from \(address.debugDescription)")
        }
        return ("listening on \(address)", port)
    }

    func send(signal: CInt) { process.send(signal: signal) }
    func pollExit() -> ExitStatus? { process.pollExit() }
    func waitForExit(timeout: Double) -> ExitStatus? { process.waitForExit(timeout: timeout) }
    func kill() { process.kill() }

    /// User plus system CPU time the process has used so far, from /proc/PID/stat.
    func cpuSeconds() -> Double? {
        guard let stat = readProcFile("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return nil }
        // Fields after "(comm)" start at field 3 (state); utime is field 14, stime field 15.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let utime = Double(fields[11]), let stime = Double(fields[12]) else { return nil }
        return (utime + stime) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}

/// Sockets in TIME_WAIT whose local port is `port` (IPv4 and IPv6), from /proc/net/tcp{,6}.
func timeWaitSockets(localPort port: Int) -> Int {
    var count = 0
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        guard let text = readProcFile(table) else { continue }
        for line in text.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ")
            guard fields.count > 3, let colon = fields[1].lastIndex(of: ":"),
                  let local = Int(fields[1][fields[1].index(after: colon)...], radix: 16) else { continue }
            if local == port && fields[3] == "06" { count += 1 }  // 06: TCP_TIME_WAIT
        }
    }
    return count
}

/// The whole of a /proc file. Their size reads as 0, so read(2) until EOF instead of trusting it.
func readProcFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var data: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n > 0 {
            data += buffer[..<n]
        } else if n < 0 && errno == EINTR {
            continue
        } else {
            break
        }
    }
    return String(decoding: data, as: UTF8.self)
}
