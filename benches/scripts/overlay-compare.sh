#!/usr/bin/env bash
# Overlay throughput between two hosts: iperf3 TCP, 1 and 4 streams, from a
# container on host X to a container on host Y, through vswitch (one
# vswitchd per host, --vtep, static peer file) and through the kernel's
# overlay data path as Docker builds it (a vxlan device enslaved to a Linux
# bridge per host, containers on veths), over the same underlay: every
# "host" is a namespace with a veth on one hub bridge.
#
# Modes and stream counts alternate within each round; medians and ranges
# over ROUNDS rounds (default 5) of SECONDS-second runs (default 5), for
# each congestion control in CCS (default "bbr cubic"); VSWITCHD_ARGS are
# added to the daemons' arguments. The load average is
# printed before and after: on a shared machine, compare the ratio.
# With VSWITCH_BIN_B=DIR, a second pair of hosts (xb, yb) runs the daemons
# of DIR (another build, say the one before a change) as a third mode,
# alternating with the others, so two builds are compared under the same
# load.
#
#   sudo benches/scripts/overlay-compare.sh [ROUNDS] [SECONDS]
#
# Needs root, iproute2, util-linux (nsenter), jq and iperf3, and release binaries
# (cargo build --release -p vswitch). Everything it creates (namespaces
# vov$$*, state directories in /tmp) is removed at the end.
set -euo pipefail

rounds=${1:-5}
secs=${2:-5}
ccs=${CCS:-bbr cubic}
here=$(cd "$(dirname "$0")/../.." && pwd)
bin=${VSWITCH_BIN:-$here/target/release}
bin_b=${VSWITCH_BIN_B:-}
vhosts="x y"
modes="vswitch kernel"
if [ -n "$bin_b" ]; then
  [ -x "$bin_b/vswitchd" ] && [ -x "$bin_b/vsctl" ] || {
    echo "VSWITCH_BIN_B=$bin_b has no vswitchd and vsctl" >&2; exit 1; }
  vhosts="x y xb yb"
  modes="vswitch vswitch-b kernel"
fi
tag=vov$$
state=$(mktemp -d /tmp/$tag.XXXX)
pids=()
namespaces=()

for tool in ip bridge iperf3 nsenter jq; do
  command -v $tool >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }
[ -x "$bin/vswitchd" ] && [ -x "$bin/vsctl" ] || {
  echo "build first: cargo build --release -p vswitch" >&2; exit 1; }

binof() { case $1 in xb | yb) echo "$bin_b" ;; *) echo "$bin" ;; esac; }
vsctl() { local h=$1; shift; "$(binof "$h")/vsctl" --socket "$state/$h/sock" "$@"; }

cleanup() {
  for h in $vhosts; do
    vsctl $h sandbox rm "${tag}$h-c" >/dev/null 2>&1 || true
    vsctl $h network rm "${tag}n" >/dev/null 2>&1 || true
  done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  for ns in "${namespaces[@]}" "${tag}x-c" "${tag}y-c" "${tag}xp" "${tag}yp" \
    "${tag}xb-c" "${tag}yb-c" "${tag}xbp" "${tag}ybp"; do
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$state"
}
trap cleanup EXIT
trap "exit 130" INT TERM

addns() { ip netns add "$1"; namespaces+=("$1"); ip -n "$1" link set lo up; }

# The underlay: a hub with a bridge; hosts x, y (vswitch) and kx, ky
# (kernel) each with u0 on it.
addns "${tag}hub"
ip -n "${tag}hub" link add br0 type bridge
ip -n "${tag}hub" link set br0 up
i=1
for h in x y kx ky $( [ -n "$bin_b" ] && echo xb yb ); do
  addns "${tag}$h"
  ip link add "${tag}$h" type veth peer name u0 netns "${tag}$h"
  ip link set "${tag}$h" netns "${tag}hub"
  ip -n "${tag}hub" link set "${tag}$h" master br0 up
  ip -n "${tag}$h" addr add "192.168.78.$i/24" dev u0
  ip -n "${tag}$h" link set u0 up
  i=$((i + 1))
done

# vswitch on x (192.168.78.1) and y (192.168.78.2).
# With VSWITCH_BIN_B, xb (192.168.78.5) and yb (192.168.78.6) the same
# way, a pair of their own.
pair() { # host-a host-b address-a address-b
  local peers="$state/peers-$1.toml" n=1 h addr
  cat >"$peers" <<EOF
[[vtep]]
name = "$1"
address = "$3"
[[vtep]]
name = "$2"
address = "$4"
[[network]]
vni = 4300
name = "${tag}n"
EOF
  for h in "$1" "$2"; do
    mkdir -p "$state/$h"
    addr=$3
    [ $n = 2 ] && addr=$4
    nsenter --net="/run/netns/${tag}$h" "$(binof "$h")/vswitchd" --state-dir "$state/$h" \
      --socket "$state/$h/sock" --port-netns "${tag}${h}p" --log-level warn \
      --vtep "$addr" --peers "$peers" ${VSWITCHD_ARGS:-} 2>>"$state/$h.log" &
    pids+=($!)
    until vsctl $h network ls >/dev/null 2>&1; do sleep 0.01; done
    vsctl $h network create -d overlay --subnet 10.98.0.0/24 --gateway 10.98.0.1 \
      --ip-range "10.98.0.$((64 * n))/26" "${tag}n" >/dev/null
    vsctl $h sandbox create "${tag}$h-c" >/dev/null
    vsctl $h network connect "${tag}n" "${tag}$h-c" >/dev/null
    n=$((n + 1))
  done
}
pair x y 192.168.78.1 192.168.78.2
[ -z "$bin_b" ] || pair xb yb 192.168.78.5 192.168.78.6
vs_server=10.98.0.128

