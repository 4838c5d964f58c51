// A server executable of this package (or a third-party one) as the example tests (chat,
// resp-server) see it: a TestProcess on a loopback port, learned from its `listening on
// HOST:PORT` line (or a fixed port polled until it accepts). Only a view: starting, output,
// signals and /proc are TestProcess's.

import Foundation
import Glibc

/// A server run by ``TestProcess``, killed on deinit.
public final class ChildServer {
    /// Where the server's stderr goes.
    public enum StderrSink {
        /// Read as it comes, for ``log``.
        case file
        /// A pipe the test holds open and never reads, as a stalled log reader (a paused `| less`,
        /// a stuck log shipper): once its 64 KiB fill, a server that writes its log synchronously
        /// blocks in the kernel (`anon_pipe_write`).
        case pipeNeverRead
    }

    /// The process behind the server.
    public let process: TestProcess
    /// The port it listens on (announced, or the fixed one).
    public let port: Int
    /// The server's process id.
    public var pid: pid_t { process.pid }
    private let stderrNeverRead: Bool

    /// Starts `binary ARGUMENTS`. With `announcesPort`, waits (at most 10 s) for its
    /// `listening on 127.0.0.1:PORT` line on stdout; otherwise polls `port` until it accepts.
    public init(binary: URL, arguments: [String], announcesPort: Bool = true, port fixed: Int = 0,
                stderr sink: StderrSink = .file) throws {
        stderrNeverRead = sink == .pipeNeverRead
        if announcesPort {
            process = try TestProcess.server(binary.path, arguments, stderr: stderrNeverRead ? .paused : .collected)
        } else {
            process = try TestProcess.server(binary.path, arguments, fixedPort: fixed)
        }
        port = process.port
    }

    /// What the server logged on stderr, for failure messages (nothing for a never-read pipe).
    public var log: String {
        stderrNeverRead ? "(stderr went to a pipe that is never read)" : process.stderr.text
    }

    /// Bytes the server wrote into the never-read stderr pipe and nobody took: at the pipe's
    /// capacity (64 KiB by default) once the server has logged that much. 0 when stderr is read.
    public var stderrPipeBytes: Int { stderrNeverRead ? process.stderr.unreadBytes : 0 }

    /// The server's resident set size in KiB, from /proc.
    public var residentKiB: Int { process.residentKiB() ?? -1 }

    /// The most the server's resident set has been since it started, in KiB (VmHWM).
    public var peakResidentKiB: Int { process.peakResidentKiB() ?? -1 }

    /// Sends `signal` to the server.
    public func signal(_ signal: Int32) { process.send(signal: signal) }

    /// Waits at most `timeout` seconds for the server to exit; its exit status (128 + the
    /// signal if a signal killed it), or nil if it is still running then.
    public func waitForExit(timeout: Double = 8) -> Int32? {
        switch process.waitForExit(timeout: timeout) {
        case .exited(let code): return code
        case .signaled(let signal): return 128 + signal
        case nil: return nil
        }
    }

    /// An executable of this package, built next to the test bundle.
    public static func binary(_ name: String) throws -> URL {
        URL(fileURLWithPath: try TestProcess.binaryPath(name))
    }
}

/// A failure of the example tests' harness (the same as ``TestFailure``).
public typealias HarnessFailure = TestFailure
