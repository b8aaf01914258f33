#!/usr/bin/env bash
# Where a backend's CPU time goes under one job: start `fanout serve
# --backend B`, run a bounded `fanout load` job against it, record the
# server with perf for 4 s in the middle of the job, and write the summary
# of scripts/profile-summary.py (kinds of work, top symbols).
#
#   scripts/profile-backend.sh tokio echo 1000 results/2026-11-29-vm/profiles
#   scripts/profile-backend.sh uring broadcast 15000 results/2026-11-29-vm/profiles
#
# echo: closed loop, 32 B messages, for 8 s. broadcast: N members, then 40
# broadcasts of 32 B, 100 ms apart. Stops only the server it started, by
# its PID. Needs perf (Debian: linux-perf) and permission to profile.
set -euo pipefail
BACKEND=${1:?backend}
JOB=${2:?echo or broadcast}
N=${3:?connections}
OUT=${4:?output directory}
B=${FANOUT:-target/release/fanout}
mkdir -p "$OUT"
log=$(mktemp)
"$B" serve --backend "$BACKEND" --listen 127.0.0.1:0 > "$log" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$log"' EXIT
until grep -q '^ready ' "$log"; do sleep 0.1; done
addr=$(sed -n 's/^ready //p' "$log")
report=$(mktemp)
case "$JOB" in
  echo)
    "$B" load echo --url "ws://$addr/echo" --conns "$N" --size 32 --duration 8s > "$report" &
    load=$!
    detail="closed loop for 8 s"
    sleep 3 ;;
  broadcast)
    "$B" load broadcast --url "ws://$addr/room" --conns "$N" --count 40 --interval 100ms --size 32 > "$report" &
    load=$!
    detail="40 broadcasts 100 ms apart"
    # Record once every member is in (the ramp is not what is profiled).
    until [ "$(kill -USR1 "$pid"; sleep 0.3; sed -n 's/^stats //p' "$log" | tail -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["open"])')" -ge "$N" ]; do sleep 0.5; done
    sleep 0.5 ;;
  *) echo "job must be echo or broadcast" >&2; exit 2 ;;
esac
perf_file="$OUT/$JOB-$N-$BACKEND.perf"
perf record -F 999 -g -p "$pid" -o "$perf_file" -- sleep 4 2> /dev/null
wait "$load"
rate=$(grep -Eo '[0-9]+ msgs/s|deliveries, [0-9]+/s' "$report" | head -1 | sed 's/deliveries, //; s/\/s$/ deliveries\/s/' || true)
title="fanout serve --backend $BACKEND under fanout load $JOB --conns $N (32 B), $detail${rate:+; $rate}; perf record -F 999 -g -p PID -- sleep 4"
scripts/profile-summary.py "$perf_file" "$title" > "$OUT/$JOB-$N-$BACKEND.txt"
rm -f "$perf_file" "$report"
cat "$OUT/$JOB-$N-$BACKEND.txt" | head -14
