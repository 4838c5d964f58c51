#!/usr/bin/env python3
"""uvloop-echo: a TCP echo server on uvloop (libuv under asyncio), the idiomatic way: an
asyncio Protocol that writes back what it receives, with the transport's write-buffer watermarks
for back-pressure. A baseline for reflectd's benchmarks; see ../README.md for the conventions.

usage: echo.py [--port P]   (default port 8887; 0 picks a free port)

Needs the uvloop package (benchmarks/baselines/build.sh installs it with pip when it is missing).
"""
import argparse
import sys

DEFAULT_PORT = 8887
# Back-pressure, as SwiftNIO's defaults and reflectd's: stop reading from a peer whose unsent
# echo passes 64 KiB, resume below 32 KiB.
HIGH_WATERMARK = 64 * 1024
LOW_WATERMARK = 32 * 1024
# Backlog as the NIO baseline's.
BACKLOG = 256


def parse_port(argv):
    parser = argparse.ArgumentParser(
        prog="echo.py", usage="echo.py [--port P]   (default port 8887; 0 picks a free port)",
        description="TCP echo server on uvloop; prints 'listening on 0.0.0.0:PORT' on stderr.")
    parser.add_argument("-p", "--port", type=int, dest="port", default=None, help="port (0 picks a free one)")
    parser.add_argument("positional_port", type=int, nargs="?", default=None, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    port = args.port if args.port is not None else args.positional_port
    port = DEFAULT_PORT if port is None else port
    if not 0 <= port <= 65535:
        print(f"echo.py: bad port {port}", file=sys.stderr)
        sys.exit(2)
    return port


def main(argv):
    port = parse_port(argv)
    # Imported after the arguments, so that --help works without the packages.
    import asyncio
    import signal
    import socket
    try:
        import uvloop
    except ImportError:
        print("echo.py: no uvloop module (pip install uvloop; benchmarks/baselines/build.sh does)", file=sys.stderr)
        return 1

    transports = set()

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            transport.set_write_buffer_limits(high=HIGH_WATERMARK, low=LOW_WATERMARK)
            transports.add(transport)

        def data_received(self, data):
            self.transport.write(data)

        def pause_writing(self):
            self.transport.pause_reading()

        def resume_writing(self):
            self.transport.resume_reading()

        def eof_received(self):
            # False: the transport closes once the echo already queued has been written.
            return False

        def connection_lost(self, exc):
            transports.discard(self.transport)

    async def serve():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, "0.0.0.0", port, family=socket.AF_INET,
                                          reuse_address=True, backlog=BACKLOG)
        bound = server.sockets[0].getsockname()[1]
        print(f"listening on 0.0.0.0:{bound}", file=sys.stderr, flush=True)
        stop = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
        await stop
        server.close()
        for transport in list(transports):
            transport.close()
        await server.wait_closed()
        # Let the closing transports run their close callbacks before the loop goes.
        await asyncio.sleep(0)

    if hasattr(uvloop, "run"):  # uvloop 0.18 and later
        uvloop.run(serve())
    else:
        uvloop.install()
        asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
