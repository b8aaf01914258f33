#!/bin/sh
# The drain, end to end: N clients held by `fanout load hold`, then one
# SIGTERM to a server started with --drain-time W. The server stops
# accepting and tells every client to go (1001) spread over W; the load
# generator answers each close and counts it by code; the server's last
# line says how many closed cleanly. Loopback only; nothing on the machine
# changes. Usage: scripts/drain-scenario.sh [FANOUT] [BACKEND] [N] [W]
set -eu
fanout=${1:-target/release/fanout}
backend=${2:-epoll}
conns=${3:-100000}
window=${4:-10s}
port=23458
log=$(mktemp)

echo "\$ fanout serve --backend $backend --max-conns $conns --drain-time $window"
"$fanout" serve --backend "$backend" --listen 127.0.0.1:$port --max-conns "$conns" \
    --drain-time "$window" >"$log" 2>&1 &
server=$!
trap 'kill -9 $server 2>/dev/null || true; rm -f "$log"' EXIT
sleep 1
echo "\$ fanout load hold --conns $conns --duration 40s   # in the background"
"$fanout" load hold --url "ws://127.0.0.1:$port/echo" --conns "$conns" --duration 40s \
    >"$log.load" 2>&1 &
load=$!
# Wait until every connection is open.
for _ in $(seq 1 120); do
    kill -USR1 $server
    sleep 0.5
    open=$(grep '^stats ' "$log" | tail -1 | sed 's/.*"open":\([0-9]*\).*/\1/')
    [ "${open:-0}" -ge "$conns" ] && break
done
echo "server open: $open"
echo "\$ kill -TERM <server>   # at $(date -u +%T)"
start=$(date +%s.%N)
kill -TERM $server
wait $server || true
end=$(date +%s.%N)
echo "the server exited $(echo "$end - $start" | bc) s after the signal; its last line:"
tail -1 "$log"
wait $load || true
echo "\$ # the load generator's view"
grep -E "alive at end|connect " "$log.load"
rm -f "$log.load"
