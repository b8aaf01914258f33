#!/usr/bin/env python3
"""Full against resumed TLS handshakes, per second of the server's CPU.

For each backend, a fresh `fanout serve --tls-self-signed` takes a churn of
wss:// connections (`fanout load churn`: connect, TLS handshake, upgrade,
one echo, close) at --rate for --duration, once with every connection
doing a full handshake (`--tls-resume off`) and once resuming from the
server's tickets (`--tls-resume on`). The server's CPU (user + system,
/proc/PID/stat) and its handshake counters (its `stats` line) are read
before and after each; the figure is handshakes per CPU-second of the
server over the whole cycle (accept, handshake, upgrade, echo, close), and
the churn's setup latency (connect + handshake + upgrade) p50 and p99.
--samples runs of each, alternating; medians with their range.

  scripts/tls-handshakes.py --backends epoll,uring --rate 2000 --duration 5
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile

TICKS = os.sysconf("SC_CLK_TCK")


def start_server(fanout, backend):
    args = [fanout, "serve", "--listen", "127.0.0.1:0", "--backend", backend, "--tls-self-signed"]
    server = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    tls = ""
    while True:
        line = server.stdout.readline()
        if not line:
            sys.exit("fanout serve exited before `ready`")
        if line.startswith("tls "):
            tls = line.strip()
        if line.startswith("ready "):
            pin = tls.split("sha256 ")[1].split(";")[0]
            return server, int(line.rsplit(":", 1)[1]), pin, tls


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def stats(server):
    server.send_signal(signal.SIGUSR1)
    while True:
        line = server.stdout.readline()
        if line.startswith("stats "):
            return json.loads(line[len("stats "):])


def churn(fanout, port, pin, resume, rate, duration, tmp):
    report = os.path.join(tmp, "churn.json")
    subprocess.run([fanout, "load", "churn", "--url", f"wss://127.0.0.1:{port}/echo", "--tls-pin", pin,
                    "--tls-resume", resume, "--rate", str(rate), "--duration", f"{duration}s",
                    "--json", report], check=True, stdout=subprocess.DEVNULL)
    with open(report) as f:
        return json.load(f)


def one(fanout, backend, resume, rate, duration, tmp):
    server, port, pin, tls = start_server(fanout, backend)
    try:
        if resume == "on":
            churn(fanout, port, pin, "on", 50, 1, tmp)  # the first tickets
        before, cpu_before = stats(server), cpu_seconds(server.pid)
        report = churn(fanout, port, pin, resume, rate, duration, tmp)
        after, cpu_after = stats(server), cpu_seconds(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    handshakes = after["tls_handshakes"] - before["tls_handshakes"]
    resumed = after["tls_resumed"] - before["tls_resumed"]
    cpu = cpu_after - cpu_before
    setup = report["churn"]["setup"]
    return {"handshakes": handshakes, "resumed": resumed, "cpu": cpu,
            "per_cpu_second": handshakes / cpu if cpu > 0 else float("nan"),
            "p50_ms": setup["p50_us"] / 1000, "p99_ms": setup["p99_us"] / 1000, "tls": tls}


def spread(values, digits=0):
    return f"{statistics.median(values):,.{digits}f} ({min(values):,.{digits}f} – {max(values):,.{digits}f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="epoll,uring")
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--fanout", default="fanout")
    args = parser.parse_args()
    print(f"fanout load churn over wss:// at {args.rate}/s for {args.duration} s, {args.samples} samples each; "
          "server CPU over the whole cycle (accept, handshake, upgrade, echo, close)")
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            runs = {"off": [], "on": []}
            for _ in range(args.samples):
                for resume in ("off", "on"):
                    runs[resume].append(one(args.fanout, backend, resume, args.rate, args.duration, tmp))
            print(f"\n{backend}: {runs['off'][0]['tls']}")
            for resume, label in (("off", "full"), ("on", "resumed")):
                r = runs[resume]
                print(f"  {label:8} handshakes {spread([x['handshakes'] for x in r])} "
                      f"(resumed {spread([x['resumed'] for x in r])}), server CPU {spread([x['cpu'] for x in r], 2)} s: "
                      f"{spread([x['per_cpu_second'] for x in r])} handshakes per server CPU-second; "
                      f"setup p50 {spread([x['p50_ms'] for x in r], 2)} ms, p99 {spread([x['p99_ms'] for x in r], 2)} ms")
            full = statistics.median(x["per_cpu_second"] for x in runs["off"])
            resumed = statistics.median(x["per_cpu_second"] for x in runs["on"])
            print(f"  resumed ÷ full, per server CPU-second: {resumed / full:.2f}×")


if __name__ == "__main__":
    main()
