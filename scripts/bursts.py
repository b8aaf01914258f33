#!/usr/bin/env python3
"""Bursts on every backend, each run on a fresh `fanout serve`, summed up as
median (min - max) over the runs.

  connections: `fanout load burst --conns HELD --burst K` -- K connections
               opened in one instant beside HELD held ones; what became of
               each (opened, after a resent SYN, 503, failed) and the
               kernel's listen counters.
  publish:     `fanout load broadcast --publish-burst M` -- each broadcast M
               messages back to back; when every member had the whole
               burst, what the server closed, every delivery accounted for.

Loopback only; the servers are this script's children, stopped by PID.

  scripts/bursts.py connections --held 1000 --burst 15000 --runs 3
  scripts/bursts.py publish --conns 10000 --count 5 --burst 100 --size 1KiB
  scripts/bursts.py connections --backends epoll --serve-arg=--accept-rate=5000
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

PORT = 23471


def serve(fanout, backend, max_conns, extra):
    """Start a server and wait for its `ready` line; the process."""
    args = [fanout, "serve", "--backend", backend, "--listen", f"127.0.0.1:{PORT}",
            "--max-conns", str(max_conns)] + extra
    server = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 30
    for line in server.stdout:
        if line.startswith("ready"):
            return server
        if time.time() > deadline:
            break
    server.kill()
    raise SystemExit(f"{backend}: the server never said ready")


def stop(server):
    """SIGTERM, then the last `stats` line it printed (a dict)."""
    server.send_signal(signal.SIGTERM)
    out, _ = server.communicate(timeout=60)
    lines = [l for l in out.splitlines() if l.startswith("stats ")]
    return json.loads(lines[-1][len("stats "):]) if lines else {}


def load(fanout, args):
    with tempfile.NamedTemporaryFile(suffix=".json") as report:
        subprocess.run([fanout, "load"] + args + ["--json", report.name], check=True,
                       stdout=subprocess.DEVNULL)
        return json.load(open(report.name))


def spread(values, digits=0):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    fmt = f"{{:,.{digits}f}}"
    med = statistics.median(values)
    if min(values) == max(values):
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(values))} - {fmt.format(max(values))})"


def connections(opts):
    rows = []
    held_rate = ["--rate", str(opts.held_rate)] if opts.held_rate else []
    for backend in opts.backends:
        runs = []
        for _ in range(opts.runs):
            server = serve(opts.fanout, backend, opts.held + opts.burst, opts.serve_arg)
            try:
                report = load(opts.fanout, ["burst", "--url", f"ws://127.0.0.1:{PORT}/echo",
                                            "--conns", str(opts.held), "--burst", str(opts.burst),
                                            "--duration", "3s"] + held_rate)
            finally:
                stats = stop(server)
            runs.append((report["burst"], stats))
        b = [r for r, _ in runs]
        failed = [sum(r["failures"].values()) - r["refused"] for r in b]
        causes = sorted({c for r in b for c in r["failures"]})
        rows.append([
            backend,
            spread([r["settled_seconds"] for r in b], 2),
            spread([r["opened"] for r in b]),
            spread([r["retransmitted"] for r in b]),
            spread([r["refused"] for r in b]),
            spread([s.get("rejected_accept_rate", 0) + s.get("rejected_over_capacity", 0)
                    for _, s in runs]),
            spread(failed) + (f" {causes}" if causes else ""),
            spread([r["listen_overflows"] for r in b]),
            spread([r["setup"]["p50_us"] / 1000 for r in b], 1),
            spread([r["setup"]["p99_us"] / 1000 for r in b], 1),
            spread([r["issue_seconds"] for r in b], 3),
            spread([r["held"] for r in b]) + " / " + spread([r["held_open_at_end"] for r in b]),
        ])
    header = ["server", "settled s", "opened", "after a resent SYN", "503 (client)",
              "503 (server)", "failed", "ListenOverflows", "setup p50 ms", "setup p99 ms",
              "issued in s", f"held of {opts.held} when it began / at the end"]
    print(f"{opts.burst:,} connections in one instant beside {opts.held:,} held, "
          f"{opts.runs} runs per server, each on a fresh server; median (min - max)")
    table(header, rows)


def publish(opts):
    rows = []
    for backend in opts.backends:
        runs = []
        for _ in range(opts.runs):
            server = serve(opts.fanout, backend, opts.conns, opts.serve_arg)
            try:
                report = load(opts.fanout, ["broadcast", "--url", f"ws://127.0.0.1:{PORT}/room",
                                            "--conns", str(opts.conns), "--count", str(opts.count),
                                            "--publish-burst", str(opts.burst),
                                            "--size", opts.size, "--drain", "30s"])
            finally:
                stats = stop(server)
            runs.append((report, stats))
        b = [r["broadcast"] for r, _ in runs]
        closes = [r["connect"]["server_closes"] for r, _ in runs]
        rows.append([
            backend,
            spread([x["burst_last_delivery_us"]["median"] / 1000 for x in b], 1),
            spread([x["burst_last_delivery_us"]["max"] / 1000 for x in b], 1),
            spread([x["tally"]["delivered"] for x in b]),
            spread([x["tally"]["missing"] + x["tally"]["duplicated"] for x in b]),
            spread([x["members_closed"] for x in b]) +
            (f" {sorted({k for c in closes for k in c})}" if any(closes) else ""),
            spread([x["tally"]["closed"] for x in b]),
            spread([x["deliveries_per_s"] for x in b]),
            spread([s.get("backlog_closes", 0) for _, s in runs]),
            spread([s.get("overload_closes", 0) for _, s in runs]),
        ])
    header = ["server", "whole burst, median ms", "slowest burst ms", "delivered",
              "missing+duplicated", "members closed", "undelivered to closed",
              "deliveries/s", "1008 (server)", "1013 (server)"]
    print(f"{opts.count} bursts of {opts.burst} x {opts.size} messages to {opts.conns:,} members, "
          f"{opts.runs} runs per server, each on a fresh server; median (min - max)")
    table(header, rows)


def table(header, rows):
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["connections", "publish"])
    parser.add_argument("--fanout", default="target/release/fanout")
    parser.add_argument("--backends", default="epoll,uring,tokio,tokio-tpc,tokio-uring",
                        type=lambda s: s.split(","))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--held", type=int, default=1000)
    parser.add_argument("--burst", type=int, help="connections (15000) or messages per burst (100)")
    parser.add_argument("--conns", type=int, default=10000)
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--size", default="1KiB")
    parser.add_argument("--serve-arg", action="append", default=[])
    parser.add_argument("--held-rate", type=int,
                        help="open the held connections at this rate (under --accept-rate)")
    opts = parser.parse_args()
    print("$ " + " ".join(["scripts/bursts.py"] + sys.argv[1:]))
    if opts.burst is None:
        opts.burst = 15000 if opts.kind == "connections" else 100
    connections(opts) if opts.kind == "connections" else publish(opts)


if __name__ == "__main__":
    main()
