#!/usr/bin/env bash
# Docker's containers on `-d bridge` against `-d vswitch --ipam-driver
# vswitch`, TCP throughput in one run, on an engine of this script's own:
#
#   c2c       container → container on the same network (iperf3 run in the
#             containers' network namespaces with nsenter: the busybox image
#             has no iperf3)
#   pub-host  host → 127.0.0.1:P, P published with -p P:5201 (the bridge
#             goes through docker-proxy, vswitch through its host connector)
#   pub-out   an outside namespace → the host's address:P, behind a veth of
#             this script's own (the bridge DNATs in the kernel, vswitch
#             accepts on a host socket and carries the flow itself)
#
#   sudo benches/scripts/docker-compare.sh [seconds] [runs]
#
# The script starts its own containerd, dockerd (data root, exec root, pid
# file and API socket under a temporary directory, --bridge=none, vfs) and
# vswitchd (release build, serving the plugin on a socket of its own), and
# imports a busybox image made from the static binary, as
# tests/tests/e2e_docker.rs does. For each congestion control in CCS
# (default: the host's, then cubic; set with the client's -C) and each run,
# every test is measured on both drivers back to back, the order
# alternating between runs, so a change of machine load falls on both. The
# summary gives the median over the runs per driver, the ratio of the
# medians (vswitch / bridge) and the spread (lowest-highest of the per-run
# ratios), with the load average before and after: the machine is shared.
#
# Whatever happens it removes what it made (containers, networks, both
# daemons, mounts, the namespace and veth) and puts back the host's
# iptables rules, nftables tables, ip_forward and br_netfilter as found.
# It holds the Docker end-to-end test's lock, so the two never overlap.
#
# Needs root, containerd, dockerd, docker, runc, busybox (static), iperf3,
# jq, nsenter, iproute2, iptables-save/-restore and nft.
set -euo pipefail

secs=${1:-5}
runs=${2:-5}
host_cc=$(sysctl -n net.ipv4.tcp_congestion_control)
ccs=${CCS:-$host_cc cubic}
here=$(cd "$(dirname "$0")/../.." && pwd)
bin=${VSWITCH_BIN:-$here/target/release}
tag=vdc$$
dir=$(mktemp -d /tmp/$tag.XXXX)
plugin=$tag
plugin_sock=/run/docker/plugins/$plugin.sock
vsock=$dir/vswitchd.sock
dsock=$dir/docker.sock
outside=${tag}o
x=$(( $$ % 250 ))
host_ip=10.237.$x.1
outside_ip=10.237.$x.2
ctd_pid= dockerd_pid= vswitchd_pid=

for tool in containerd dockerd docker runc busybox iperf3 jq nsenter ip iptables-save \
            iptables-restore nft tar flock; do
  command -v $tool >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }
[ -x "$bin/vswitchd" ] && [ -x "$bin/vsctl" ] || {
  echo "build first: cargo build --release -p vswitch" >&2; exit 1; }

mkdir -p /run/lock
exec 9>/run/lock/vswitch-e2e-docker.lock
flock 9

# What the host looks like before: put back at exit.
iptables_before=$(iptables-save)
nft_before=$(nft list tables 2>/dev/null | sed -n 's/^table //p')
forward_before=$(cat /proc/sys/net/ipv4/ip_forward)
[ -d /proc/sys/net/bridge ] && brnf_before=1 || brnf_before=0
bridges_before=$(ip -o link show type bridge | awk -F': ' '{print $2}')
leftovers=()
for p in /etc/docker/key.json /etc/docker /run/docker/plugins /run/docker \
         /run/containerd/s /run/containerd; do
  [ -e "$p" ] || leftovers+=("$p")
done

