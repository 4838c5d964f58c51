#!/usr/bin/env python3
"""A UDP echo checked from Python, as a user's client would: every size that matters (0, 1, 1472,
8192 and 65,507 bytes, the largest IPv4 UDP payload), each with every byte value, over IPv4 or IPv6.

    scripts/udp-check.py HOST PORT

Prints one line per size and exits 0 when every echo came back unchanged from the server's
address and port, 1 otherwise. Each reply is awaited at most 2 s.
"""
import argparse
import socket
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("host", help="the echo server's address (IPv4 or IPv6 literal)")
    parser.add_argument("port", type=int, help="its UDP port")
    options = parser.parse_args()
    host, port = options.host, options.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.settimeout(2)
    failures = 0
    for size in (0, 1, 1472, 8192, 65507):
        payload = bytes((i * 7 + size) & 0xFF for i in range(size))
        s.sendto(payload, (host, port))
        try:
            reply, source = s.recvfrom(65536)
        except socket.timeout:
            print(f"{size}: no reply")
            failures += 1
            continue
        same = reply == payload and source[1] == port
        print(f"{size}: {'ok' if same else 'DIFFERENT'} ({len(reply)} bytes from {source[0]} port {source[1]})")
        failures += 0 if same else 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
