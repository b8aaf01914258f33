#!/usr/bin/env python3
"""What an idle wss:// connection costs the server, measured from outside:
an independent client (Python's ssl and the websockets library, nothing of
fanout's) opens N idle wss:// connections to a fresh `fanout serve
--tls-self-signed` and holds them; the server's RSS and jemalloc figures
(its own `stats` line, SIGUSR1) are read at N/2 and at N, once each
connection has been idle a few seconds, and the slope between them is the
cost of one idle connection. Run once per --tls-state (compact: the record
layer alone; rustls: rustls's whole connection) and per backend.

The client process is a child of this script and the server too, both
stopped by PID. Loopback only. Python holds at most about 19,000 sockets
here (one fd table of 20,000).

  scripts/tls-idle-python.py --conns 15000 --backend epoll --state compact
  scripts/tls-idle-python.py --conns 15000 --backend tokio
"""

import argparse
import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time

import websockets

IDLE_BEFORE_READING = 3.0


def start_server(fanout, backend, state, cert):
    args = [fanout, "serve", "--listen", "127.0.0.1:0", "--backend", backend,
            "--tls-self-signed", "--tls-write-cert", cert, "--tls-state", state]
    server = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    lines = []
    while True:
        line = server.stdout.readline()
        if not line:
            sys.exit(f"fanout serve exited: {''.join(lines)}")
        lines.append(line)
        if line.startswith("ready "):
            return server, int(line.rsplit(":", 1)[1]), "".join(lines)


def stats(server):
    server.send_signal(signal.SIGUSR1)
    while True:
        line = server.stdout.readline()
        if line.startswith("stats "):
            return json.loads(line[len("stats "):])


async def open_idle(port, cert, count, held, concurrency=200):
    context = ssl.create_default_context(cafile=cert)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    gate = asyncio.Semaphore(concurrency)

    async def one():
        async with gate:
            ws = await websockets.connect(f"wss://127.0.0.1:{port}/echo", ssl=context,
                                          compression=None, open_timeout=30, ping_interval=None)
            held.append(ws)

    await asyncio.gather(*(one() for _ in range(count)))


async def run(args, server, port, cert):
    held = []
    points = []
    for target in (args.conns // 2, args.conns):
        started = time.monotonic()
        await open_idle(port, cert, target - len(held), held)
        opened_s = time.monotonic() - started
        await asyncio.sleep(IDLE_BEFORE_READING)
        s = stats(server)
        points.append({"conns": len(held), "open_on_server": s["open"], "rss_bytes": s["rss_bytes"],
                       "heap_allocated_bytes": s["heap_allocated_bytes"], "open_seconds": opened_s,
                       "tls_handshakes": s["tls_handshakes"]})
    for ws in held:
        ws.transport.abort()
    return points


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conns", type=int, default=15000)
    parser.add_argument("--backend", default="epoll")
    parser.add_argument("--state", default="compact", choices=["compact", "rustls"])
    parser.add_argument("--fanout", default="fanout")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cert = os.path.join(tmp, "cert.pem")
        server, port, plan = start_server(args.fanout, args.backend, args.state, cert)
        try:
            points = asyncio.run(run(args, server, port, cert))
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    half, full = points
    between = full["conns"] - half["conns"]
    rss = (full["rss_bytes"] - half["rss_bytes"]) / between
    heap = (full["heap_allocated_bytes"] - half["heap_allocated_bytes"]) / between
    print(plan.strip())
    print(f"client: Python {sys.version.split()[0]}, websockets {websockets.__version__}, "
          f"{ssl.OPENSSL_VERSION}")
    for p in points:
        print(f"held {p['conns']:,} (server open {p['open_on_server']:,}, opened in {p['open_seconds']:.1f} s): "
              f"server RSS {p['rss_bytes'] / 1e6:.1f} MB, jemalloc allocated {p['heap_allocated_bytes'] / 1e6:.1f} MB")
    print(f"server user space per idle wss:// connection, slope from {half['conns']:,} to {full['conns']:,}: "
          f"allocator {heap:.1f} B, RSS {rss:.1f} B ({args.backend}; the state it keeps is on its tls line above)")


if __name__ == "__main__":
    main()
