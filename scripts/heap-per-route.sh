#!/usr/bin/env bash
# Heap bytes per idle connection of one backend, /echo against /room: what
# room membership costs on its own. Starts `fanout serve --backend B`, holds
# 10,000 idle connections on one path with `fanout load hold`, and reads
# jemalloc's allocated bytes (after every shard flushed its cache) from
# `stats` before and while they are held. Stops only the server it started.
#
#   scripts/heap-per-route.sh tokio
set -euo pipefail
B=${FANOUT:-target/release/fanout}
BACKEND=${1:?backend}
CONNS=${CONNS:-10000}
heap() { sed -n 's/^stats //p' "$1" | tail -1 | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["heap_allocated_bytes"], d["open"])'; }
for path in echo room; do
  log=$(mktemp)
  "$B" serve --backend "$BACKEND" --listen 127.0.0.1:0 > "$log" &
  pid=$!
  until grep -q '^ready ' "$log"; do sleep 0.1; done
  addr=$(sed -n 's/^ready //p' "$log")
  kill -USR1 "$pid"; sleep 1.5
  read -r before _ < <(heap "$log")
  "$B" load hold --url "ws://$addr/$path" --conns "$CONNS" --duration 6s > /dev/null &
  load=$!
  sleep 4.5
  kill -USR1 "$pid"; sleep 1.5
  read -r after open < <(heap "$log")
  wait "$load"
  kill "$pid"; wait "$pid" || true
  rm -f "$log"
  echo "$BACKEND /$path: $open open, heap $(( (after - before) / open )) B per connection ($before -> $after B)"
done
