// A third-party echo server for reflect-bench to load: socat running /bin/cat per connection.

import Foundation
import Glibc
import XCTest

/// `socat TCP-LISTEN:PORT,reuseaddr,fork EXEC:/bin/cat` on 127.0.0.1 and a free port; skipped
/// (XCTSkip) only where socat is not installed (.ci/run installs it).
final class SocatEcho {
    let process = Process()
    let port: Int

    init() throws {
        guard let socat = ["/usr/bin/socat", "/bin/socat", "/usr/local/bin/socat"].first(where: {
            FileManager.default.isExecutableFile(atPath: $0)
        }) else { throw XCTSkip("socat is not installed") }
        // A free port: bind port 0, read it, close (socat binds it a moment later).
        let probe = try TinyServer { fd in close(fd) }
        port = probe.port
        probe.stop()
        process.executableURL = URL(fileURLWithPath: socat)
        process.arguments = ["TCP-LISTEN:\(port),bind=127.0.0.1,reuseaddr,fork", "EXEC:/bin/cat"]
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        // Ready when a connect succeeds (within 5 s).
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline {
            if Self.canConnect(port) { return }
            usleep(20_000)
        }
        stop()
        throw TestError("socat did not listen on 127.0.0.1:\(port) within 5 s")
    }

    static func canConnect(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return withUnsafePointer(to: &address) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }

    func stop() {
        guard process.isRunning else { return }
        process.terminate()
        let deadline = Date().addingTimeInterval(5)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }
}
