#!/usr/bin/env bash
# Finds where the data of one TCP stream between two veth sandboxes of
# vswitchd arrives out of order, by capturing it at four points at once:
#
#   sender eth0 (transmit) -> sender's host end (what the daemon reads)
#     -> receiver's host end (what the daemon writes) -> receiver eth0
#
#   sudo benches/scripts/veth-order.sh [seconds] [runs]
#
# The sender's transmit order is the reference: for each later point, a
# data frame is counted late when a frame the sender transmitted after it
# was seen before it there (retransmissions are matched as themselves). A
# late frame first seen at the sender's host end was reordered by the
# kernel before the daemon read it; one first seen at the receiver's host
# end, by the daemon; one first seen at the receiver, after the daemon's
# write. The two host-end captures are taps beside the daemon's sockets,
# not its sockets: when two CPUs deliver frames of the flow at once, a tap
# and the daemon's socket can see them in different orders, so a frame or
# two late at the write but not at the read is within the method's error.
# Each run also prints the rate and the sender's RetransSegs,
# TCPSACKReorder and TCPDSACKRecvSegs.
#
# VSWITCHD_ARGS adds flags to vswitchd (e.g. --datapath-threads 1). RPS=1
# steers each host end's receive to one CPU per flow (rps_cpus of all
# CPUs), which keeps a flow in one backlog.
#
# Needs root, iproute2, iperf3, jq, nstat, dumpcap and tshark. Traffic stays
# inside namespaces this script creates and removes; the captures (headers
# only) are deleted after each run.
set -euo pipefail

secs=${1:-4}
runs=${2:-3}
here=$(cd "$(dirname "$0")/../.." && pwd)
bin=${VSWITCH_BIN:-$here/target/release}
tag=vso$$
state=$(mktemp -d /tmp/$tag.XXXX)
sock=$state/vswitchd.sock
daemon_pid=
captures=()

for tool in ip iperf3 jq nstat dumpcap tshark; do
  command -v $tool >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }
[ -x "$bin/vswitchd" ] && [ -x "$bin/vsctl" ] || {
  echo "build first: cargo build --release -p vswitch" >&2; exit 1; }

cleanup() {
  set +e
  for p in "${captures[@]}"; do kill "$p" 2>/dev/null; done
  for ns in v1 v2; do ip netns pids "${tag}$ns" 2>/dev/null | xargs -r kill 2>/dev/null; done
  if [ -n "$daemon_pid" ]; then
    "$bin/vsctl" --socket "$sock" sandbox rm ${tag}v1 >/dev/null 2>&1
    "$bin/vsctl" --socket "$sock" sandbox rm ${tag}v2 >/dev/null 2>&1
    kill "$daemon_pid" 2>/dev/null; wait "$daemon_pid" 2>/dev/null
  fi
  ip netns del "${tag}p" 2>/dev/null
  rm -rf "$state"
}
trap cleanup EXIT

# shellcheck disable=SC2086 # VSWITCHD_ARGS is a list of flags
"$bin/vswitchd" --state-dir "$state" --socket "$sock" --port-netns "${tag}p" --log-level warn ${VSWITCHD_ARGS:-} &
daemon_pid=$!
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
vsctl() { "$bin/vsctl" --socket "$sock" "$@"; }
vsctl network create --subnet 10.251.0.0/24 ${tag}net >/dev/null
for i in 1 2; do
  vsctl sandbox create ${tag}v$i >/dev/null
  vsctl network connect --port-kind veth ${tag}net ${tag}v$i >/dev/null
done

# A sandbox's host end: the interface of the ports namespace whose index
# its eth0 names as its peer (eth0@ifN).
host_end() { # sandbox
  local peer
  peer=$(ip -n "$1" -o link show eth0 | sed -n 's/^[0-9]*: eth0@if\([0-9]*\):.*/\1/p')
  ip -n "${tag}p" -o link | awk -F': ' -v i="$peer" '$1 == i { sub(/@.*/, "", $2); print $2 }'
}
h1=$(host_end ${tag}v1)
h2=$(host_end ${tag}v2)
if [ "${RPS:-0}" = 1 ]; then
  all=$(printf '%x' $(( (1 << $(nproc)) - 1 )))
  for h in "$h1" "$h2"; do
    ip netns exec "${tag}p" sh -c "echo $all > /sys/class/net/$h/queues/rx-0/rps_cpus"
  done
fi

# "seq len" of each data segment toward the server, in capture order.
segments() { # pcap
  tshark -r "$1" -o tcp.relative_sequence_numbers:FALSE -Y 'tcp.dstport == 5201 && tcp.len > 0' \
    -T fields -e tcp.seq -e tcp.len 2>/dev/null
}

# Frames of $2 seen after a frame the sender transmitted later.
late() { # reference observed
  awk 'NR == FNR { k = $1 " " $2; n[k]++; at[k " " n[k]] = FNR; next }
       { k = $1 " " $2; m[k]++; i = at[k " " m[k]]; if (i == "") next
         if (i < max) late++; if (i > max) max = i }
       END { print late + 0 }' "$1" "$2"
}

counters() { # ns
  ip netns exec "$1" nstat -az TcpRetransSegs TcpExtTCPSACKReorder TcpExtTCPDSACKRecvSegs |
    awk 'NR > 1 { printf "%s ", $2 } END { print "" }'
}

echo "veth ports; $runs run(s) of ${secs}s; host ends $h1 (sender) and $h2 (receiver); RPS ${RPS:-0}; load average $(cut -d' ' -f1-3 /proc/loadavg)"
for run in $(seq "$runs"); do
  ip netns exec ${tag}v2 iperf3 -s -D -1 -p 5201 >/dev/null
  captures=()
  cap() { # name ns interface
    ip netns exec "$2" dumpcap -q -i "$3" -s 96 -f 'tcp port 5201' -w "$state/$1.pcap" 2>/dev/null &
    captures+=($!)
  }
  cap sender ${tag}v1 eth0
  cap read "${tag}p" "$h1"
  cap write "${tag}p" "$h2"
  cap receiver ${tag}v2 eth0
  sleep 1
  read -r r0 o0 d0 < <(counters ${tag}v1)
  rate=$(ip netns exec ${tag}v1 iperf3 -c 10.251.0.3 -p 5201 -t "$secs" -J | jq '.end.sum_received.bits_per_second / 1e9')
  read -r r1 o1 d1 < <(counters ${tag}v1)
  sleep 0.5
  for p in "${captures[@]}"; do kill -INT "$p"; wait "$p" 2>/dev/null || true; done
  captures=()
  for f in sender read write receiver; do segments "$state/$f.pcap" > "$state/$f.seg"; done
  printf 'run %d: %.2f Gbit/s; retransmitted %d, SACK reorder %d, D-SACK %d; %d data frames sent; late at the daemon'"'"'s read %d, its write %d (%d against the read), the receiver %d; load average %s\n' \
    "$run" "$rate" $((r1 - r0)) $((o1 - o0)) $((d1 - d0)) "$(wc -l < "$state/sender.seg")" \
    "$(late "$state/sender.seg" "$state/read.seg")" "$(late "$state/sender.seg" "$state/write.seg")" \
    "$(late "$state/read.seg" "$state/write.seg")" \
    "$(late "$state/sender.seg" "$state/receiver.seg")" "$(cut -d' ' -f1-3 /proc/loadavg)"
  rm -f "$state"/*.pcap "$state"/*.seg
done
