#!/usr/bin/env python3
"""Kernel slab bytes per connection, cache by cache, for one fanout backend.

Starts `fanout serve --backend B`, reads /proc/slabinfo, holds N idle room
connections with `fanout load hold`, reads it again while they are open, and
prints the growth per connection of every cache that grew (both ends of each
connection are on this machine, so TCP and the socket caches count twice).
Needs root (slabinfo) and a release build.

    scripts/slab-per-conn.py epoll 15000
    scripts/slab-per-conn.py uring 15000
"""
import os
import subprocess
import sys
import time

# Another build (e.g. an older revision) can be measured with FANOUT=path.
FANOUT = os.environ.get("FANOUT", "./target/release/fanout")


def slab():
    caches = {}
    for line in open("/proc/slabinfo").read().splitlines()[2:]:
        fields = line.split()
        caches[fields[0]] = int(fields[1]) * int(fields[3])  # active objects × size
    return caches


def main():
    backend = sys.argv[1] if len(sys.argv) > 1 else "epoll"
    conns = int(sys.argv[2]) if len(sys.argv) > 2 else 15000
    server = subprocess.Popen(
        [FANOUT, "serve", "--backend", backend, "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        ready = ""
        while not ready.startswith("ready "):
            ready = server.stdout.readline()
            if not ready:
                sys.exit("the server did not start")
        addr = ready.split()[1]
        time.sleep(0.5)
        before = slab()
        hold_s = 8
        load = subprocess.Popen(
            [FANOUT, "load", "hold", "--url", f"ws://{addr}/room",
             "--conns", str(conns), "--duration", f"{hold_s}s"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(hold_s - 3)
        during = slab()
        load.wait(timeout=60)
    finally:
        server.terminate()
        server.wait(timeout=30)
    growth = sorted(((during.get(name, 0) - before.get(name, 0)) / conns, name)
                    for name in during)
    total = sum(bytes_ for bytes_, _ in growth)
    print(f"{backend} ({FANOUT}): {total:.0f} B of slab per connection (both ends), {conns} connections")
    for bytes_, name in reversed(growth):
        if bytes_ >= 10:
            print(f"  {name:<24} {bytes_:8.1f}")


if __name__ == "__main__":
    main()
