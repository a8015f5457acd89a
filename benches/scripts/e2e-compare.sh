#!/usr/bin/env bash
# Compares two sandboxes talking through vswitchd with the same two
# namespaces joined by a Linux bridge, in one run, and prints the ratios.
#
#   sudo benches/scripts/e2e-compare.sh [tap|veth|all] [seconds] [runs]
#
# (all: TAP then veth, each under the host's congestion control, then
# under CC=cubic.)
#
# Measures: iperf3 TCP with 1 and 4 streams, 64-byte UDP packets per second
# (iperf3 -u -l 18 at an offered load far above what either path carries),
# and ping round-trip time. With several runs, the two paths alternate and
# the median of each figure is reported after the per-run table.
#
# TCP uses the namespaces' default congestion control, which new namespaces
# take from the host (net.ipv4.tcp_congestion_control); the script prints it,
# since results depend on it: BBR paces and sizes its window from the
# round-trip time, so any path through a userspace process does worse under
# BBR than under CUBIC. CC=cubic (or another) makes iperf3 use that one.
#
# With TAP ports, and when target/release/tap-copy exists (cargo build
# --release -p vswitch-benches --bin tap-copy), a third path is measured:
# two TAPs joined by a program that only copies frames, the floor of any
# userspace datapath on this machine.
#
# VSWITCHD_ARGS adds flags to vswitchd (e.g. --datapath-threads 1).
#
# A second vswitchd with --busy-poll ${BUSY_POLL:-always} (a window in µs, or
# `always`, the low-latency mode) serves two more sandboxes, whose ping
# round trip is measured in each run beside the default daemon's
# (BUSY_POLL=0 skips it). It runs only for its ping, started afresh in
# each run and stopped after it: with `always` its workers would otherwise
# spin through the other measurements, taking cores from the paths being
# measured, and the CPU-latency request it holds (--cpu-latency-qos: idle
# CPUs poll instead of halting) would speed up every other path's wakeups
# too.
#
# The summary gives each figure's median, the ratio of the medians, and
# the spread: the lowest and highest ratio of the runs (each run measures
# both paths back to back). Ping rows also give the difference in µs.
#
# Each TCP figure also gives the CPU time the path cost per GB carried
# (both iperf3 processes as iperf3 reports them, plus vswitchd's or
# tap-copy's own; the bridge forwards inside the iperf3 processes' system
# calls and softirqs, which the kernel charges to them) and the segments
# the sender retransmitted, and, for vswitchd, the frames dropped at its
# ports during the TCP runs (kernel_dropped and transmit drops, from
# `vsctl show-ports`). CPU per GB hardly moves with the machine's load
# where a rate does: when both cores are busy (4 streams), the rate of a
# path is about the cores over its CPU per GB, so a ratio of CPU costs
# bounds the ratio of rates. Retransmissions tell loss (which CUBIC answers
# by halving its window, BBR hardly) from a path that is merely slower.
#
# The machine's load average (/proc/loadavg: 1, 5 and 15 minutes) is
# printed before the runs, after each run and at the end: a userspace
# datapath shares the CPU with whatever else runs, the kernel bridge much
# less, so a figure means little without it.
#
# Needs root, iproute2, iperf3, jq and ping. Traffic stays inside namespaces
# this script creates and removes.
set -euo pipefail

# "all": every combination the datapath is judged on, one after another:
# TAP and veth, each under the host's congestion control and under CUBIC.
if [ "${1:-}" = all ]; then
  self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
  for k in tap veth; do
    for cc in "" cubic; do
      CC=$cc "$self" "$k" "${2:-10}" "${3:-1}"
      echo
    done
  done
  exit 0
fi

