// A third-party echo server for reflect-bench to load: socat running /bin/cat per connection.

import Foundation
import Glibc
import TestSupport
import XCTest

/// A socat child process (TestSupport's TestProcess): found on the usual paths (XCTSkip where
/// socat is not installed; .ci/run installs it), started with `arguments`, ready once `ready()`
/// holds (within 5 s), and stopped with SIGTERM, then SIGKILL. One runner for the TCP and the UDP
/// echoes.
final class SocatProcess {
    let process: TestProcess

    init(_ arguments: [String], what: String, ready: () -> Bool) throws {
        guard let socat = ["/usr/bin/socat", "/bin/socat", "/usr/local/bin/socat"].first(where: {
            FileManager.default.isExecutableFile(atPath: $0)
        }) else { throw XCTSkip("socat is not installed") }
        process = try TestProcess.spawn(socat, arguments)
        guard eventually(timeout: 5, interval: 0.02, ready) else {
            stop()
            throw TestError("socat did not \(what) within 5 s; stderr: \(process.stderr.text)")
        }
    }

    /// Whether `call` (bind, for a UDP port) on a new socket of `type` to 127.0.0.1:`port` returns 0.
    static func loopback(_ port: Int, type: Int32, _ call: (CInt, UnsafePointer<sockaddr>, socklen_t) -> CInt) -> Bool {
        let fd = socket(AF_INET, type, 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return withUnsafePointer(to: &address) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { call(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    func stop() {
        process.send(signal: SIGTERM)
        if process.waitForExit(timeout: 5) == nil { process.kill() }
    }
}

/// `socat TCP-LISTEN:PORT,reuseaddr,fork EXEC:/bin/cat` on 127.0.0.1 and a free port.
final class SocatEcho {
    let port: Int
    private let socat: SocatProcess

    init() throws {
        // A free port: bind port 0, read it, close (socat binds it a moment later).
        let port = try LoopbackSockets.unusedPort()
        self.port = port
        socat = try SocatProcess(["TCP-LISTEN:\(port),bind=127.0.0.1,reuseaddr,fork", "EXEC:/bin/cat"],
                                 what: "listen on 127.0.0.1:\(port)") {
            LoopbackSockets.somethingListens(port: port)
        }
    }

    func stop() { socat.stop() }
}
