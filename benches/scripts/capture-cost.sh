#!/usr/bin/env bash
# What a capture costs the datapath: iperf3 TCP between two sandboxes (a, b)
# on one network, with no capture, with a capture on a third sandbox's port
# (c: the per-frame test only), and with a capture on b's port (every frame
# copied into the bounded queue, read by vsctl and written to /dev/null).
# The three modes alternate within each round; medians and ranges over
# ROUNDS rounds (default 5) of SECONDS-second runs (default 5). TCP uses the
# host's congestion control unless CC names another (CC=cubic).
#
#   sudo benches/scripts/capture-cost.sh [ROUNDS] [SECONDS]
#
# Needs root, iproute2 and iperf3, and release binaries
# (cargo build --release -p vswitch). Everything it creates (a state
# directory in /tmp, namespaces vcc$$-*) is removed at the end.
set -euo pipefail

rounds=${1:-5}
secs=${2:-5}
here=$(cd "$(dirname "$0")/../.." && pwd)
bin=${VSWITCH_BIN:-$here/target/release}
tag=vcc$$
state=$(mktemp -d /tmp/$tag.XXXX)
sock=$state/vswitchd.sock
daemon_pid=
cap_pid=
srv_pid=

cc_args=()
[ -n "${CC:-}" ] && cc_args=(-C "$CC")

for tool in ip iperf3; do
  command -v $tool >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }
[ -x "$bin/vswitchd" ] && [ -x "$bin/vsctl" ] || {
  echo "build first: cargo build --release -p vswitch" >&2; exit 1; }

vsctl() { "$bin/vsctl" --socket "$sock" "$@"; }

cleanup() {
  [ -n "$cap_pid" ] && kill "$cap_pid" 2>/dev/null || true
  [ -n "$srv_pid" ] && kill "$srv_pid" 2>/dev/null || true
  for s in a b c; do vsctl sandbox rm "$tag-$s" >/dev/null 2>&1 || true; done
  vsctl network rm "$tag-n" >/dev/null 2>&1 || true
  [ -n "$daemon_pid" ] && { kill "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; }
  for s in a b c; do ip netns del "$tag-$s" 2>/dev/null || true; done
  rm -rf "$state"
}
# The daemons keep veth host ends in a namespace of their own; remove it
# after them.
trap 'cleanup; ip netns del "${tag}p" 2>/dev/null; ip netns del "${tag}q" 2>/dev/null; true' EXIT
trap "exit 130" INT TERM

"$bin/vswitchd" --state-dir "$state" --socket "$sock" --port-netns "${tag}p" --log-level warn 2>>"$state/vswitchd.log" &
daemon_pid=$!
until vsctl network ls >/dev/null 2>&1; do sleep 0.01; done
vsctl network create --subnet 10.249.0.0/24 "$tag-n" >/dev/null
for s in a b c; do
  vsctl sandbox create "$tag-$s" >/dev/null
  vsctl network connect "$tag-n" "$tag-$s" >/dev/null
done
sleep 0.3

run() { # mode -> Gbit/s
  local mode=$1
  case $mode in
    # The binary itself in the background (not the vsctl function), so that
    # $! is the process to stop; its stdout must not hold the $(…) pipe.
    third) "$bin/vsctl" --socket "$sock" capture "$tag-c" -w /dev/null >/dev/null & cap_pid=$! ;;
    peer)  "$bin/vsctl" --socket "$sock" capture "$tag-b" -w /dev/null >/dev/null & cap_pid=$! ;;
  esac
  sleep 0.3
  ip netns exec "$tag-b" iperf3 -s -1 >/dev/null 2>&1 & srv_pid=$!
  sleep 0.3
  local bps
  bps=$(ip netns exec "$tag-a" iperf3 -c 10.249.0.3 -t "$secs" "${cc_args[@]}" -J |
        sed -n 's/.*"bits_per_second":[[:space:]]*\([0-9.e+]*\).*/\1/p' | tail -1)
  wait "$srv_pid" 2>/dev/null || true; srv_pid=
  if [ -n "$cap_pid" ]; then kill "$cap_pid" 2>/dev/null || true; wait "$cap_pid" 2>/dev/null || true; cap_pid=; fi
  awk -v b="$bps" 'BEGIN { printf "%.2f\n", b / 1e9 }'
}

declare -A results=([none]="" [third]="" [peer]="")
for r in $(seq "$rounds"); do
  for mode in none third peer; do
    results[$mode]+="$(run $mode) "
  done
done

cc=${CC:-$(sysctl -n net.ipv4.tcp_congestion_control)}
echo "iperf3 TCP a -> b, ${secs}s runs, $rounds alternating rounds, congestion control $cc"
for mode in none third peer; do
  echo "${results[$mode]}" | tr ' ' '\n' | grep -v '^$' | sort -g | awk -v m="$mode" '
    { v[NR] = $1 }
    END { med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
          printf "%-6s median %6.2f Gbit/s  (runs %.2f-%.2f)\n", m, med, v[1], v[NR] }'
done