kind=${1:-tap}
secs=${2:-10}
runs=${3:-1}
here=$(cd "$(dirname "$0")/../.." && pwd)
bin=${VSWITCH_BIN:-$here/target/release}
tag=vsb$$
state=$(mktemp -d /tmp/$tag.XXXX)
sock=$state/vswitchd.sock
daemon_pid=
daemon2_pid=
state2=$state/busy
sock2=$state2/vswitchd.sock
busy=${BUSY_POLL:-always}
copy_pid=

for tool in ip iperf3 ping jq; do
  command -v $tool >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }
[ -x "$bin/vswitchd" ] && [ -x "$bin/vsctl" ] || {
  echo "build first: cargo build --release -p vswitch" >&2; exit 1; }

cleanup() {
  set +e
  # An iperf3 server whose client never came (a failed run) would outlive
  # its namespace: stop whatever still runs in this script's namespaces.
  for ns in b1 b2 c1 c2 v1 v2 w1 w2; do
    ip netns pids "${tag}$ns" 2>/dev/null | xargs -r kill 2>/dev/null
  done
  ip netns del ${tag}b1 2>/dev/null; ip netns del ${tag}b2 2>/dev/null
  [ -n "$copy_pid" ] && { kill "$copy_pid" 2>/dev/null; wait "$copy_pid" 2>/dev/null; }
  ip netns del ${tag}c1 2>/dev/null; ip netns del ${tag}c2 2>/dev/null
  ip link del ${tag}ca 2>/dev/null; ip link del ${tag}cb 2>/dev/null
  ip link del ${tag}br 2>/dev/null
  if [ -n "$daemon_pid" ]; then
    "$bin/vsctl" --socket "$sock" sandbox rm ${tag}v1 >/dev/null 2>&1
    "$bin/vsctl" --socket "$sock" sandbox rm ${tag}v2 >/dev/null 2>&1
    kill "$daemon_pid" 2>/dev/null; wait "$daemon_pid" 2>/dev/null
  fi
  busy_stop
  rm -rf "$state"
}
# The daemons keep veth host ends in a namespace of their own; remove it
# after them.
trap 'cleanup; ip netns del "${tag}p" 2>/dev/null; ip netns del "${tag}q" 2>/dev/null; true' EXIT

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
# shellcheck disable=SC2086 # VSWITCHD_ARGS is a list of flags
"$bin/vswitchd" --state-dir "$state" --socket "$sock" --port-netns "${tag}p" --log-level warn ${VSWITCHD_ARGS:-} &
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

# --- a second vswitchd in the low-latency mode, for the ping round trip ------
# Started for each of its pings and stopped after it (see the top).
busy_start() {
  mkdir -p "$state2"
  # shellcheck disable=SC2086 # VSWITCHD_ARGS is a list of flags
  "$bin/vswitchd" --state-dir "$state2" --socket "$sock2" --port-netns "${tag}q" --log-level warn ${VSWITCHD_ARGS:-} --busy-poll "$busy" &
  daemon2_pid=$!
  for _ in $(seq 50); do [ -S "$sock2" ] && break; sleep 0.1; done
  vsctl2() { "$bin/vsctl" --socket "$sock2" "$@"; }
  vsctl2 network create --subnet 10.252.0.0/24 ${tag}net2 >/dev/null
  for i in 1 2; do
    vsctl2 sandbox create ${tag}w$i >/dev/null
    vsctl2 network connect --port-kind $kind ${tag}net2 ${tag}w$i >/dev/null
  done
  # The first ping waits for ARP: not part of the figure.
  ip netns exec ${tag}w1 ping -q -c 3 -i 0.1 10.252.0.3 >/dev/null || true
}
busy_stop() {
  [ -n "$daemon2_pid" ] || return 0
  "$bin/vsctl" --socket "$sock2" sandbox rm ${tag}w1 >/dev/null 2>&1 || true
  "$bin/vsctl" --socket "$sock2" sandbox rm ${tag}w2 >/dev/null 2>&1 || true
  kill "$daemon2_pid" 2>/dev/null || true
  wait "$daemon2_pid" 2>/dev/null || true
  daemon2_pid=
  rm -rf "$state2"
  ip netns del "${tag}q" 2>/dev/null || true
}

