#!/usr/bin/env python3
"""`fanout load` on a machine another tool has just used, as a new user
meets it: a client that binds its source ports explicitly (as tcpkali
does: bind(127.0.0.1, 0) picks the port at bind time) holds ROUNDS x CONNS
connections to one `fanout serve` (a round stops early where no port is
left to bind) and closes each round first, leaving its ports in
TIME_WAIT (here about nine in ten of them stay there); then `fanout load
hold --conns HOLD` runs at once.

connect()'s own port search skips every port an explicitly bound socket
holds, on any address, so the kernel's choice finds few ports; fanout then
chooses the ports itself and says so (`ports:` in its report).

Loopback only; the server is this script's child, stopped by PID; every
socket this script opens is closed before the load runs.

  scripts/used-machine.py                      # 3 x 8,800, then hold 5,000
  scripts/used-machine.py --rounds 6           # closer to a full range in TIME_WAIT
  scripts/used-machine.py --fanout target/release/fanout --hold 20000
"""

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time

PORT = 23481


def serve(fanout):
    server = subprocess.Popen([fanout, "serve", "--listen", f"127.0.0.1:{PORT}"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in server.stdout:
        if line.startswith("ready"):
            return server
    sys.exit("fanout serve did not start")


def time_wait():
    """TIME_WAIT sockets on this machine (/proc/net/sockstat)."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("tw") + 1])
    return 0


def explicit_bind_round(count):
    """Open `count` connections from ports bound at bind time, then close
    them from this side (each leaves a TIME_WAIT on its port)."""
    held = []
    for _ in range(count):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", 0))
        except OSError:  # the range is used up: as far as this round goes
            s.close()
            break
        s.connect(("127.0.0.1", PORT))
        held.append(s)
    for s in held:
        s.close()
    return len(held)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fanout", default="fanout")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--conns", type=int, default=8800)
    parser.add_argument("--hold", type=int, default=5000)
    args = parser.parse_args()
    server = serve(args.fanout)
    try:
        before = time_wait()
        rounds = [explicit_bind_round(args.conns) for _ in range(args.rounds)]
        time.sleep(0.5)
        print(f"explicit-bind client: {' + '.join(map(str, rounds))} connections held and closed; "
              f"TIME_WAIT sockets {before} -> {time_wait()}")
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            command = [args.fanout, "load", "hold", "--url", f"ws://127.0.0.1:{PORT}/room",
                       "--conns", str(args.hold), "--duration", "1s", "--json", out.name]
            print("$ " + " ".join(["fanout"] + command[1:-2]))
            text = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            print(text, end="")
            report = json.load(open(out.name))
        c = report["connect"]
        print(f"summary: {c['opened']} of {args.hold} opened, {c['failed']} failed; "
              f"{c.get('explicit_ports', 0)} on source ports fanout chose itself")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
