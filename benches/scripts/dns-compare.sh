#!/usr/bin/env bash
# Compares the embedded DNS of vswitchd (127.0.0.11 in a sandbox) with
# aardvark-dns (podman's) serving the same names, with dnsperf, and prints
# queries per second and the ratio.
#
#   sudo benches/scripts/dns-compare.sh [seconds]
#
# Needs root, iproute2, dnsperf and aardvark-dns (Debian packages `dnsperf`
# and `aardvark-dns`; the latter installs /usr/lib/podman/aardvark-dns).
# Every query names a local record (A for a peer's name, an alias, a short
# id), so neither server forwards anything: no query leaves the namespaces
# this script creates and removes.
#
# Both servers are reached over loopback inside one namespace each:
# vswitchd's listener is 127.0.0.11:53 inside the asking sandbox;
# aardvark-dns listens on an address added to `lo` in its namespace, and
# dnsperf asks from a second address on `lo`, which the config
# lists as a container (aardvark-dns answers by the asker's address).
set -euo pipefail

secs=${1:-10}
here=$(cd "$(dirname "$0")/../.." && pwd)
bin=${VSWITCH_BIN:-$here/target/release}
aardvark=${AARDVARK_DNS:-$(command -v aardvark-dns || echo /usr/lib/podman/aardvark-dns)}
tag=vdb$$
state=$(mktemp -d /tmp/$tag.XXXX)
sock=$state/vswitchd.sock
aconf=$state/aardvark
daemon_pid=
aardvark_pid=

for tool in ip dnsperf; do
  command -v $tool >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
[ -x "$aardvark" ] || { echo "missing: aardvark-dns (apt-get install aardvark-dns)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }
[ -x "$bin/vswitchd" ] && [ -x "$bin/vsctl" ] || {
  echo "build first: cargo build --release -p vswitch (or set VSWITCH_BIN)" >&2; exit 1; }

cleanup() {
  set +e
  if [ -z "$aardvark_pid" ] && [ -f "$aconf/aardvark.pid" ]; then
    aardvark_pid=$(cat "$aconf/aardvark.pid")
  fi
  [ -n "$aardvark_pid" ] && kill "$aardvark_pid" 2>/dev/null
  ip netns del ${tag}a 2>/dev/null
  if [ -n "$daemon_pid" ]; then
    for s in c p1 p2; do
      "$bin/vsctl" --socket "$sock" sandbox rm ${tag}$s >/dev/null 2>&1
    done
    "$bin/vsctl" --socket "$sock" network rm ${tag}n >/dev/null 2>&1
    kill "$daemon_pid" 2>/dev/null; wait "$daemon_pid" 2>/dev/null
  fi
  rm -rf "$state"
}
# The daemons keep veth host ends in a namespace of their own; remove it
# after them.
trap 'cleanup; ip netns del "${tag}p" 2>/dev/null; ip netns del "${tag}q" 2>/dev/null; true' EXIT

# The names both servers answer, and the queries dnsperf repeats.
queries=$state/queries
printf 'peer1 A\npeer2 A\nweb A\ncache A\n' >"$queries"

# --- vswitchd: three sandboxes on a user network ---------------------------
printf 'nameserver 10.251.0.250\n' >"$state/resolv.conf"
"$bin/vswitchd" --state-dir "$state/vs" --socket "$sock" --port-netns "${tag}p" --log-level warn \
  --resolv-conf "$state/resolv.conf" &
daemon_pid=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
vsctl() { "$bin/vsctl" --socket "$sock" "$@"; }
vsctl network create --subnet 10.251.0.0/24 ${tag}n >/dev/null
vsctl sandbox create ${tag}c >/dev/null
vsctl network connect ${tag}n ${tag}c >/dev/null
vsctl sandbox create ${tag}p1 >/dev/null
vsctl network connect --alias web ${tag}n ${tag}p1 >/dev/null
vsctl sandbox create ${tag}p2 >/dev/null
vsctl network connect --alias cache ${tag}n ${tag}p2 >/dev/null
sed -i "s/^peer1 /${tag}p1 /; s/^peer2 /${tag}p2 /" "$queries"
ip netns exec ${tag}c dig +short +time=2 +tries=1 @127.0.0.11 web >/dev/null 2>&1 ||
  { echo "vswitchd does not answer in the sandbox" >&2; exit 1; }

# --- aardvark-dns: the same names, in its own namespace ---------------------
ip netns add ${tag}a
ip -n ${tag}a link set lo up
ip -n ${tag}a addr add 10.250.0.1/32 dev lo
ip -n ${tag}a addr add 10.250.0.2/32 dev lo
mkdir -p "$aconf"
ctr_id() { printf '%064x' "$1"; }
# First line: the listen address. Then: id, IPv4s, IPv6s (none), names.
{
  echo "10.250.0.1"
  echo "$(ctr_id 1) 10.250.0.2  ${tag}c"
  echo "$(ctr_id 2) 10.250.0.3  ${tag}p1,web"
  echo "$(ctr_id 3) 10.250.0.4  ${tag}p2,cache"
} >"$aconf/${tag}n"
# `run` forks a server and returns once it is ready.
ip netns exec ${tag}a "$aardvark" --config "$aconf" -p 53 run
[ -f "$aconf/aardvark.pid" ] && aardvark_pid=$(cat "$aconf/aardvark.pid")
ip netns exec ${tag}a dig +short +time=2 +tries=1 -b 10.250.0.2 @10.250.0.1 web |
  grep -qx 10.250.0.3 || { echo "aardvark-dns does not answer" >&2; exit 1; }

qps() { # ns server [local address]
  local ns=$1 server=$2 local=${3:-}
  ip netns exec "$ns" dnsperf -s "$server" -p 53 ${local:+-a "$local"} \
    -d "$queries" -l "$secs" -c 4 -q 200 2>&1 |
    awk '/Queries per second/ {print $4}'
}

vs=$(qps ${tag}c 127.0.0.11)
aa=$(qps ${tag}a 10.250.0.1 10.250.0.2)
printf '%-14s %12s\n' server 'queries/s'
printf '%-14s %12s\n' vswitchd "$vs" aardvark-dns "$aa"
awk -v v="$vs" -v a="$aa" 'BEGIN { if (a > 0) printf "ratio vswitchd/aardvark-dns: %.2f\n", v / a }'
