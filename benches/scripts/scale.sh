#!/usr/bin/env bash
# How the control plane scales on a busy host: N sandboxes (default 1000)
# created and connected to `bridge` through vsctl, then a restart with all
# of them attached, then their removal; the daemon starts under a soft
# open-file limit of 1024, a service manager's usual one, and one endpoint
# may cost at most one descriptor.
#
#   sudo benches/scripts/scale.sh [N] [tap|veth]
#
# Prints first the floors: the same N clients doing only no-op reads
# (2 `vsctl network ls` each: process starts and API round trips), and, when
# built (`cargo build --release -p vswitch-benches --bin cp-floor`), the
# kernel's share: the same namespaces and TAP devices made, configured and
# removed by one minimal loop with no daemon. Then: the time to create and
# connect N sandboxes, the time for the daemon to come back with N
# endpoints (from exec to a working API), the time to remove them, the
# daemon's CPU time per sandbox, resident memory and descriptors per
# endpoint, and checks that two of the sandboxes reach each other.
#
# PARALLEL=K runs K clients at a time (default 8, as parallel `docker run`s
# do; each client creates and connects its share of the sandboxes, or
# removes them, one after another, through vsctl). Concurrent requests reach
# the daemon together: they share one commit (one fsync) per batch, and the
# effects of those that touch different sandboxes run at once. With
# PARALLEL=1 each change waits for its own fsync.
#
# FDLIMIT=SOFT:HARD sets the open-file limit (default 1024:16384: the daemon
# raises its soft limit to the hard one at start, as it does under a service
# manager). With 1024:1024 it cannot: N = 1000 endpoints then leave it a
# handful of descriptors, enough for one client at a time, not for eight.
#
# Needs root, iproute2, ping and prlimit. Everything it creates (a state
# directory in /tmp, namespaces vsz$$-* and vsz$$f-*) is removed at the end.
set -euo pipefail

n=${1:-1000}
kind=${2:-tap}
par=${PARALLEL:-8}
fdlimit=${FDLIMIT:-1024:16384}
here=$(cd "$(dirname "$0")/../.." && pwd)
bin=${VSWITCH_BIN:-$here/target/release}
tag=vsz$$
state=$(mktemp -d /tmp/$tag.XXXX)
sock=$state/vswitchd.sock
daemon_pid=

for tool in ip ping prlimit; do
  command -v $tool >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }
[ -x "$bin/vswitchd" ] && [ -x "$bin/vsctl" ] || {
  echo "build first: cargo build --release -p vswitch" >&2; exit 1; }

vsctl() { "$bin/vsctl" --socket "$sock" "$@"; }
export -f vsctl 2>/dev/null || true
export bin sock kind

start_daemon() {
  rm -f "$sock"
  prlimit --nofile="$fdlimit" "$bin/vswitchd" --state-dir "$state" --socket "$sock" --port-netns "${tag}p" \
    --port-kind "$kind" --log-level warn 2>>"$state/vswitchd.log" &
  daemon_pid=$!
  until vsctl network ls >/dev/null 2>&1; do
    kill -0 "$daemon_pid" 2>/dev/null || { echo "vswitchd died:" >&2; cat "$state/vswitchd.log" >&2; exit 1; }
    sleep 0.005
  done
}

stop_daemon() {
  kill "$daemon_pid" 2>/dev/null || true
  wait "$daemon_pid" 2>/dev/null || true
  daemon_pid=
}

cleanup() {
  set +e
  if [ -n "$daemon_pid" ]; then
    seq 1 "$n" | xargs -P 4 -I{} "$bin/vsctl" --socket "$sock" sandbox rm "$tag-{}" >/dev/null 2>&1
    stop_daemon
  fi
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^$tag(f)?-"); do ip netns del "$ns"; done
  rm -rf "$state"
}
# The daemons keep veth host ends in a namespace of their own; remove it
# after them.
trap 'cleanup; ip netns del "${tag}p" 2>/dev/null; ip netns del "${tag}q" 2>/dev/null; true' EXIT

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$daemon_pid/status"; }
fds() { ls "/proc/$daemon_pid/fd" | wc -l; }
# The daemon's CPU time (user + system) in ms: unlike wall time, it hardly
# depends on what else the host runs.
cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) * 1000 / hz }' "/proc/$daemon_pid/stat"; }
per() { awk -v a="$1" -v b="$2" -v n="$n" 'BEGIN { printf "%.2f", (b - a) / n }'; }

