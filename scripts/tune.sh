#!/usr/bin/env bash
# Apply the sysctls a 500K-connection run wants, run a command, then restore
# every value this script changed, even if the command fails or is interrupted.
#
#   scripts/tune.sh cargo run --release -- bench --conns 500000
#
# The sysctls are written as root: directly when run as root, through sudo
# otherwise. The command itself runs as whoever ran this script.
#
# Without a command it prints what it would change and changes nothing.
set -euo pipefail

declare -A WANT=(
  [net.core.somaxconn]=65535
  [net.ipv4.tcp_max_syn_backlog]=65535
  [fs.file-max]=8388608
)

current() { sysctl -n "$1" 2>/dev/null | tr -s '\t ' ' '; }

# Run "$@" as root: directly when we are root, else through sudo.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    echo "tune.sh: writing sysctls needs root, and sudo is not installed: run this script as root" >&2
    return 1
  fi
}

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
    as_root sysctl -q -w "$key=${SAVED[$key]}" || echo "tune.sh: could not restore $key=${SAVED[$key]}" >&2
  done
}
trap restore EXIT INT TERM

for key in "${!WANT[@]}"; do
  old=$(current "$key")
  # Only ever raise: a machine already tuned higher is left as it is.
  if [ "$old" -lt "${WANT[$key]}" ]; then
    as_root sysctl -q -w "$key=${WANT[$key]}"
    SAVED[$key]=$old
    echo "tune.sh: $key $old -> ${WANT[$key]} (restored on exit)" >&2
  fi
done

"$@"
