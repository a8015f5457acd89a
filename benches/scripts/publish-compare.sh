#!/usr/bin/env bash
# Published ports: vswitchd's host connector against Docker's own paths, in
# one run, at MTU 1500:
#
#   outside   iperf3 TCP (1 and 4 streams) from an "outside" namespace behind
#             a veth to the host's address:5201, the server in the container.
#             Docker's path, built here: a Linux bridge and Docker's DNAT,
#             FORWARD and MASQUERADE rules (docker-reference §5) with
#             ip_forward, in a "host" namespace of this script's own.
#   loopback  iperf3 from the host to 127.0.0.1:5201. Docker's path:
#             docker-proxy (Debian's docker.io) on 127.0.0.1:5201 toward the
#             same container behind the same kernel bridge.
#   cps       TCP connections per second from the outside to host:18080
#             (the container's 8080): benches' `connrate` client (connect,
#             wait for the server's close, close; CPS_THREADS threads for
#             CPS_SECS seconds) against its server, which accepts and closes.
#             Docker's path: the kernel DNAT above.
#
# vswitchd runs with a namespace of this script's own as its host (no rule,
# no forwarding), the container publishing -p 5201:5201 -p 18080:8080. Each
# host namespace reaches its outside namespace over a veth; nothing touches
# the machine's own namespace, its iptables or its sysctls.
#
#   sudo benches/scripts/publish-compare.sh [seconds] [runs]
#
# For each congestion control in CCS (default "cubic bbr"; it is set on
# the iperf3 sockets; docker-proxy's and the connector's own sockets keep
# the host's default, which a namespace may not change to an algorithm
# outside net.ipv4.tcp_allowed_congestion_control) and each run, the two paths of each test are measured back to back, in turns that
# alternate which goes first, so a change of machine load falls on both.
# The summary gives per test the medians over the runs, the ratio of the
# medians (vswitch / Docker's path), the spread (lowest-highest of the
# per-run ratios) and the floor the issue sets, with the load average
# before, per run and after: the machine is shared.
#
# Needs root, iproute2, iptables, iperf3, jq, docker-proxy, and a release
# build of vswitchd, vsctl and connrate
# (cargo build --release -p vswitch -p vswitch-benches).
set -euo pipefail

secs=${1:-5}
runs=${2:-5}
ccs=${CCS:-cubic bbr}
cps_threads=${CPS_THREADS:-4}
cps_secs=${CPS_SECS:-3}
here=$(cd "$(dirname "$0")/../.." && pwd)
bin=${VSWITCH_BIN:-$here/target/release}
proxy=${DOCKER_PROXY:-$(command -v docker-proxy || ls /usr/sbin/docker-proxy /usr/bin/docker-proxy 2>/dev/null | head -1 || true)}
tag=vsp$$
state=$(mktemp -d /tmp/$tag.XXXX)
sock=$state/vswitchd.sock
daemon_pid=
proxy_pids=()
cps_pids=()

for tool in ip iperf3 jq iptables nsenter ss; do
  command -v $tool >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }
[ -n "$proxy" ] && [ -x "$proxy" ] || { echo "missing: docker-proxy (Debian's docker.io)" >&2; exit 1; }
for b in vswitchd vsctl connrate; do
  [ -x "$bin/$b" ] || {
    echo "build first: cargo build --release -p vswitch -p vswitch-benches" >&2; exit 1; }
done

cleanup() {
  set +e
  for p in "${proxy_pids[@]}" "${cps_pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  if [ -n "$daemon_pid" ]; then
    # An iperf3 server a failed measurement left in the container goes
    # before the container's namespace does.
    ip netns pids ${tag}vc 2>/dev/null | xargs -r kill 2>/dev/null
    "$bin/vsctl" --socket "$sock" sandbox rm ${tag}vc >/dev/null 2>&1
    kill "$daemon_pid" 2>/dev/null; wait "$daemon_pid" 2>/dev/null
  fi
  for ns in kh kc ko vh vo vc p; do
    # iperf3 servers left by a failed measurement die with their namespace's last process.
    ip netns pids ${tag}$ns 2>/dev/null | xargs -r kill 2>/dev/null
    ip netns del ${tag}$ns 2>/dev/null
  done
  rm -rf "$state"
}
trap cleanup EXIT

# A host namespace H with a veth to an outside namespace O: H has
# 10.241.N.1, O has 10.241.N.2 (the client).
host_and_outside() { # H O N
  ip netns add $1; ip netns add $2
  ip link add ${tag}a$3 type veth peer name ${tag}b$3
  ip link set ${tag}a$3 netns $1; ip link set ${tag}b$3 netns $2
  ip -n $1 addr add 10.241.$3.1/24 dev ${tag}a$3
  ip -n $2 addr add 10.241.$3.2/24 dev ${tag}b$3
  for ns in $1 $2; do ip -n $ns link set lo up; done
  ip -n $1 link set ${tag}a$3 up; ip -n $2 link set ${tag}b$3 up
}