docker() { DOCKER_HOST=unix://$dsock command docker "$@"; }
vsctl() { "$bin/vsctl" --socket "$vsock" "$@"; }

cleanup() {
  set +e
  if [ -n "$dockerd_pid" ]; then
    for id in $(docker ps -aq); do docker rm -f "$id" >/dev/null 2>&1; done
    docker network prune -f >/dev/null 2>&1
    kill "$dockerd_pid" 2>/dev/null; wait "$dockerd_pid" 2>/dev/null
  fi
  [ -n "$ctd_pid" ] && { kill "$ctd_pid" 2>/dev/null; wait "$ctd_pid" 2>/dev/null; }
  [ -n "$vswitchd_pid" ] && { kill "$vswitchd_pid" 2>/dev/null; wait "$vswitchd_pid" 2>/dev/null; }
  ip netns del "$outside" 2>/dev/null
  ip netns del ${tag}p 2>/dev/null
  ip link del ${tag}h 2>/dev/null
  for b in $(ip -o link show type bridge | awk -F': ' '{print $2}'); do
    grep -qx "$b" <<<"$bridges_before" || ip link del "$b" 2>/dev/null
  done
  awk -v d="$dir" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r |
    while read -r m; do umount -l "$m"; done
  rm -rf "$dir"
  for t in $(nft list tables 2>/dev/null | sed -n 's/^table //p'); do
    grep -qx "$t" <<<"$nft_before" || nft delete table $t 2>/dev/null
  done
  [ -n "$iptables_before" ] && iptables-restore <<<"$iptables_before"
  echo "$forward_before" > /proc/sys/net/ipv4/ip_forward
  [ "$brnf_before" = 0 ] && [ -d /proc/sys/net/bridge ] && modprobe -r br_netfilter 2>/dev/null
  rm -f "$plugin_sock"  # left by a vswitchd that did not exit cleanly
  for p in "${leftovers[@]}"; do rm -f "$p" 2>/dev/null || rmdir "$p" 2>/dev/null; done
}
trap cleanup EXIT
trap "exit 130" INT TERM HUP

# --- the engine and vswitchd -----------------------------------------------
"$bin/vswitchd" --state-dir "$dir/vs" --socket "$vsock" --port-netns ${tag}p --log-level warn \
  --docker-plugin=on --docker-plugin-socket "$plugin_sock" --docker-api-socket "$dsock" \
  ${VSWITCHD_ARGS:-} &
vswitchd_pid=$!
cat >"$dir/containerd.toml" <<EOF
version = 2
root = "$dir/ctd-root"
state = "$dir/ctd-state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$dir/ctd.sock"
EOF
containerd --config "$dir/containerd.toml" >/dev/null 2>"$dir/containerd.log" &
ctd_pid=$!
for _ in $(seq 200); do [ -S "$dir/ctd.sock" ] && break; sleep 0.1; done
echo '{}' >"$dir/daemon.json"
dockerd --config-file "$dir/daemon.json" --containerd "$dir/ctd.sock" --data-root "$dir/data" \
  --exec-root "$dir/exec" --pidfile "$dir/docker.pid" -H "unix://$dsock" \
  --bridge=none --storage-driver vfs >/dev/null 2>"$dir/dockerd.log" &
dockerd_pid=$!
for _ in $(seq 600); do docker version >/dev/null 2>&1 && break; sleep 0.1; done
for _ in $(seq 100); do [ -S "$vsock" ] && break; sleep 0.1; done

mkdir -p "$dir/rootfs/bin"
cp "$(command -v busybox)" "$dir/rootfs/bin/busybox"
for t in sh sleep; do ln -s busybox "$dir/rootfs/bin/$t"; done
tar -C "$dir/rootfs" -cf "$dir/rootfs.tar" .
docker import "$dir/rootfs.tar" ${tag}-busybox >/dev/null

# --- the outside namespace, behind a veth whose host end has a host address
ip netns add "$outside"
ip link add ${tag}h type veth peer name ${tag}i
ip link set ${tag}i netns "$outside"
ip addr add $host_ip/30 dev ${tag}h
ip link set ${tag}h up
ip -n "$outside" addr add $outside_ip/30 dev ${tag}i
ip -n "$outside" link set ${tag}i up
ip -n "$outside" link set lo up

# --- one network and two containers per driver ------------------------------
# bridge: 10.241.1.0/24, host port 15201; vswitch: 10.241.2.0/24, 15202.
setup() { # driver index
  local d=$1 i=$2 extra=()
  [ "$d" = bridge ] || extra=(--ipam-driver "$d")
  docker network create -d "$d" "${extra[@]}" --subnet 10.241.$i.0/24 ${tag}n$i >/dev/null
  docker run -d --name ${tag}a$i --network ${tag}n$i -p 1520$i:5201 ${tag}-busybox sleep 1d >/dev/null
  docker run -d --name ${tag}b$i --network ${tag}n$i ${tag}-busybox sleep 1d >/dev/null
}
setup bridge 1
setup "$plugin" 2

pid_of() { docker inspect -f '{{.State.Pid}}' "$1"; }
ip_of() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$1"; }
declare -A srv cli addr
for i in 1 2; do
  srv[$i]=$(pid_of ${tag}a$i); cli[$i]=$(pid_of ${tag}b$i); addr[$i]=$(ip_of ${tag}a$i)
done
# The published port answers before anything is measured.
for i in 1 2; do
  for _ in $(seq 100); do
    docker port ${tag}a$i >/dev/null 2>&1 || vsctl port ${tag}a$i >/dev/null 2>&1 && break
    sleep 0.1
  done
done

iperf() { # test index cc → bits per second received
  local t=$1 i=$2 cc=$3
  nsenter --net=/proc/${srv[$i]}/ns/net iperf3 -s -D -1 -p 5201 -I "$dir/iperf3.pid" >/dev/null
  sleep 0.3
  # A stalled client counts as 0 (and is reported) rather than hanging.
  local client=(timeout $((secs + 15)) iperf3 -p 5201 -t "$secs" -C "$cc" -J --connect-timeout 3000)
  {
  case $t in
    c2c) nsenter --net=/proc/${cli[$i]}/ns/net "${client[@]}" -c ${addr[$i]} ;;
    pub-host) "${client[@]}" -c 127.0.0.1 -p 1520$i ;;
    pub-out) ip netns exec "$outside" "${client[@]}" -c $host_ip -p 1520$i ;;
  esac 2>/dev/null | jq '.end.sum_received.bits_per_second // 0' 2>/dev/null || echo 0
  }
  # A server no client reached would hold the port: stopped by its pid.
  local left
  left=$(cat "$dir/iperf3.pid" 2>/dev/null || true)
  [ -n "$left" ] && kill "$left" 2>/dev/null
  rm -f "$dir/iperf3.pid"
}