# Each of the $par clients is one shell looping over its share of the
# sandboxes (a shell per sandbox would add a process start to each, which
# no container runtime pays).
chunk=$(( (n + par - 1) / par ))
each() {  # run function $1 for every following argument
  local f=$1; shift
  for x in "$@"; do "$f" "$x" || return 1; done
}
export -f each

one() {  # create and connect sandbox $1
  "$bin/vsctl" --socket "$sock" sandbox create "$1" >/dev/null &&
    "$bin/vsctl" --socket "$sock" network connect --port-kind "$kind" bridge "$1" >/dev/null
}
export -f one

noop() {  # what a client costs without a change: two reads
  "$bin/vsctl" --socket "$sock" network ls >/dev/null &&
    "$bin/vsctl" --socket "$sock" network ls >/dev/null
}
export -f noop

rm_one() { "$bin/vsctl" --socket "$sock" sandbox rm "$1" >/dev/null; }
export -f rm_one

if [ -x "$bin/cp-floor" ]; then
  echo "kernel floor (cp-floor, no daemon, one loop):"
  "$bin/cp-floor" "${tag}f" "$n" | sed 's/^/  /'
  echo "  load average $(cut -d' ' -f1 /proc/loadavg)"
fi

start_daemon
t0=$(now)
seq 1 "$n" | xargs -P "$par" -n "$chunk" bash -c 'each noop "$@"' _
echo "client floor: $n clients making 2 no-op reads each: $(secs "$t0" "$(now)") s (load average $(cut -d' ' -f1 /proc/loadavg))"
rss0=$(rss_kib); fds0=$(fds)
echo "vswitchd: $(prlimit --pid "$daemon_pid" --nofile --noheadings --output SOFT,HARD) open-file limit (soft hard), $kind ports, $par client(s) at a time"

c0=$(cpu_ms)
t0=$(now)
seq 1 "$n" | sed "s/^/$tag-/" | xargs -P "$par" -n "$chunk" bash -c 'each one "$@"' _
t1=$(now)
c1=$(cpu_ms)
rss1=$(rss_kib); fds1=$(fds)
eps=$(vsctl network inspect bridge | grep -o '"EndpointID"' | wc -l || true)
echo "create + connect $n sandboxes: $(secs "$t0" "$t1") s ($eps endpoints on bridge; daemon CPU $(per "$c0" "$c1") ms per sandbox; load average $(cut -d' ' -f1 /proc/loadavg))"
echo "memory per endpoint: $(( (rss1 - rss0) * 1024 / n )) bytes ($rss0 KiB -> $rss1 KiB)"
echo "descriptors: $fds0 -> $fds1 ($(awk -v a="$fds0" -v b="$fds1" -v n="$n" 'BEGIN { printf "%.2f", (b - a) / n }') per endpoint)"
ip netns exec "$tag-1" ping -c 2 -i 0.2 -W 2 "$(vsctl sandbox inspect "$tag-$n" | grep -o '"IPv4Address": *"[0-9.]*' | grep -o '[0-9.]*$')" >/dev/null \
  && echo "sandbox 1 reaches sandbox $n" || { echo "sandbox 1 does NOT reach sandbox $n" >&2; exit 1; }

stop_daemon
t2=$(now)
start_daemon
t3=$(now)
echo "restart with $n endpoints, exec to a working API: $(secs "$t2" "$t3") s"
ip netns exec "$tag-1" ping -c 2 -i 0.2 -W 2 172.17.0.1 >/dev/null \
  && echo "after the restart, sandbox 1 reaches the gateway" || {
    echo "after the restart, sandbox 1 does NOT reach the gateway; the daemon's log:" >&2
    tail -20 "$state/vswitchd.log" >&2; exit 1; }

c4=$(cpu_ms)
t4=$(now)
seq 1 "$n" | sed "s/^/$tag-/" | xargs -P "$par" -n "$chunk" bash -c 'each rm_one "$@"' _
t5=$(now)
c5=$(cpu_ms)
echo "remove $n sandboxes: $(secs "$t4" "$t5") s (daemon CPU $(per "$c4" "$c5") ms per sandbox; load average $(cut -d' ' -f1 /proc/loadavg))"
left=$(ip netns list | grep -c "^$tag-" || true)
echo "namespaces left: $left"
