# usage: bulk.py PORT CONNS MIB_PER_CONN -- streams MIB_PER_CONN MiB of random binary bytes (every
# byte value, "\n" and "e" included, no exit line) on CONNS connections at once in 64 KiB writes,
# reading the echo as it comes, and checks every byte.
import argparse, os, random, socket, sys, selectors
ap = argparse.ArgumentParser(description="Streams random binary bytes through an echo server on 127.0.0.1 and checks every byte.")
ap.add_argument("port", type=int)
ap.add_argument("conns", type=int, help="connections at once")
ap.add_argument("mib", type=int, metavar="mib_per_conn", help="MiB sent on each connection")
args = ap.parse_args()
port, conns, mib = args.port, args.conns, args.mib
total = mib << 20
rng = random.Random(0xB1A5)
pattern = bytearray(rng.randbytes(1 << 20))
i = pattern.find(b"exit")
while i >= 0:  # break every "exit" so that no exit line can occur, whatever the cut
    pattern[i + 3] = 0
    i = pattern.find(b"exit", i)
pattern = bytes(pattern) * 2  # any 64 KiB window from any offset in the first MiB is contiguous
sel = selectors.DefaultSelector()
for c in range(conns):
    s = socket.create_connection(("127.0.0.1", port)); s.setblocking(False)
    sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, {"sent": 0, "got": 0, "start": c * 104729})
open_ = conns
while open_:
    for key, ev in sel.select(timeout=30) or [(None, 0)]:
        assert key, "timed out"
        s, st = key.fileobj, key.data
        if ev & selectors.EVENT_WRITE and st["sent"] < total:
            off = (st["start"] + st["sent"]) % (1 << 20)
            try:
                st["sent"] += s.send(pattern[off:off + min(65536, total - st["sent"])])
            except BlockingIOError:
                pass
            if st["sent"] == total:
                sel.modify(s, selectors.EVENT_READ, st)
        if ev & selectors.EVENT_READ:
            d = s.recv(262144)
            assert d, "server closed early"
            off = (st["start"] + st["got"]) % (1 << 20)
            assert d == pattern[off:off + len(d)], "echo differs at byte %d" % st["got"]
            st["got"] += len(d)
            if st["got"] == total:
                sel.unregister(s); s.close(); open_ -= 1
print("ok", conns * total)
