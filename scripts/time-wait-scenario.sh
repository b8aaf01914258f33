#!/bin/sh
# The machine is rarely empty: reproduce issue 10's scenario and show what
# fanout does about it. Another client leaves N sockets in TIME_WAIT on
# 127.0.0.2 toward a server (connect, then close first: the closer keeps
# TIME_WAIT for 60 s), then:
#   1. fanout doctor names the ports held;
#   2. fanout load's default plan goes around 127.0.0.2 and says so;
#   3. --source 127.0.0.2 alone is refused before anything starts, naming
#      the TIME_WAIT sockets and the fixes;
#   4. --source 127.0.0.2-127.0.0.3: the plan counts what is free on each;
#   5. two seconds later, connect() may take over every one of those
#      TIME_WAIT sockets (tcp_tw_reuse 2, the default, toward loopback once
#      a socket is a second old), and --source 127.0.0.2 alone is enough.
# Loopback only; nothing changes on the machine but the TIME_WAIT sockets,
# which expire by themselves. Usage: scripts/time-wait-scenario.sh [FANOUT] [N]
set -eu
fanout=${1:-target/release/fanout}
held=${2:-25000}
port=23457
url="ws://127.0.0.1:$port/room"

"$fanout" serve --listen 127.0.0.1:$port >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
sleep 1

echo "\$ # another client: $held connections from 127.0.0.2, each closed by the client first"
python3 - "$held" "$port" <<'EOF'
import socket, sys
count, port = int(sys.argv[1]), int(sys.argv[2])
IP_BIND_ADDRESS_NO_PORT = 24
for _ in range(count):
    s = socket.socket()
    s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    s.bind(("127.0.0.2", 0))
    s.connect(("127.0.0.1", port))
    s.close()
EOF
echo "TIME_WAIT sockets from 127.0.0.2 toward the server: $(ss -Htan state time-wait src 127.0.0.2 dst 127.0.0.1:$port | wc -l)"

run() {
    echo
    echo "\$ fanout $*"
    "$fanout" "$@" 2>&1 || echo "(exit status $?)"
}
run doctor --conns 5000 --url "$url"
run load hold --url "$url" --conns 5000 --duration 0s
run load hold --url "$url" --conns 5000 --duration 0s --source 127.0.0.2
run load hold --url "$url" --conns 8000 --duration 0s --source 127.0.0.2-127.0.0.3
sleep 2
echo
echo "\$ sleep 2"
run load hold --url "$url" --conns 5000 --duration 0s --source 127.0.0.2
