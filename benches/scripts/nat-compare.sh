#!/usr/bin/env bash
# Container → outside TCP through three NAT paths, in one run, at MTU 1500:
#
#   kernel   Docker's path, built here: a Linux bridge and MASQUERADE with
#            ip_forward, all inside a "host" namespace of this script's own
#            (its iptables rules and sysctls live and die with it)
#   vswitch  vswitchd's host connector: the daemon runs with a namespace of
#            this script's own as its host; no rule, no forwarding
#   pasta    Debian's passt package, when installed: pasta --config-net on an
#            empty namespace, from a host namespace of this script's own,
#            its TAP's queue sized as vswitch's in bytes (below)
#
# Each host namespace reaches an "outside" namespace (the iperf3 server)
# over a veth; nothing touches the machine's own namespace.
#
#   sudo benches/scripts/nat-compare.sh [seconds] [runs]
#
# For each congestion control in CCS (default "cubic bbr"; iperf3 -C, which
# sets it on the client's and the server's sockets, so on the sender's in
# both directions) and each run, the paths are measured back to back in turn
# (1 and 4 streams each, in each direction of DIRS: "up", container →
# outside, and "down", outside → container with iperf3 -R; default both), so
# a change of machine load falls on all of them. The summary gives the
# median over the runs, the ratio of the medians to the kernel path, and
# the spread (lowest-highest of the per-run ratios), with the load average
# before and after: the machine is shared. "retx" is the median of the
# sender's TCP retransmissions per run (iperf3's count, all streams): the
# container's for "up", the outside server's for "down". "ms/GB" is the
# CPU time the daemon's connector threads spent per GB carried (median):
# unlike the throughput, it changes little with the machine's load, so
# it compares builds of the connector on a shared machine.
#
# NO_PASTA=1 leaves pasta out. PASTA_TXQUEUELEN sets the length of the
# queue of pasta's TAP in the container (default: 1000 x 65536 / 1500, the
# bytes vswitch's TAP queue holds; see below).
#
# Needs root, iproute2, iptables, iperf3, jq; pasta is optional.
set -euo pipefail

secs=${1:-5}
runs=${2:-5}
ccs=${CCS:-cubic bbr}
dirs=${DIRS:-up down}
here=$(cd "$(dirname "$0")/../.." && pwd)
bin=${VSWITCH_BIN:-$here/target/release}
tag=vsn$$
state=$(mktemp -d /tmp/$tag.XXXX)
sock=$state/vswitchd.sock
daemon_pid=
pasta_pid=

for tool in ip iperf3 jq iptables nsenter; do
  command -v $tool >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }
[ -x "$bin/vswitchd" ] && [ -x "$bin/vsctl" ] || {
  echo "build first: cargo build --release -p vswitch" >&2; exit 1; }

cleanup() {
  set +e
  [ -n "$pasta_pid" ] && { kill "$pasta_pid" 2>/dev/null; wait "$pasta_pid" 2>/dev/null; }
  if [ -n "$daemon_pid" ]; then
    "$bin/vsctl" --socket "$sock" sandbox rm ${tag}vc >/dev/null 2>&1
    kill "$daemon_pid" 2>/dev/null; wait "$daemon_pid" 2>/dev/null
  fi
  for ns in kh kc ko vh vo ph pc po p; do
    # An iperf3 server whose client never came (a failed measurement)
    # would outlive its namespace: stop what still runs in it first.
    ip netns pids ${tag}$ns 2>/dev/null | xargs -r kill 2>/dev/null
    ip netns del ${tag}$ns 2>/dev/null
  done
  rm -rf "$state"
}
trap cleanup EXIT

# A host namespace H with a veth to an outside namespace O: H has
# 10.240.N.1, O has 10.240.N.2 and runs the iperf3 server.
host_and_outside() { # H O N
  ip netns add $1; ip netns add $2
  ip link add ${tag}a$3 type veth peer name ${tag}b$3
  ip link set ${tag}a$3 netns $1; ip link set ${tag}b$3 netns $2
  ip -n $1 addr add 10.240.$3.1/24 dev ${tag}a$3
  ip -n $2 addr add 10.240.$3.2/24 dev ${tag}b$3
  for ns in $1 $2; do ip -n $ns link set lo up; done
  ip -n $1 link set ${tag}a$3 up; ip -n $2 link set ${tag}b$3 up
}