# The kernel on kx (192.168.78.3) and ky (192.168.78.4): vxlan0 and a veth
# to the container, both in br0, as Docker's overlay namespace holds them.
n=3
for h in kx ky; do
  other=$((7 - n))
  ns="${tag}$h"
  ip -n "$ns" link add br0 type bridge
  ip -n "$ns" link add vxlan0 type vxlan id 4300 dstport 4789 local "192.168.78.$n" dev u0
  bridge -n "$ns" fdb append 00:00:00:00:00:00 dev vxlan0 dst "192.168.78.$other"
  ip -n "$ns" link set vxlan0 mtu 1450 master br0 up
  addns "$ns-c"
  ip link add "${tag}$h" type veth peer name eth0 netns "$ns-c"
  ip link set "${tag}$h" netns "$ns"
  ip -n "$ns" link set "${tag}$h" mtu 1450 master br0 up
  ip -n "$ns" link set br0 up
  ip -n "$ns-c" link set eth0 mtu 1450 up
  ip -n "$ns-c" addr add "10.99.0.$n/24" dev eth0
  n=$((n + 1))
done
k_server=10.99.0.4
sleep 0.5
ip netns exec "${tag}x-c" ping -c 2 -W 2 -q "$vs_server" >/dev/null
[ -z "$bin_b" ] || ip netns exec "${tag}xb-c" ping -c 2 -W 2 -q "$vs_server" >/dev/null
ip netns exec "${tag}kx-c" ping -c 2 -W 2 -q "$k_server" >/dev/null

run() { # mode streams cc -> Gbit/s
  local mode=$1 streams=$2 cc=$3 client server addr
  case $mode in
    vswitch) client="${tag}x-c" server="${tag}y-c" addr=$vs_server ;;
    vswitch-b) client="${tag}xb-c" server="${tag}yb-c" addr=$vs_server ;;
    kernel) client="${tag}kx-c" server="${tag}ky-c" addr=$k_server ;;
  esac
  ip netns exec "$server" iperf3 -s -1 >/dev/null 2>&1 &
  local srv=$!
  sleep 0.3
  local bps
  bps=$(ip netns exec "$client" iperf3 -c "$addr" -t "$secs" -P "$streams" -C "$cc" -J |
        jq -r '.end.sum_received.bits_per_second // 0')
  wait "$srv" 2>/dev/null || true
  awk -v b="${bps:-0}" 'BEGIN { printf "%.2f\n", b / 1e9 }'
}

summary() { # values... -> "median (min-max)"
  printf '%s\n' "$@" | sort -g | awk '
    { v[NR] = $1 }
    END { med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
          printf "%.2f %.2f %.2f\n", med, v[1], v[NR] }'
}

echo "load average before: $(cat /proc/loadavg)"
echo "iperf3 TCP x -> y, ${secs}s runs, $rounds alternating rounds"
for cc in $ccs; do
  declare -A res=()
  for r in $(seq "$rounds"); do
    for streams in 1 4; do
      for mode in $modes; do
        res[$mode$streams]+="$(run $mode $streams "$cc") "
      done
    done
  done
  for streams in 1 4; do
    read -r vm vlo vhi <<<"$(summary ${res[vswitch$streams]})"
    read -r km klo khi <<<"$(summary ${res[kernel$streams]})"
    ratio=$(awk -v a="$vm" -v b="$km" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }')
    printf '%-5s P=%d  vswitch %6.2f Gbit/s (%.2f-%.2f)  kernel vxlan+bridge %6.2f Gbit/s (%.2f-%.2f)  ratio %s\n' \
      "$cc" "$streams" "$vm" "$vlo" "$vhi" "$km" "$klo" "$khi" "$ratio"
    if [ -n "$bin_b" ]; then
      read -r bm blo bhi <<<"$(summary ${res[vswitch-b$streams]})"
      ratio=$(awk -v a="$bm" -v b="$km" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }')
      printf '%-5s P=%d  vswitch-b %6.2f Gbit/s (%.2f-%.2f)  ratio %s  (VSWITCH_BIN_B)\n' \
        "$cc" "$streams" "$bm" "$blo" "$bhi" "$ratio"
    fi
  done
  unset res
done
echo "load average after: $(cat /proc/loadavg)"
