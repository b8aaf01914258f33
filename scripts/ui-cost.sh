#!/usr/bin/env bash
# What the live page costs a measurement: a 100K room bench, ROUNDS times
# each (default 3, interleaved), with no page, with a page client that
# connects to /events and never reads, and watched by headless Chromium on
# this same machine (its screenshot of the page at the end is kept as
# OUT/live-bench-100k.png). Results go to results/<date>-<host>/ui-cost-*.
# Needs: fanout on PATH, /usr/bin/chromium, Python's websockets.
# OUT: the results root (default results); SHOTS: where the screenshot goes.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-results}
ARGS=(--backends epoll --conns 100000 --measure room --samples 3 --out "$OUT")
SHOTS=${SHOTS:-$OUT}
UI=127.0.0.1:18091
DEVTOOLS=9333

wait_for_ui_line() { # $1: stderr file
  for _ in $(seq 600); do grep -q '^ui http://' "$1" && return 0; sleep 0.1; done
  echo "no ui line in $1" >&2; return 1
}

for round in $(seq "$ROUNDS"); do
  fanout bench "${ARGS[@]}" --name "ui-cost-off-$round"

  err=$(mktemp)
  fanout bench "${ARGS[@]}" --name "ui-cost-stalled-$round" --ui "$UI" --ui-linger 0s 2> >(tee "$err" >&2) &
  bench=$!
  wait_for_ui_line "$err"
  # Connects, asks for the events, never reads; bounded.
  python3 -c "
import socket, time
s = socket.create_connection(('${UI%:*}', ${UI#*:}))
s.sendall(b'GET /events HTTP/1.1\r\nHost: x\r\n\r\n')
time.sleep(600)" &
  stalled=$!
  wait "$bench"
  kill "$stalled"

  fanout bench "${ARGS[@]}" --name "ui-cost-chromium-$round" --ui "$UI" --ui-linger 60s 2> >(tee "$err" >&2) &
  bench=$!
  wait_for_ui_line "$err"
  profile=$(mktemp -d)
  /usr/bin/chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --remote-debugging-port=$DEVTOOLS --window-size=1100,3000 --user-data-dir="$profile" \
    "http://$UI/" >/dev/null 2>&1 &
  chromium=$!
  for _ in $(seq 900); do grep -q 'shows the final result' "$err" && break; sleep 1; done
  sleep 3
  python3 scripts/page-screenshot.py "$DEVTOOLS" "$UI" "$SHOTS/live-bench-100k.png"
  kill "$chromium"; wait "$chromium" 2>/dev/null || true
  kill "$bench"; wait "$bench" 2>/dev/null || true
  rm -rf "$profile" "$err"
done