# --- kernel: bridge + MASQUERADE, as Docker sets it up (§3.2, §5) ----------
host_and_outside ${tag}kh ${tag}ko 1
ip netns add ${tag}kc
ip -n ${tag}kh link add kbr0 type bridge
ip -n ${tag}kh addr add 172.29.0.1/24 dev kbr0
ip -n ${tag}kh link set kbr0 up
ip link add ${tag}kv type veth peer name eth0 netns ${tag}kc
ip link set ${tag}kv netns ${tag}kh
ip -n ${tag}kh link set ${tag}kv master kbr0 up
ip -n ${tag}kc addr add 172.29.0.2/24 dev eth0
ip -n ${tag}kc link set eth0 up; ip -n ${tag}kc link set lo up
ip -n ${tag}kc route add default via 172.29.0.1
ip netns exec ${tag}kh sysctl -qw net.ipv4.ip_forward=1
ip netns exec ${tag}kh iptables -t nat -A POSTROUTING -s 172.29.0.0/24 ! -o kbr0 -j MASQUERADE

# --- vswitch: the daemon's host is a namespace of its own ------------------
host_and_outside ${tag}vh ${tag}vo 2
nsenter --net=/run/netns/${tag}vh "$bin/vswitchd" --state-dir "$state" --socket "$sock" \
  --port-netns ${tag}p --log-level warn ${VSWITCHD_ARGS:-} &
daemon_pid=$!
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
vsctl() { "$bin/vsctl" --socket "$sock" "$@"; }
vsctl network create --subnet 172.28.0.0/24 ${tag}net >/dev/null
vsctl sandbox create ${tag}vc >/dev/null
vsctl network connect ${tag}net ${tag}vc >/dev/null

# --- pasta, when installed -------------------------------------------------
paths="kernel vswitch"
if [ -z "${NO_PASTA:-}" ] && command -v pasta >/dev/null; then
  host_and_outside ${tag}ph ${tag}po 3
  ip -n ${tag}ph route add default via 10.240.3.2
  ip netns add ${tag}pc
  ip netns exec ${tag}ph pasta -q -f --runas 0:0 --no-map-gw --config-net -m 1500 --netns-only \
    --netns /run/netns/${tag}pc >/dev/null 2>&1 &
  pasta_pid=$!
  for _ in $(seq 50); do
    ip -n ${tag}pc -4 addr show 2>/dev/null | grep -q 10.240.3 && break; sleep 0.1
  done
  # pasta's TAP has no offloads: at MTU 1500 each entry of its queue is one
  # 1500-byte frame, where vswitch's TAP (the same 1000 entries) carries
  # GSO frames of up to 64 KiB. The container's TCP bursts its window
  # into that queue (a TAP frees what it queues, so TCP small queues do
  # not hold it back); 1000 frames overflow and the dropped frames cost
  # this pasta build a retransmission timeout each: 0.03-0.12 Gbit/s up
  # with ~1,500 retransmissions in 3 s, against 2.2-2.3 Gbit/s and none
  # with the queue below. The same bytes as vswitch's queue, then.
  pasta_if=$(ip -n ${tag}pc -o link show | awk -F': ' '$2 != "lo" { print $2; exit }')
  ip -n ${tag}pc link set dev "$pasta_if" txqueuelen "${PASTA_TXQUEUELEN:-$((1000 * 65536 / 1500))}"
  paths="$paths pasta"
fi

client_ns() { case $1 in kernel) echo ${tag}kc;; vswitch) echo ${tag}vc;; pasta) echo ${tag}pc;; esac; }
server_ns() { case $1 in kernel) echo ${tag}ko;; vswitch) echo ${tag}vo;; pasta) echo ${tag}po;; esac; }
server_ip() { case $1 in kernel) echo 10.240.1.2;; vswitch) echo 10.240.2.2;; pasta) echo 10.240.3.2;; esac; }

