# usage: churn.py PORT COUNT -- COUNT sequential connections: connect, one 64-byte echo, close.
import socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
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
