// nio-echo: baseline SwiftNIO echo server (modelled on NIO's own NIOEchoServer
// example) used by reflectd's comparison benchmarks.
//
//   nio-echo [--port P]        (default 8887; also accepts --port=P or a bare
//                               positional port; port 0 = pick a free port)
//
// One event loop (MultiThreadedEventLoopGroup(numberOfThreads: 1)), binds
// 0.0.0.0, prints exactly "listening on 0.0.0.0:PORT" (the real bound port)
// to stderr, echoes every byte back unchanged, and exits 0 on SIGTERM/SIGINT.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import NIOCore
import NIOPosix

private final class EchoHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Write back what we read; no promise to save allocations.
        context.write(data, promise: nil)
    }

    // Flush once per read burst so multiple buffers can use gathering writes.
    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

private func usage(_ code: Int32) -> Never {
    let msg = "usage: nio-echo [--port P]   (default 8887, 0 = ephemeral)\n"
    fputs(msg, code == 0 ? stdout : stderr)
    exit(code)
}

private func parsePort(_ s: String) -> Int {
    guard let p = Int(s), (0...65535).contains(p) else {
        fputs("nio-echo: invalid port '\(s)'\n", stderr)
        exit(2)
    }
    return p
}

var port = 8887
var args = CommandLine.arguments.dropFirst()
while let a = args.popFirst() {
    if a == "--port" || a == "-p" {
        guard let v = args.popFirst() else { usage(2) }
        port = parsePort(v)
    } else if a.hasPrefix("--port=") {
        port = parsePort(String(a.dropFirst("--port=".count)))
    } else if a == "--help" || a == "-h" {
        usage(0)
    } else if !a.hasPrefix("-") {
        port = parsePort(a)
    } else {
        fputs("nio-echo: unknown option '\(a)'\n", stderr)
        usage(2)
    }
}

let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
let bootstrap = ServerBootstrap(group: group)
    .serverChannelOption(.backlog, value: 256)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelInitializer { channel in
        // BackPressureHandler stops reading while the outbound side is not writable.
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(BackPressureHandler())
            try channel.pipeline.syncOperations.addHandler(EchoHandler())
        }
    }
    .childChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
    .childChannelOption(.maxMessagesPerRead, value: 16)
    .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator())

let channel: Channel
do {
    channel = try bootstrap.bind(host: "0.0.0.0", port: port).wait()
} catch {
    fputs("nio-echo: bind 0.0.0.0:\(port) failed: \(error)\n", stderr)
    try? group.syncShutdownGracefully()
    exit(1)
}

// SIGTERM / SIGINT: close the listening channel, which unblocks main below.
signal(SIGTERM, SIG_IGN)
signal(SIGINT, SIG_IGN)
let signalQueue = DispatchQueue(label: "nio-echo.signals")
var signalSources: [DispatchSourceSignal] = []
for sig in [SIGTERM, SIGINT] {
    let src = DispatchSource.makeSignalSource(signal: sig, queue: signalQueue)
    src.setEventHandler { channel.close(promise: nil) }
    src.resume()
    signalSources.append(src)
}

let boundPort = channel.localAddress?.port ?? port
fputs("listening on 0.0.0.0:\(boundPort)\n", stderr)
fflush(stderr)

try? channel.closeFuture.wait()
// Shutting the group down closes any still-open client channels.
try? group.syncShutdownGracefully()
exit(0)