# --- Docker's path: bridge, DNAT and docker-proxy, as dockerd sets them up -
kh=${tag}kh
host_and_outside $kh ${tag}ko 1
ip netns add ${tag}kc
ip -n $kh link add kbr0 type bridge
ip -n $kh addr add 172.29.0.1/24 dev kbr0
ip -n $kh link set kbr0 up
ip link add ${tag}kv type veth peer name eth0 netns ${tag}kc
ip link set ${tag}kv netns $kh
ip -n $kh link set ${tag}kv master kbr0 up
ip -n ${tag}kc addr add 172.29.0.2/24 dev eth0
ip -n ${tag}kc link set eth0 up; ip -n ${tag}kc link set lo up
ip -n ${tag}kc route add default via 172.29.0.1
ip netns exec $kh sysctl -qw net.ipv4.ip_forward=1
ip netns exec $kh iptables-restore <<'EOF'
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.29.0.0/24 ! -o kbr0 -j MASQUERADE
-A POSTROUTING -s 172.29.0.2/32 -d 172.29.0.2/32 -p tcp -m tcp --dport 5201 -j MASQUERADE
-A POSTROUTING -s 172.29.0.2/32 -d 172.29.0.2/32 -p tcp -m tcp --dport 8080 -j MASQUERADE
-A DOCKER -i kbr0 -j RETURN
-A DOCKER ! -i kbr0 -p tcp -m tcp --dport 5201 -j DNAT --to-destination 172.29.0.2:5201
-A DOCKER ! -i kbr0 -p tcp -m tcp --dport 18080 -j DNAT --to-destination 172.29.0.2:8080
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
-A FORWARD -o kbr0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o kbr0 -j DOCKER
-A FORWARD -i kbr0 ! -o kbr0 -j ACCEPT
-A FORWARD -i kbr0 -o kbr0 -j ACCEPT
-A DOCKER -d 172.29.0.2/32 ! -i kbr0 -o kbr0 -p tcp -m tcp --dport 5201 -j ACCEPT
-A DOCKER -d 172.29.0.2/32 ! -i kbr0 -o kbr0 -p tcp -m tcp --dport 8080 -j ACCEPT
COMMIT
EOF
# dockerd hands the proxy a pipe as descriptor 3, where it reports "0" once
# it listens and which it then closes: without one, that close would be its
# listening socket's.
ip netns exec $kh "$proxy" -proto tcp -host-ip 127.0.0.1 -host-port 5201 \
  -container-ip 172.29.0.2 -container-port 5201 >/dev/null 2>&1 3>"$state/proxy-ready" &
proxy_pids+=($!)

# --- vswitch: the daemon's host is a namespace of its own ------------------
vh=${tag}vh
host_and_outside $vh ${tag}vo 2
nsenter --net=/run/netns/$vh "$bin/vswitchd" --state-dir "$state" --socket "$sock" \
  --port-netns ${tag}p --log-level warn ${VSWITCHD_ARGS:-} &
daemon_pid=$!
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
vsctl() { "$bin/vsctl" --socket "$sock" "$@"; }
vsctl network create --subnet 172.28.0.0/24 ${tag}net >/dev/null
vsctl sandbox create -p 5201:5201 -p 18080:8080 ${tag}vc >/dev/null
vsctl network connect ${tag}net ${tag}vc >/dev/null

# --- the connection servers, one per container ----------------------------
for c in kc vc; do
  ip netns exec ${tag}$c "$bin/connrate" server 0.0.0.0:8080 >"$state/cps-$c.out" &
  cps_pids+=($!)
done
for _ in $(seq 50); do
  [ -s "$state/cps-kc.out" ] && [ -s "$state/cps-vc.out" ] &&
    grep -q '^0' "$state/proxy-ready" && break
  sleep 0.1
done

# Which namespace runs the client, where it connects, where the server is.
client_ns() { # test path
  case $1-$2 in
    out*-kernel|cps-kernel) echo ${tag}ko;; out*-vswitch|cps-vswitch) echo ${tag}vo;;
    lo*-kernel) echo $kh;; lo*-vswitch) echo $vh;;
  esac
}
target() { # test path
  case $1-$2 in
    out*-kernel) echo 10.241.1.1;; out*-vswitch) echo 10.241.2.1;;
    lo*) echo 127.0.0.1;;
    cps-kernel) echo 10.241.1.1:18080;; cps-vswitch) echo 10.241.2.1:18080;;
  esac
}
container_ns() { case $1 in kernel) echo ${tag}kc;; vswitch) echo ${tag}vc;; esac; }

