#!/usr/bin/env python3
"""Headline figures of several `fanout bench` result files side by side, and
their run-to-run spread, as a Markdown table. The figures are read from the
files, never typed in. A file with several servers (`--backends
epoll,uring`) gives one column per server.

    python3 scripts/runs-table.py results/2026-11-29-vm/bench-fanout-100000-run*.json
    python3 scripts/runs-table.py --versus A.json B.json    # last column: A ÷ B
    python3 scripts/runs-table.py --versus results/2026-11-29-vm/epoll-uring-100k.json
    python3 scripts/runs-table.py --only=epoll,epoll+deflate-shared FILE.json   # these servers only
"""

import json
import sys


def spread(s, scale=1.0, digits=0):
    return f"{s['median'] * scale:,.{digits}f} ({s['min'] * scale:,.{digits}f}–{s['max'] * scale:,.{digits}f})"


def ratio(c):
    r = c["ratio"]
    mark = {"at_or_below_floor": "", "within_spread": " (noise)", "suspect": " SUSPECT"}[r["verdict"]]
    return f"{r['median']:.2f}× ({r['min']:.2f}–{r['max']:.2f}){mark}"


def echo(result, conns, loop):
    for e in result["echo"]:
        if e["conns"] == conns and e["mode"].startswith(loop):
            return e
    return None


def short(result):
    """'held of asked' when the server stopped short of N, else None."""
    reach = result.get("reach")
    if reach and reach["held"]["min"] < reach["asked"]:
        return f"{reach['held']['median']:,.0f} of {reach['asked']:,}"
    return None


def rows(result):
    """(label, text, median) for every headline figure of one result. The
    room's figures of a server that stopped short are marked and left out of
    the last column (they are for fewer connections)."""
    out = []
    stopped = short(result)
    ramp = result.get("ramp")
    if ramp:
        out.append(("ramp, connections/s", spread(ramp["measured"]), ramp["measured"]["median"]))
        out.append(("ramp floor, connections/s", spread(ramp["floor"]), ramp["floor"]["median"]))
        out.append(("ramp ÷ floor", ratio(ramp), ramp["ratio"]["median"]))
    b = result.get("broadcast")
    if b:
        last = b["last_delivery_ms"]
        out.append(("broadcast last delivery, ms", spread(last["measured"]), last["measured"]["median"]))
        out.append(("broadcast floor, ms", spread(last["floor"]), last["floor"]["median"]))
        out.append(("broadcast ÷ floor", ratio(last), last["ratio"]["median"]))
        out.append(("broadcast deliveries/s", spread(b["deliveries_per_s"]), b["deliveries_per_s"]["median"]))
        for key, label in [("first_delivery_ms", "first"), ("median_delivery_ms", "median"), ("p99_delivery_ms", "p99")]:
            out.append((f"broadcast {label} delivery, ms", spread(b[key], digits=1), b[key]["median"]))
        if b.get("cpu_seconds_per_million"):
            cpu = b["cpu_seconds_per_million"]
            out.append(("server CPU-s per million deliveries", spread(cpu, digits=2), cpu["median"]))
        if b.get("client_cpu_seconds_per_million"):
            cpu = b["client_cpu_seconds_per_million"]
            out.append(("client CPU-s per million deliveries", spread(cpu, digits=2), cpu["median"]))
        if b.get("wire_bytes_per_delivery"):
            wire = b["wire_bytes_per_delivery"]
            out.append(("bytes on the wire per delivery", spread(wire), wire["median"]))
        t = b["tally"]
        out.append(("deliveries: delivered / lost / in flight",
                    f"{t['delivered']:,} / {t['missing'] + t['closed']} / {t['in_flight']}", None))
    m = result.get("memory")
    if m:
        if m.get("heap_per_conn"):
            out.append(("user space, allocator B/conn (slope)", spread(m["heap_per_conn"], digits=1), m["heap_per_conn"]["median"]))
        if m.get("heap_after_broadcast_per_conn"):
            after = m["heap_after_broadcast_per_conn"]
            out.append(("  after a broadcast, allocator B/conn", spread(after, digits=1), after["median"]))
        if (m.get("client") or {}).get("heap_per_conn"):
            client = m["client"]["heap_per_conn"]
            out.append(("client user space, allocator B/conn (slope)", spread(client, digits=1), client["median"]))
        out.append(("user space, RSS B/conn (slope)", spread(m["rss_per_conn"], digits=1), m["rss_per_conn"]["median"]))
        out.append(("kernel B/socket (slope)", spread(m["kernel_per_socket"]), m["kernel_per_socket"]["median"]))
        if m.get("tcp_objects_per_conn"):
            out.append(("TCP slab objects per connection", spread(m["tcp_objects_per_conn"], digits=3), m["tcp_objects_per_conn"]["median"]))
    for conns in sorted({e["conns"] for e in result["echo"]}):
        closed = echo(result, conns, "closed")
        if closed:
            out.append((f"echo {conns:,} closed loop, msgs/s", spread(closed["msgs_per_s"]), closed["msgs_per_s"]["median"]))
            if closed.get("vs_floor"):
                out.append((f"echo {conns:,} ÷ floor", ratio(closed["vs_floor"]), closed["vs_floor"]["ratio"]["median"]))
            out.append((f"echo {conns:,} closed loop p99, ms", spread(closed["p99_us"], 1e-3, 1), closed["p99_us"]["median"] / 1e3))
        opened = echo(result, conns, "open")
        if opened:
            label = f"echo {conns:,} open loop: msgs/s asked, latency p50 / p99 (ms)"
            text = (f"{opened['open_loop_rate']:,.0f}/s: {opened['p50_us']['median'] / 1e3:.3f} / "
                    f"{opened['p99_us']['median'] / 1e3:.1f}")
            out.append((label, text, None))
    for key, label in [("churn", "churn sustained, connections/s"),
                       ("churn_full_tls", "churn sustained, every TLS handshake full, connections/s")]:
        c = result.get(key)
        if not c:
            continue
        if "sustained_per_s" in c:  # a search
            rate = c["sustained_per_s"]
            text = f"{rate:,.0f} (missed from {c['first_missed_per_s']:,.0f})" if rate and c.get("first_missed_per_s") else f"{rate or 0:,.0f}"
            out.append((label, text, rate))
        elif "rate_per_s" in c:  # one rate, judged
            out.append(("churn, cycles/s (of 10,000 asked)", f"{c['rate_per_s']:,.0f}", c["rate_per_s"]))
    h = result.get("handshakes")
    if h:
        for kind in h["kinds"]:
            per_cpu = kind["cycles_per_server_cpu_s"]
            if per_cpu:  # none when the server's CPU was under one clock tick in every run
                out.append((f"handshakes {kind['kind']}, cycles per server CPU-s", spread(per_cpu), per_cpu["median"]))
            p99 = kind["setup_p99_ms"]
            out.append((f"handshakes {kind['kind']}, setup p99 ms", spread(p99, digits=2), p99["median"]))
    for policy in (result.get("storm") or {}).get("policies", []):
        how = {True: ", resuming", False: ", full TLS", None: ""}[policy.get("resumption")]
        label = f"storm {'at once' if policy['reconnect'] == 'at once' else 'backoff'}{how}"
        if policy.get("all_back_s"):
            out.append((f"{label}: all back, s", spread(policy["all_back_s"], digits=2), policy["all_back_s"]["median"]))
        out.append((f"{label}: server CPU-s", spread(policy["server_cpu_s"], digits=2), policy["server_cpu_s"]["median"]))
    if stopped:
        room = ("ramp", "broadcast", "server CPU", "deliveries", "user space", "kernel", "TCP slab")
        out = [(label, f"{text} (short: {stopped})", None) if label.startswith(room) else (label, text, median)
               for label, text, median in out]
    return out