# CPU time (clock ticks) the daemon's connector threads have used so far.
connector_ticks() {
  local t=0 task
  for task in /proc/$daemon_pid/task/*; do
    case $(cat $task/comm 2>/dev/null) in
      host-conn*) t=$((t + $(sed 's/.*) //' $task/stat | awk '{ print $12 + $13 }'))) ;;
    esac
  done
  echo $t
}

iperf() { # path cc streams dir → bits per second received, sender's
  # retransmissions, connector CPU milliseconds per GB carried (vswitch only)
  local c s dst rev= t0=0 out
  c=$(client_ns $1); s=$(server_ns $1); dst=$(server_ip $1)
  [ "$4" = down ] && rev=-R
  ip netns exec $s iperf3 -s -D -1 -p 5201 >/dev/null; sleep 0.3
  [ $1 = vswitch ] && t0=$(connector_ticks)
  out=$(ip netns exec $c iperf3 -c $dst -p 5201 -t $secs -P $3 -C $2 $rev -J 2>/dev/null |
    jq -r '"\(.end.sum_received.bits_per_second // 0) \(.end.sum_sent.retransmits // 0) \(.end.sum_received.bytes // 0)"')
  set -- $1 $out
  if [ $1 = vswitch ] && [ "$4" != 0 ]; then
    echo "$2 $3 $(( ($(connector_ticks) - t0) * (1000000000000 / $(getconf CLK_TCK)) / $4 ))"
  else
    echo "$2 $3 0"
  fi
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "paths: $paths; directions: $dirs; ${runs} run(s) of ${secs}s per figure; MTU 1500; load before: $load_before"
results=()
for cc in $ccs; do
  for run in $(seq "$runs"); do
    for d in $dirs; do
      for p in $paths; do
        for n in 1 4; do
          v=$(iperf $p $cc $n $d)
          results+=("$cc/$d $n $p $run $v")
        done
      done
    done
    echo "  $cc run $run done (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

printf '%s\n' "${results[@]}" | awk -v paths="$paths" '
  function median(arr, n,   i, j, t) {
    for (i = 2; i <= n; i++) for (j = i; j > 1 && arr[j-1] > arr[j]; j--) {
      t = arr[j]; arr[j] = arr[j-1]; arr[j-1] = t }
    return n % 2 ? arr[(n+1)/2] : (arr[n/2] + arr[n/2+1]) / 2 }
  { v[$1, $2, $3, $4] = $5; rt[$1, $2, $3, $4] = $6; cpu[$1, $2, $3, $4] = $7
    runs[$1] = ($4 > runs[$1] ? $4 : runs[$1]); seen[$1] = 1 }
  END {
    np = split(paths, P, " ")
    printf "%-10s %-8s %-8s %10s %7s %11s %8s %7s\n", "cc/dir", "streams", "path", "Gbit/s", "ratio", "spread", "retx", "ms/GB"
    for (cc in seen) for (n = 1; n <= 4; n += 3) for (k = 1; k <= np; k++) {
      p = P[k]; m = runs[cc]
      for (r = 1; r <= m; r++) { x[r] = v[cc, n, p, r]; y[r] = v[cc, n, "kernel", r]; z[r] = rt[cc, n, p, r]; w[r] = cpu[cc, n, p, r] }
      mx = median(x, m); my = median(y, m); mz = median(z, m); mw = median(w, m)
      lo = 1e18; hi = 0
      for (r = 1; r <= m; r++) if (v[cc, n, "kernel", r] > 0) {
        q = v[cc, n, p, r] / v[cc, n, "kernel", r]; if (q < lo) lo = q; if (q > hi) hi = q }
      printf "%-10s %-8s %-8s %10.2f %7.2f %5.2f-%-5.2f %8d %7s\n", cc, n, p, mx / 1e9, (my > 0 ? mx / my : 0), lo, hi, mz, (p == "vswitch" ? sprintf("%d", mw) : "-")
    }
  }'
echo "load average before: $load_before; after: $load_after ($(nproc) cores)"