measure() { # test path cc → Gbit/s, or connections/s and failures
  local c t s
  c=$(client_ns $1 $2); t=$(target $1 $2); s=$(container_ns $2)
  case $1 in
    cps) ip netns exec $c "$bin/connrate" client $t $cps_threads $cps_secs ;;
    *)
      ip netns exec $s iperf3 -s -D -1 -p 5201 >/dev/null; sleep 0.3
      ip netns exec $c iperf3 -c $t -p 5201 -t $secs -P ${1: -1} -C $3 -J 2>/dev/null |
        jq '(.end.sum_received.bits_per_second // 0) / 1e9'
      ;;
  esac
}

# Both paths must answer before anything is measured.
for p in kernel vswitch; do
  r=$(ip netns exec $(client_ns cps $p) "$bin/connrate" client $(target cps $p) 1 0.3)
  [ "${r%% *}" != 0 ] || { echo "no connection through the $p path" >&2; exit 1; }
done

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "$runs run(s); iperf3 ${secs}s per figure, connrate ${cps_threads} threads ${cps_secs}s; MTU 1500"
echo "docker-proxy: $proxy; host CC: $(sysctl -n net.ipv4.tcp_congestion_control); load before: $load_before"
results=()
for cc in $ccs; do
  for run in $(seq "$runs"); do
    if [ $((run % 2)) = 1 ]; then order="kernel vswitch"; else order="vswitch kernel"; fi
    for test in out1 out4 lo1 lo4 cps; do
      for p in $order; do
        v=$(measure $test $p $cc)
        results+=("$cc $test $p $run $v")
      done
    done
    echo "  $cc run $run done (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

printf '%s\n' "${results[@]}" | awk '
  function median(arr, n,   i, j, t) {
    for (i = 2; i <= n; i++) for (j = i; j > 1 && arr[j-1] > arr[j]; j--) {
      t = arr[j]; arr[j] = arr[j-1]; arr[j-1] = t }
    return n % 2 ? arr[(n+1)/2] : (arr[n/2] + arr[n/2+1]) / 2 }
  { v[$1, $2, $3, $4] = $5; f[$1, $2, $3] += $6; if ($4 > runs[$1]) runs[$1] = $4
    if (!($1 in seen)) { seen[$1] = 1; order[++ncc] = $1 } }
  END {
    split("out1 out4 lo1 lo4 cps", T, " ")
    name["out1"] = "outside, 1 stream (Gbit/s)"; name["out4"] = "outside, 4 streams (Gbit/s)"
    name["lo1"] = "127.0.0.1, 1 stream (Gbit/s)"; name["lo4"] = "127.0.0.1, 4 streams (Gbit/s)"
    name["cps"] = "connections/s, outside"
    floor["out1"] = 0.5; floor["out4"] = 0.5; floor["lo1"] = 2; floor["lo4"] = 2; floor["cps"] = 0
    printf "%-6s %-30s %12s %12s %7s %11s %6s\n", "cc", "test", "docker", "vswitch", "ratio", "spread", "floor"
    for (i = 1; i <= ncc; i++) for (k = 1; k <= 5; k++) {
      cc = order[i]; t = T[k]; m = runs[cc]
      for (r = 1; r <= m; r++) { x[r] = v[cc, t, "vswitch", r]; y[r] = v[cc, t, "kernel", r] }
      mx = median(x, m); my = median(y, m)
      lo = 1e18; hi = 0
      for (r = 1; r <= m; r++) if (v[cc, t, "kernel", r] > 0) {
        q = v[cc, t, "vswitch", r] / v[cc, t, "kernel", r]; if (q < lo) lo = q; if (q > hi) hi = q }
      if (lo > hi) lo = hi = 0
      ratio = (my > 0 ? mx / my : 0)
      fl = floor[t] ? sprintf("%.1f%s", floor[t], ratio >= floor[t] ? "" : "!") : "-"
      if (t == "cps") {
        printf "%-6s %-30s %12.0f %12.0f %7.2f %5.2f-%-5.2f %6s", cc, name[t], my, mx, ratio, lo, hi, fl
        # Failed connections (summed over the runs) only when there were any.
        if (f[cc, t, "kernel"] + f[cc, t, "vswitch"] > 0)
          printf "  failed connections: docker %d, vswitch %d", f[cc, t, "kernel"], f[cc, t, "vswitch"]
        printf "\n"
      } else
        printf "%-6s %-30s %12.2f %12.2f %7.2f %5.2f-%-5.2f %6s\n", cc, name[t], my, mx, ratio, lo, hi, fl
    }
    print "docker: kernel DNAT for outside and cps, docker-proxy for 127.0.0.1; floor ending in ! is not met"
  }'
echo "load average before: $load_before; after: $load_after ($(nproc) cores)"
