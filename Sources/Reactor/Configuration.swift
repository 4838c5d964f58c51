import Logging

/// How a reactor behaves. The defaults suit a server with many short-message connections.
public struct ReactorConfiguration: Sendable {
    /// Size of the one read buffer the reactor shares among all its connections.
    /// Why 64 KiB: a bulk sender fills it in one read (fewer system calls per byte), and it is
    /// allocated once per reactor, not per connection. (256 KiB cut system calls per MB of a
    /// loopback bulk stream 2.8× but cost more server CPU per MB, and would raise the per-peer
    /// bound below to 320 KiB: benchmarks/README.md, "Bulk: what costs what".)
    public var readBufferSize = 64 * 1024

    /// Stop reading from a connection when its unsent output passes this many bytes…
    public var highWatermark = 64 * 1024
    /// …and read again when it falls below this many. (SwiftNIO's defaults.)
    /// A peer that never reads can therefore make the reactor hold at most
    /// `highWatermark + readBufferSize` bytes for it.
    public var lowWatermark = 32 * 1024

    /// Close connections with no traffic in either direction for this many seconds (nil: never).
    /// The close happens between `idleTimeout` and `idleTimeout + 1` seconds after the last byte.
    public var idleTimeout: Int? = nil

    /// Set TCP_NODELAY on accepted TCP connections, so small replies are not held back by Nagle's
    /// algorithm waiting for the peer's delayed ACK.
    public var noDelay = true

    /// Enable TCP keepalive on accepted connections, probing after this many idle seconds (nil: off).
    public var keepAlive: Int? = nil

    /// A limit on open connections, possibly shared by several reactors (nil: only the fd limit).
    public var connectionLimit: ConnectionLimit? = nil

    /// How long a connection closed with pending output (``Action/close(_:)``, EOF, a stop) may
    /// go without its peer taking any of it before it is cut. Not a limit on the whole flush: a
    /// peer that keeps reading, however slowly, gets every byte and then EOF. One that takes
    /// nothing for this long (what is undelivered, the output buffer plus the kernel's
    /// unacknowledged bytes, sampled each period, did not shrink) is cut between `closeTimeout`
    /// and twice that after the last byte it took: with a reset (the peer reads ECONNRESET,
    /// never a clean EOF after a shortened stream) and ``CloseReason/closeTimeout``, its output
    /// freed at once. So a peer that stops reading cannot hold the connection and its output
    /// buffer (at most ``highWatermark`` + ``readBufferSize``) forever.
    public var closeTimeout: Duration = .seconds(10)

    /// Close a connection whose pending output has made no progress for this long (nil: never),
    /// with ``CloseReason/sendTimeout``, discarding that output. It runs whatever the
    /// connection is doing otherwise, also while reading from it is paused by backpressure, so a
    /// peer that stops reading cannot hold a connection and its buffers forever (nginx's
    /// `send_timeout`). The timeout counts from when output became pending or last made progress
    /// (the kernel took some of it); one timer per connection with pending output, re-armed only
    /// when it fires, so progress costs a clock read and no timer operation.
    public var sendTimeout: Duration? = nil

    /// After a stop is requested, how long connections get to flush before they are cut.
    public var shutdownGrace: Duration = .seconds(4)

    /// Let the reactor echo bulk input inside the kernel for handlers that allow it
    /// (``ConnectionHandler/echoesUnchanged(_:state:)``): splice(2) from the connection to a
    /// pipe of the reactor and back, instead of a read into user space and a write. It saves
    /// both copies of every byte. Used only while the process ignores SIGPIPE
    /// (``Signals/ignoreSIGPIPE()``: splice has no MSG_NOSIGNAL). Off: always read and write.
    public var kernelEcho = true

    /// Where the reactor reports accept errors and other events that are not a connection's.
    public var logger = Logger(label: "reactor")

    /// Creates the default configuration.
    public init() {}
}
