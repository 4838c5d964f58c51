# usage: pingpong.py PORT CONNS MSGS_PER_CONN SIZE -- depth-1 ping-pong on CONNS connections, checks every echo
import argparse, socket, sys, selectors
ap = argparse.ArgumentParser(description="Depth-1 ping-pong on CONNS connections to an echo server on 127.0.0.1; checks every echo.")
ap.add_argument("port", type=int)
ap.add_argument("conns", type=int, help="connections at once")
ap.add_argument("msgs", type=int, metavar="msgs_per_conn", help="messages on each connection")
ap.add_argument("size", type=int, help="bytes per message, the newline included")
args = ap.parse_args()
port, conns, msgs, size = args.port, args.conns, args.msgs, args.size
payload = (b"abcdefghijklmnopqrstuvwxyz0123456789" * 10)[:size-1] + b"\n"
sel = selectors.DefaultSelector()
socks = []
for i in range(conns):
    s = socket.create_connection(("127.0.0.1", port)); s.setblocking(False)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    socks.append(s); sel.register(s, selectors.EVENT_READ, [0, 0])
    s.send(payload)
done = 0
while done < conns:
    for key, _ in sel.select(timeout=30):
        s, st = key.fileobj, key.data
        d = s.recv(65536)
        assert d, "server closed"
        st[1] += len(d)
        while st[1] >= size:
            st[1] -= size; st[0] += 1
            if st[0] < msgs: s.send(payload)
            else: done += 1; sel.unregister(s); break
print("ok", conns * msgs)