# --- a blind copy between two TAPs (TAP runs only) ---------------------------
copy_ns=()
if [ "$kind" = tap ] && [ -x "$bin/tap-copy" ]; then
  "$bin/tap-copy" ${tag}ca ${tag}cb > "$state/copy.out" &
  copy_pid=$!
  for _ in $(seq 50); do grep -q ready "$state/copy.out" 2>/dev/null && break; sleep 0.1; done
  for i in 1 2; do
    ns=${tag}c$i dev=${tag}c$([ $i = 1 ] && echo a || echo b)
    ip netns add $ns
    ip link set $dev netns $ns
    ip -n $ns link set $dev name eth0
    ip -n $ns addr add 10.255.0.$((i + 1))/24 dev eth0
    ip -n $ns link set eth0 up
    ip -n $ns link set lo up
  done
  copy_ns=(${tag}c1 ${tag}c2)
fi

cc_default=$(ip netns exec ${tag}v1 sysctl -n net.ipv4.tcp_congestion_control)
cc_args=()
[ -n "${CC:-}" ] && cc_args=(-C "$CC")

# The CPU time a process has used so far (all its threads), in clock ticks;
# 0 without a process (the bridge forwards inside the iperf3 processes'
# own system calls and softirqs).
cpu_ticks() { # pid
  if [ -n "${1:-}" ]; then awk '{ print $14 + $15 }' "/proc/$1/stat"; else echo 0; fi
}

# TCP segments the namespace has retransmitted so far (RetransSegs of
# /proc/net/snmp, read inside it).
retrans() { # ns
  ip netns exec "$1" awk '/^Tcp:/ { if (!n) { for (i = 1; i <= NF; i++) if ($i == "RetransSegs") n = i; next } print $n }' /proc/net/snmp
}

# Frames lost at the daemon's ports so far: what the kernel dropped there
# (kernel_dropped: a TAP's full queue, a packet socket's full buffer) and
# what the daemon could not transmit. 0 for the other paths.
port_drops() { # name
  if [ "$1" = vswitch ]; then
    vsctl show-ports --format json | jq '[.[] | .KernelDropped + .TxDropped] | add // 0'
  else
    echo 0
  fi
}

