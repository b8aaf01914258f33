#!/usr/bin/env python3
"""Open N idle WebSocket connections to the same `fanout serve` with
fanout's load generator and with Artillery's WebSocket engine (npm), side
by side: connect rate and client memory per connection for both.

Each tool gets a fresh server. The server counts the upgrades: a tool's
connect rate is the upgrades over the time from the server's first to its
last (scraped from `--metrics` every 50 ms), the same clock for both. Client
memory: the tool's process tree's RSS while it holds all N, over N; for
fanout also its own slope from N/2 to N (allocator and RSS). Artillery is
asked for N connections at --artillery-rate per second, each held (its
`think`) until all are open; a rate it cannot keep shows as a lower one.

Artillery is installed with npm into --tool-dir (default
/tmp/fanout-artillery) if it is not there; where npm cannot install it,
its side is skipped with the reason. Loopback only; every process is this
script's child, stopped by PID.

  scripts/vs-artillery.py --conns 20000
  scripts/vs-artillery.py --conns 100000 --artillery-rate 5000
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

PORT = 23501
METRICS = 23502
POLL = 0.05


def serve(fanout, conns):
    args = [fanout, "serve", "--listen", f"127.0.0.1:{PORT}", "--max-conns", str(conns + 1000),
            "--metrics", f"127.0.0.1:{METRICS}"]
    server = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in server.stdout:
        if line.startswith("ready"):
            return server
    sys.exit("fanout serve did not start")


def upgraded():
    body = urllib.request.urlopen(f"http://127.0.0.1:{METRICS}/metrics", timeout=5).read().decode()
    match = re.search(r"^fanout_upgraded_total (\d+)$", body, re.M)
    return int(match.group(1)) if match else 0


def tree_rss(pid):
    """RSS of `pid` and every descendant, bytes."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total


def watch(process, conns, bound):
    """Until the server has upgraded `conns` (or `bound` s passed): the
    seconds from its first upgrade to its last, and the tool's peak RSS."""
    start = time.time()
    first = last = None
    peak = at_first = 0
    seen = 0
    while time.time() - start < bound:
        count = upgraded()
        now = time.time()
        rss = tree_rss(process.pid)
        if count > 0 and first is None:
            first, at_first = now, rss
        if count > seen:
            seen, last = count, now
        peak = max(peak, rss)
        if count >= conns:
            time.sleep(1.0)  # held a moment: the RSS with every connection open
            peak = max(peak, tree_rss(process.pid))
            break
        if process.poll() is not None or (last and now - last > 10):
            break  # the tool stopped, or opened nothing more for 10 s
        time.sleep(POLL)
    return first, last, upgraded(), peak, at_first


def fanout_side(fanout, conns):
    server = serve(fanout, conns)
    try:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            command = [fanout, "load", "hold", "--url", f"ws://127.0.0.1:{PORT}/room",
                       "--conns", str(conns), "--duration", "3s", "--json", out.name]
            load = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            first, last, count, peak, at_first = watch(load, conns, 600)
            text, _ = load.communicate(timeout=600)
            report = json.load(open(out.name))
        memory = report["client"].get("memory") or {}
        return {
            "tool": "fanout load",
            "command": "fanout " + " ".join(command[1:-2]),
            "opened": count,
            "seconds": (last - first) if first and last else None,
            "peak_rss": peak,
            "rss_at_first": at_first,
            "slope_heap": memory.get("heap_per_conn"),
            "slope_rss": memory.get("rss_per_conn"),
            "text": text,
        }
    finally:
        server.terminate()
        server.wait()


def install_artillery(tool_dir):
    """The artillery binary, installing it with npm if needed; or the reason
    it cannot be had."""
    binary = os.path.join(tool_dir, "node_modules", ".bin", "artillery")
    if os.path.exists(binary):
        return binary, None
    env = dict(os.environ, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1", PUPPETEER_SKIP_DOWNLOAD="1")
    done = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", tool_dir,
                           "artillery@2"], capture_output=True, text=True, env=env)
    if done.returncode != 0 or not os.path.exists(binary):
        return None, f"npm install artillery@2 failed: {done.stderr.strip()[-400:]}"
    return binary, None


def artillery_version(binary):
    out = subprocess.run([binary, "version"], capture_output=True, text=True).stdout
    match = re.search(r"Artillery:\s*(\S+)", out) or re.search(r"(\d+\.\d+\.\d+)", out)
    return match.group(1) if match else "?"


def artillery_side(fanout, binary, conns, rate):
    duration = max(1, round(conns / rate))
    hold = duration + 15
    script = {
        "config": {
            "target": f"ws://127.0.0.1:{PORT}/room",
            "phases": [{"duration": duration, "arrivalCount": conns}],
        },
        "scenarios": [{"engine": "ws", "flow": [{"think": hold}]}],
    }
    server = serve(fanout, conns)
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(script, f)
            path = f.name
        tool = subprocess.Popen([binary, "run", "--quiet", path], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        first, last, count, peak, at_first = watch(tool, conns, duration + hold + 60)
        tool.terminate()
        try:
            tool.wait(timeout=30)
        except subprocess.TimeoutExpired:
            tool.kill()
            tool.wait()
        os.unlink(path)
        return {
            "tool": f"artillery {artillery_version(binary)} (ws engine)",
            "command": f"artillery run (arrivalCount {conns} over {duration} s, think {hold} s)",
            "opened": count,
            "seconds": (last - first) if first and last else None,
            "peak_rss": peak,
            "rss_at_first": at_first,
        }
    finally:
        server.terminate()
        server.wait()


def row(result, conns):
    opened = max(result["opened"], 1)
    rate = f"{opened / result['seconds']:,.0f}/s" if result["seconds"] else "-"
    per = result["peak_rss"] / opened
    growth = (result["peak_rss"] - result["rss_at_first"]) / opened
    slope = ""
    if result.get("slope_heap") is not None:
        slope = f"; slope N/2→N: allocator {result['slope_heap']:.1f} B, RSS {result['slope_rss']:.1f} B"
    return (f"{result['tool']}: {result['opened']:,} of {conns:,} open, connect rate {rate}; "
            f"client RSS while holding them {result['peak_rss'] / 1e6:,.1f} MB = {per:,.0f} B per connection, "
            f"{growth:,.0f} B of growth per connection from the first upgrade{slope}\n"
            f"  ({result['command']})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fanout", default="fanout")
    parser.add_argument("--conns", type=int, default=20000)
    parser.add_argument("--artillery-rate", type=float, default=2000)
    parser.add_argument("--tool-dir", default="/tmp/fanout-artillery")
    args = parser.parse_args()
    print(f"{args.conns:,} idle WebSocket connections to one `fanout serve` (epoll), each tool on a fresh server")
    print(row(fanout_side(args.fanout, args.conns), args.conns))
    binary, why = install_artillery(args.tool_dir)
    if binary is None:
        print(f"artillery: SKIPPED: {why}")
        return
    print(row(artillery_side(args.fanout, binary, args.conns, args.artillery_rate), args.conns))


if __name__ == "__main__":
    main()