def columns(paths):
    """(title, figures, file result) per server of every file: a file from
    before `servers` existed is one server."""
    out = []
    for i, path in enumerate(paths):
        r = json.load(open(path))
        if "servers" not in r:  # one server per file
            out.append((f"run {i + 1}", r, r))
            continue
        for server in r["servers"]:
            title = server["name"] if len(paths) == 1 else f"run {i + 1} {server['name']}"
            out.append((title, server, r))
    return out


def main(paths, versus=False, only=None):
    cols = columns(paths)
    if only:
        cols = [c for c in cols if c[0].split(" ")[-1] in only]
        if not cols:
            sys.exit(f"no server is named {', '.join(only)}")
    if versus and len(cols) != 2:
        sys.exit("--versus compares exactly two servers")
    results = [figures for _, figures, _ in cols]
    per_run = [rows(r) for r in results]
    names = [label for label, _, _ in per_run[0]]
    for run in per_run[1:]:
        names += [label for label, _, _ in run if label not in names]
    last = "first ÷ second (medians)" if versus else "max ÷ min of the medians"
    print("| figure | " + " | ".join(title for title, _, _ in cols) + f" | {last} |")
    print("|---|" + "---|" * (len(results) + 1))
    for label in names:
        cells, medians = [], []
        for run in per_run:
            found = next(((text, median) for l, text, median in run if l == label), ("–", None))
            cells.append(found[0])
            if found[1] is not None:
                medians.append(found[1])
        change = ""
        if len(medians) >= 2 and not versus and min(medians) > 0:
            change = f"{max(medians) / min(medians):.2f}"
        if len(medians) == len(results) and min(medians) > 0:
            change = f"{medians[0] / medians[1]:.2f}" if versus else f"{max(medians) / min(medians):.2f}"
        print(f"| {label} | " + " | ".join(cells) + f" | {change} |")
    print()
    for path in paths:
        r = json.load(open(path))
        print(f"- {path}: started {r['time_utc']}, {r['seconds']:.0f} s, `{r['command']}`, revision {r['machine']['git_revision']}")


if __name__ == "__main__":
    args = sys.argv[1:]
    versus = "--versus" in args
    only = next((a.split("=", 1)[1].split(",") for a in args if a.startswith("--only=")), None)
    files = [a for a in args if a != "--versus" and not a.startswith("--only=")]
    if not files or (versus and len(files) > 2):
        sys.exit(__doc__)
    main(files, versus, only)
