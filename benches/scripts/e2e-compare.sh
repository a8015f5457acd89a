#!/usr/bin/env bash
# Compares two sandboxes talking through vswitchd with the same two
# namespaces joined by a Linux bridge, in one run, and prints the ratios.
#
#   sudo benches/scripts/e2e-compare.sh [tap|veth] [seconds]
#
# Measures: iperf3 TCP with 1 and 4 streams, 64-byte UDP packets per second
# (iperf3 -u -l 18 at an offered load far above what either path carries),
# and ping round-trip time. Needs root, iproute2, iperf3 and ping. Traffic
# stays inside namespaces this script creates and removes.
set -euo pipefail

kind=${1:-tap}
secs=${2:-10}
here=$(cd "$(dirname "$0")/../.." && pwd)
bin=${VSWITCH_BIN:-$here/target/release}
tag=vsb$$
state=$(mktemp -d /tmp/$tag.XXXX)
sock=$state/vswitchd.sock
daemon_pid=

for tool in ip iperf3 ping; do
  command -v $tool >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }
[ -x "$bin/vswitchd" ] && [ -x "$bin/vsctl" ] || {
  echo "build first: cargo build --release -p vswitch" >&2; exit 1; }

cleanup() {
  set +e
  ip netns del ${tag}b1 2>/dev/null; ip netns del ${tag}b2 2>/dev/null
  ip link del ${tag}br 2>/dev/null
  if [ -n "$daemon_pid" ]; then
    "$bin/vsctl" --socket "$sock" sandbox rm ${tag}v1 >/dev/null 2>&1
    "$bin/vsctl" --socket "$sock" sandbox rm ${tag}v2 >/dev/null 2>&1
    kill "$daemon_pid" 2>/dev/null; wait "$daemon_pid" 2>/dev/null
  fi
  rm -rf "$state"
}
trap cleanup EXIT

# --- kernel bridge: two namespaces, veth pairs, one bridge ------------------
ip link add ${tag}br type bridge
ip link set ${tag}br up
for i in 1 2; do
  ns=${tag}b$i
  ip netns add $ns
  ip link add ${tag}h$i type veth peer name eth0 netns $ns
  ip link set ${tag}h$i master ${tag}br up
  ip -n $ns addr add 10.254.0.$((i + 1))/24 dev eth0
  ip -n $ns link set eth0 up
  ip -n $ns link set lo up
done
bridge_ns=(${tag}b1 ${tag}b2)
bridge_ip=10.254.0.3

# --- vswitchd: two sandboxes on a user network -----------------------------
"$bin/vswitchd" --state-dir "$state" --socket "$sock" --log-level warn &
daemon_pid=$!
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
vsctl() { "$bin/vsctl" --socket "$sock" "$@"; }
vsctl network create --subnet 10.253.0.0/24 ${tag}net >/dev/null
for i in 1 2; do
  vsctl sandbox create ${tag}v$i >/dev/null
  vsctl network connect --port-kind $kind ${tag}net ${tag}v$i >/dev/null
done
vs_ns=(${tag}v1 ${tag}v2)
vs_ip=10.253.0.3

measure() { # name ns_client ns_server server_ip
  local name=$1 c=$2 s=$3 dst=$4
  ip netns exec $s iperf3 -s -D -1 -p 5201 >/dev/null; sleep 0.3
  local tcp1; tcp1=$(ip netns exec $c iperf3 -c $dst -p 5201 -t $secs -J | jq '.end.sum_received.bits_per_second')
  ip netns exec $s iperf3 -s -D -1 -p 5201 >/dev/null; sleep 0.3
  local tcp4; tcp4=$(ip netns exec $c iperf3 -c $dst -p 5201 -t $secs -P 4 -J | jq '.end.sum_received.bits_per_second')
  ip netns exec $s iperf3 -s -D -1 -p 5201 >/dev/null; sleep 0.3
  local udp; udp=$(ip netns exec $c iperf3 -c $dst -p 5201 -u -l 18 -b 0 -t $secs -J |
    jq '.end.sum.packets - .end.sum.lost_packets | . / '"$secs")
  local rtt; rtt=$(ip netns exec $c ping -q -c 200 -i 0.005 $dst | awk -F/ '/^rtt/ {print $5}')
  printf '%s %s %s %s %s\n' "$name" "$tcp1" "$tcp4" "$udp" "$rtt"
}

command -v jq >/dev/null || { echo "missing: jq" >&2; exit 1; }
k=$(measure bridge "${bridge_ns[0]}" "${bridge_ns[1]}" $bridge_ip)
v=$(measure vswitch "${vs_ns[0]}" "${vs_ns[1]}" $vs_ip)

awk -v k="$k" -v v="$v" -v kind="$kind" 'BEGIN {
  split(k, a, " "); split(v, b, " ");
  printf "%-28s %14s %14s %8s\n", "metric (" kind " ports)", "kernel bridge", "vswitchd", "ratio";
  printf "%-28s %11.2f Gb %11.2f Gb %8.2f\n", "TCP, 1 stream", a[2]/1e9, b[2]/1e9, b[2]/a[2];
  printf "%-28s %11.2f Gb %11.2f Gb %8.2f\n", "TCP, 4 streams", a[3]/1e9, b[3]/1e9, b[3]/a[3];
  printf "%-28s %10.0f pps %10.0f pps %8.2f\n", "UDP 64-byte frames", a[4], b[4], b[4]/a[4];
  printf "%-28s %11.3f ms %11.3f ms %8.2f\n", "ping RTT (lower is better)", a[5], b[5], b[5]/a[5];
}'