# One iperf3 TCP run: the rate received (bit/s), the CPU seconds spent per
# GB carried (both iperf3 processes, as iperf3 reports them, plus the
# forwarding process: the daemon or tap-copy), the segments the sender
# retransmitted (a path that drops shows here; CUBIC halves its window on
# each loss, BBR does not) and the frames dropped at the daemon's ports.
tcp_run() { # name ns_client ns_server server_ip streams forwarder_pid
  local name=$1 c=$2 s=$3 dst=$4 streams=$5 fwd=${6:-}
  ip netns exec $s iperf3 -s -D -1 -p 5201 >/dev/null; sleep 0.3
  local r0 f0 d0 j f1 r1 d1
  r0=$(retrans $c); f0=$(cpu_ticks "$fwd"); d0=$(port_drops $name)
  j=$(ip netns exec $c iperf3 -c $dst -p 5201 -t $secs -P $streams "${cc_args[@]}" -J)
  f1=$(cpu_ticks "$fwd"); r1=$(retrans $c); d1=$(port_drops $name)
  jq -r --argjson secs "$secs" --argjson fwd "$(( f1 - f0 ))" --argjson hz "$(getconf CLK_TCK)" --argjson rt "$(( r1 - r0 ))" --argjson dr "$(( d1 - d0 ))" '
    .end.sum_received.bits_per_second as $b | (.end.cpu_utilization_percent // {}) as $c |
    ($b * $secs / 8e9) as $gb |
    "\($b) \(if $gb > 0 then ((($c.host_total // 0) + ($c.remote_total // 0)) / 100 * $secs + $fwd / $hz) / $gb else 0 end) \($rt) \($dr)"' <<<"$j"
}

measure() { # name ns_client ns_server server_ip [forwarder_pid]
  local name=$1 c=$2 s=$3 dst=$4 fwd=${5:-}
  local tcp1 cpu1 rt1 dr1 tcp4 cpu4 rt4 dr4
  read -r tcp1 cpu1 rt1 dr1 < <(tcp_run $name $c $s $dst 1 "$fwd")
  read -r tcp4 cpu4 rt4 dr4 < <(tcp_run $name $c $s $dst 4 "$fwd")
  ip netns exec $s iperf3 -s -D -1 -p 5201 >/dev/null; sleep 0.3
  local udp; udp=$(ip netns exec $c iperf3 -c $dst -p 5201 -u -l 18 -b 0 -t $secs -J |
    jq '.end.sum.packets - .end.sum.lost_packets | . / '"$secs")
  local rtt; rtt=$(ping_rtt $c $dst)
  printf '%s %s %s %s %s %s %s %s %s %s %s\n' "$name" "$tcp1" "$tcp4" "$udp" "$rtt" "$cpu1" "$cpu4" "$rt1" "$rt4" "$dr1" "$dr4"
}

ping_rtt() { # ns dst: the mean round trip of 200 pings, in ms
  ip netns exec $1 ping -q -c 200 -i 0.005 $2 | awk -F/ '/^rtt/ {print $5}'
}

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
echo "congestion control: ${CC:-$cc_default}; $kind ports; $runs run(s) of ${secs}s per figure; load average $(loadavg)"
results=()
for run in $(seq "$runs"); do
  k=$(measure bridge "${bridge_ns[0]}" "${bridge_ns[1]}" $bridge_ip)
  v=$(measure vswitch "${vs_ns[0]}" "${vs_ns[1]}" $vs_ip "$daemon_pid")
  results+=("$k" "$v")
  if [ ${#copy_ns[@]} = 2 ]; then
    results+=("$(measure copy "${copy_ns[0]}" "${copy_ns[1]}" 10.255.0.3 "$copy_pid")")
  fi
  if [ "$busy" != 0 ]; then
    busy_start
    results+=("busy 0 0 0 $(ping_rtt ${tag}w1 10.252.0.3)")
    busy_stop
  fi
  if [ "$runs" -gt 1 ]; then
    echo "$run $k $v $(loadavg)" | awk '{ printf "run %s: TCP 1 stream: vswitchd %.2f Gb, bridge %.2f Gb, ratio %.2f; 4 streams retransmitted: vswitchd %d, bridge %d; 64-byte UDP ratio %.2f; load average %s %s %s\n", $1, $14/1e9, $3/1e9, $14/$3, $21, $10, $16/$5, $24, $25, $26 }'
  fi
done

# Each figure's median over the runs, the ratio of the medians, and the
# spread of the per-run ratios.
printf '%s\n' "${results[@]}" | awk -v kind="$kind" -v busy="$busy" '
  function median(arr, n,   i, j, t) {
    for (i = 2; i <= n; i++) for (j = i; j > 1 && arr[j-1] > arr[j]; j--) {
      t = arr[j]; arr[j] = arr[j-1]; arr[j-1] = t }
    return n % 2 ? arr[(n+1)/2] : (arr[n/2] + arr[n/2+1]) / 2 }
  # A figure of 0 or null is a measurement that failed (iperf3 could not
  # connect, ping got no answer): left out of the median and the spread,
  # and counted.
  function med(T, f, n,   i, m, x) {
    m = 0
    for (i = 1; i <= n; i++) if (T[f, i] + 0 > 0) x[++m] = T[f, i] + 0
    return m ? median(x, m) : 0 }
  # The same with zeros kept (a count of retransmissions).
  function med0(T, f, n,   i, m, x) {
    m = 0
    for (i = 1; i <= n; i++) if (T[f, i] != "") x[++m] = T[f, i] + 0
    return m ? median(x, m) : 0 }
  function spread(T, f, n,   i, r, lo, hi, bad) {
    lo = 1e18; hi = 0; bad = 0
    for (i = 1; i <= n; i++) {
      if (T[f, i] + 0 <= 0 || K[f, i] + 0 <= 0) { bad++; continue }
      r = T[f, i] / K[f, i]; if (r < lo) lo = r; if (r > hi) hi = r }
    return hi ? sprintf("%.2f-%.2f", lo, hi) (bad ? sprintf(" (%d failed)", bad) : "") : "none" }
  function rows(T, n, label) {
    printf "%-30s %14s %14s %6s %11s\n", "metric (" kind " ports)", "kernel bridge", label, "ratio", "runs";
    printf "%-30s %11.2f Gb %11.2f Gb %6.2f %11s\n", "TCP, 1 stream", a[2]/1e9, med(T, 2, n)/1e9, med(T, 2, n)/a[2], spread(T, 2, n);
    printf "%-30s %11.2f Gb %11.2f Gb %6.2f %11s\n", "TCP, 4 streams", a[3]/1e9, med(T, 3, n)/1e9, med(T, 3, n)/a[3], spread(T, 3, n);
    printf "%-30s %10.0f pps %10.0f pps %6.2f %11s\n", "UDP 64-byte frames", a[4], med(T, 4, n), med(T, 4, n)/a[4], spread(T, 4, n);
    printf "%-30s %11.3f ms %11.3f ms %6.2f %11s  (%+.0f us)\n", "ping RTT (lower is better)", a[5], med(T, 5, n), med(T, 5, n)/a[5], spread(T, 5, n), (med(T, 5, n) - a[5]) * 1000;
    printf "%-30s %11.2f s  %11.2f s  %6.2f %11s\n", "CPU per GB, TCP 1 stream", a[6], med(T, 6, n), med(T, 6, n)/a[6], spread(T, 6, n);
    printf "%-30s %11.2f s  %11.2f s  %6.2f %11s\n", "CPU per GB, TCP 4 streams", a[7], med(T, 7, n), med(T, 7, n)/a[7], spread(T, 7, n);
    printf "%-30s %14d %14d\n", "retransmitted, TCP 1 stream", a[8], med0(T, 8, n);
    printf "%-30s %14d %14d\n", "retransmitted, TCP 4 streams", a[9], med0(T, 9, n);
    if (label == "vswitchd") printf "%-30s %14s %14d  (all TCP runs)\n", "dropped at the daemon ports", "", sum(T, 10, n) + sum(T, 11, n) }
  function sum(T, f, n,   i, t) { t = 0; for (i = 1; i <= n; i++) t += T[f, i]; return t }
  $1 == "bridge" { nk++; for (f = 2; f <= 11; f++) K[f, nk] = $f }
  $1 == "vswitch" { nv++; for (f = 2; f <= 11; f++) V[f, nv] = $f }
  $1 == "copy" { nc++; for (f = 2; f <= 11; f++) C[f, nc] = $f }
  $1 == "busy" { nb++; B[5, nb] = $5 }
  END {
    for (f = 2; f <= 7; f++) a[f] = med(K, f, nk)
    for (f = 8; f <= 9; f++) a[f] = med0(K, f, nk)
    rows(V, nv, "vswitchd")
    if (nb) printf "%-30s %11.3f ms %11.3f ms %6.2f %11s  (%+.0f us)\n", "ping RTT, --busy-poll " busy, a[5], med(B, 5, nb), med(B, 5, nb)/a[5], spread(B, 5, nb), (med(B, 5, nb) - a[5]) * 1000;
    if (nc) rows(C, nc, "tap-copy")
  }'
echo "load average at the end: $(loadavg)"
