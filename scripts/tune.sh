#!/usr/bin/env bash
# Apply the sysctls a 500K-connection run wants, run a command, then restore
# every value this script changed, even if the command fails or is interrupted.
#
#   sudo scripts/tune.sh cargo run --release -- bench --conns 500000
#
# Without a command it prints what it would change and changes nothing.
set -euo pipefail

declare -A WANT=(
  [net.core.somaxconn]=65535
  [net.ipv4.tcp_max_syn_backlog]=65535
  [fs.file-max]=4194304
)

current() { sysctl -n "$1" 2>/dev/null | tr -s '\t ' ' '; }

if [ $# -eq 0 ]; then
  for key in "${!WANT[@]}"; do
    echo "$key: $(current "$key") -> ${WANT[$key]}"
  done
  echo "usage: $0 COMMAND [ARGS...]   (applies these, runs COMMAND, restores them)"
  exit 0
fi

declare -A SAVED=()
restore() {
  for key in "${!SAVED[@]}"; do
    sysctl -q -w "$key=${SAVED[$key]}" || echo "tune.sh: could not restore $key=${SAVED[$key]}" >&2
  done
}
trap restore EXIT INT TERM

for key in "${!WANT[@]}"; do
  old=$(current "$key")
  # Only ever raise: a machine already tuned higher is left as it is.
  if [ "$old" -lt "${WANT[$key]}" ]; then
    SAVED[$key]=$old
    sysctl -q -w "$key=${WANT[$key]}"
    echo "tune.sh: $key $old -> ${WANT[$key]} (restored on exit)" >&2
  fi
done

"$@"