tests="c2c pub-host pub-out"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "docker $(dockerd --version | cut -d' ' -f3 | tr -d ,); tests: $tests; ${runs} run(s) of ${secs}s per figure; host CC $host_cc; load before: $load_before"
results=()
for cc in $ccs; do
  for run in $(seq "$runs"); do
    order="1 2"; [ $((run % 2)) = 0 ] && order="2 1"
    for t in $tests; do
      for i in $order; do
        results+=("$cc $t $i $run $(iperf $t $i "$cc")")
      done
    done
    echo "  $cc run $run done (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

printf '%s\n' "${results[@]}" | awk -v tests="$tests" -v ccs="$ccs" '
  function median(arr, n,   i, j, t) {
    for (i = 2; i <= n; i++) for (j = i; j > 1 && arr[j-1] > arr[j]; j--) {
      t = arr[j]; arr[j] = arr[j-1]; arr[j-1] = t }
    return n % 2 ? arr[(n+1)/2] : (arr[n/2] + arr[n/2+1]) / 2 }
  { v[$1, $2, $3, $4] = $5; if ($4 > m) m = $4 }
  END {
    nt = split(tests, T, " "); nc = split(ccs, C, " ")
    printf "%-6s %-9s %14s %15s %7s %11s\n", "cc", "test", "bridge Gbit/s", "vswitch Gbit/s", "ratio", "spread"
    for (c = 1; c <= nc; c++) for (k = 1; k <= nt; k++) {
      cc = C[c]; t = T[k]
      for (r = 1; r <= m; r++) { x[r] = v[cc, t, 1, r]; y[r] = v[cc, t, 2, r] }
      mb = median(x, m); mv = median(y, m)
      lo = 1e18; hi = 0
      for (r = 1; r <= m; r++) if (v[cc, t, 1, r] > 0) {
        q = v[cc, t, 2, r] / v[cc, t, 1, r]; if (q < lo) lo = q; if (q > hi) hi = q }
      if (hi == 0) lo = 0
      f = 0; for (r = 1; r <= m; r++) f += (v[cc, t, 1, r] == 0) + (v[cc, t, 2, r] == 0)
      printf "%-6s %-9s %14.2f %15.2f %7.2f %5.2f-%-5.2f%s\n", cc, t, mb / 1e9, mv / 1e9, (mb > 0 ? mv / mb : 0), lo, hi, (f ? sprintf("  (%d failed run(s))", f) : "")
    }
  }'
echo "load average before: $load_before; after: $load_after ($(nproc) cores)"
