#!/usr/bin/env bash
# A/B of one job outside the bench: the same `fanout load broadcast` against
# the room floor (`fanout bare`) and against `fanout serve`, alternately,
# each on a fresh server; keeps each load report (with the kernel counters
# of its work phase) and prints per-delivery segments and last deliveries.
#
#   scripts/ab-broadcast.sh 300000 results/2026-11-29-vm/ab-broadcast-300k
#
# Stops only the servers it started, by their PIDs.
set -euo pipefail
N=${1:?connections}
OUT=${2:?output directory}
ROUNDS=${ROUNDS:-2}
B=target/release/fanout
cargo build --release --quiet
mkdir -p "$OUT"
MAX=$((N + N / 100 + 100))
for round in $(seq 1 "$ROUNDS"); do
  for side in bare serve; do
    log=$(mktemp)
    if [ "$side" = bare ]; then
      "$B" bare --route room --listen 127.0.0.1:0 --max-conns "$MAX" > "$log" &
    else
      "$B" serve --listen 127.0.0.1:0 --max-conns "$MAX" > "$log" &
    fi
    pid=$!
    until grep -q '^ready ' "$log"; do sleep 0.1; done
    addr=$(sed -n 's/^ready //p' "$log")
    scheme=$([ "$side" = bare ] && echo bare || echo ws)
    "$B" load broadcast --url "$scheme://$addr/room" --conns "$N" --count 5 \
      --interval 100ms --json "$OUT/$side-$round.json" > /dev/null
    kill "$pid"
    wait "$pid" || true
    rm -f "$log"
    sleep 2
  done
done
{
echo "# scripts/ab-broadcast.sh $N $OUT (revision $(git describe --always --dirty --abbrev=12))"
python3 - "$OUT" <<'PY'
import glob, json, sys
for path in sorted(glob.glob(sys.argv[1] + "/*.json")):
    r = json.load(open(path))
    b = r["broadcast"]
    work = r["kernel_counters_work"]
    d = b["tally"]["delivered"]
    per = {k.split(".")[1]: round(v / d, 3) for k, v in work.items()
           if k in ("Tcp.InSegs", "Tcp.OutSegs", "TcpExt.TCPHPAcks", "TcpExt.TCPOrigDataSent")}
    last = [round(m["last_us"] / 1000) for m in b["per_message"]]
    print(f"{path.split('/')[-1]}: last delivery ms {last}; per delivery during the work: {per}")
PY
} | tee "$OUT/summary.txt"
