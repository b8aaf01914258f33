#!/usr/bin/env python3
"""Interim idle-memory probe for `fanout serve` (until `fanout bench` exists).

Starts the release binary (with --max-conns N, so above one fd table's worth
it plans private fd tables), samples its stats line and the kernel's slab at 0
connections, opens N idle WebSocket connections to /room from client
processes of at most 15000 sockets each (plain blocking sockets, source
addresses 127.0.0.2, .3, ... so ephemeral ports never run out), samples again,
prints user-space bytes per connection (RSS and jemalloc) and kernel slab bytes
per socket (client and server sockets both count: they share the kernel),
then stops everything.

    cargo build --release && python3 scripts/idle-memory.py 19000
"""
import json, multiprocessing as mp, os, signal, socket, subprocess, sys, time

PER_PROCESS = 15000
BIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "fanout")
REQUEST = (b"GET /room HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
LINGER_ZERO = b"\x01\x00\x00\x00\x00\x00\x00\x00"


def slab_bytes():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Slab:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no Slab line in /proc/meminfo")


def stats(server):
    server.send_signal(signal.SIGUSR1)
    while True:
        line = server.stdout.readline()
        if not line:
            raise RuntimeError("server exited")
        if line.startswith("stats "):
            return json.loads(line[6:])


def client(index, count, host, port, ready, done):
    """Open `count` connections from source 127.0.0.(2+index), report, hold."""
    clients = []
    for _ in range(count):
        c = socket.socket()
        c.bind((f"127.0.0.{2 + index}", 0))
        c.connect((host, port))
        c.sendall(REQUEST)
        head = b""
        while b"\r\n\r\n" not in head:
            head += c.recv(4096)
        assert head.startswith(b"HTTP/1.1 101 "), head
        clients.append(c)
    ready.put(count)
    done.wait()
    for c in clients:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
        c.close()


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 19000
    # The server flushes every shard's jemalloc thread cache before each stats
    # line, so objects parked in caches are not counted as allocated.
    server = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0", "--max-conns", str(n)],
                              stdout=subprocess.PIPE, text=True)
    workers = []
    done = mp.Event()
    try:
        plan = server.stdout.readline().strip()
        host, port = server.stdout.readline().split()[1].rsplit(":", 1)
        time.sleep(0.5)
        s0, k0 = stats(server), slab_bytes()
        ready = mp.Queue()
        start = time.monotonic()
        for index, first in enumerate(range(0, n, PER_PROCESS)):
            count = min(PER_PROCESS, n - first)
            worker = mp.Process(target=client, args=(index, count, host, int(port), ready, done))
            worker.start()
            workers.append(worker)
        opened = sum(ready.get(timeout=600) for _ in workers)
        ramp = time.monotonic() - start
        time.sleep(1.0)
        s1, k1 = stats(server), slab_bytes()
        assert opened == n and s1["open"] == n, s1
        print(f"plan: {plan}")
        print(f"connections: {n} idle /room members from {len(workers)} client processes, opened in {ramp:.2f} s")
        print(f"per shard: {s1['open_per_shard']}")
        print(f"user space, RSS:            {(s1['rss_bytes'] - s0['rss_bytes']) / n:8.1f} bytes/conn")
        print(f"user space, jemalloc alloc: {(s1['heap_allocated_bytes'] - s0['heap_allocated_bytes']) / n:8.1f} bytes/conn")
        print(f"kernel slab (both ends):    {(k1 - k0) / (2 * n):8.1f} bytes/socket over {2 * n} sockets")
    finally:
        done.set()
        for worker in workers:
            worker.join(timeout=60)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
