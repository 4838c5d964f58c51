# usage: churn.py PORT COUNT -- COUNT sequential connections: connect, one 64-byte echo, close.
import argparse, socket, sys
ap = argparse.ArgumentParser(description="Sequential connections to an echo server on 127.0.0.1: connect, one 64-byte echo, close.")
ap.add_argument("port", type=int)
ap.add_argument("count", type=int, help="connections, one after another")
args = ap.parse_args()
port, count = args.port, args.count
payload = b"x" * 63 + b"\n"
for _ in range(count):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(payload)
    got = b""
    while len(got) < len(payload):
        d = s.recv(4096)
        assert d, "server closed early"
        got += d
    assert got == payload, "echo mismatch"
    s.shutdown(socket.SHUT_WR)
    assert s.recv(10) == b"", "expected EOF"
    s.close()
print("ok", count)
