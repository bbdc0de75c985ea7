#!/bin/bash
# A multi-host test bed on one machine: N network namespaces ("hosts"), each with its own
# address in 198.18.0.0/15 (RFC 2544, reserved for benchmarking), joined by veth pairs to a bridge
# that lives in a namespace of its own; a head namespace runs mpirun, as a cluster's login node
# would. Nothing is added to the root namespace. Open MPI starts one rank per host through
# tests/hosts/rsh_agent.sh (`ip netns exec` + a private UTS namespace, so that every host reports
# its own host name), over TCP only.
#
#   testbed.sh up N [--watch PID]  build N hosts (1..4; leftovers of a killed run are removed
#                                  first). With --watch, a detached watchdog tears the test bed
#                                  down when process PID is gone (even after a SIGKILL).
#   testbed.sh down                remove everything (namespaces, their processes, qdiscs)
#   testbed.sh status              what is up, with each host's address, name and qdisc
#   testbed.sh hosts [K]           the first K host addresses, comma-separated (for --host)
#   testbed.sh mpirun [K] ARGS...  mpirun from the head namespace, one rank on each of the first K
#                                  hosts (default all), TCP between ranks, then ARGS
#   testbed.sh exec HOST CMD...    run CMD in host HOST's namespace (HOST: 1..N)
#   testbed.sh shape GBPS [DELAY_S] [HOST]
#                                  every host's (or one host's) outgoing link at GBPS GB/s
#                                  (1e9 B/s, as links.mpi_gbps; tbf) and one-way DELAY_S seconds
#                                  (netem, where the kernel has it)
#   testbed.sh shape-from FILE [--scale S]
#                                  the same, with the rate and delay the experiment file states
#                                  (links.mpi_gbps, links.mpi_latency_s, read with `quilt plan`)
#   testbed.sh loss PCT HOST       the switch drops PCT % of HOST's frames, both ways (nftables)
#   testbed.sh link down|up HOST   take HOST's link to the bridge down or up
#   testbed.sh unshape             remove every qdisc the test bed added
#
# Needs root, iproute2 (ip, tc), nftables (nft) and util-linux (unshare). One test bed at a time: `up` and
# `down` hold /run/lock/quilt-testbed.lock; tests hold it for their whole run (flock) as well.
set -euo pipefail

readonly kPrefix=qtb
readonly kSubnet=198.18.0.0/24
readonly kState=/run/quilt-testbed
readonly kLock=/run/lock/quilt-testbed.lock
here=$(dirname "$(realpath "$0")")

die() {
  echo "testbed: $*" >&2
  exit 2
}

host_ip() { echo "198.18.0.$((10 + $1))"; }
host_ns() { echo "$kPrefix-h$1"; }
host_count() { cat "$kState/count" 2>/dev/null || echo 0; }

require_up() {
  [[ -s $kState/count ]] && ip netns list | grep -q "^$kPrefix-sw\b" ||
    die "no test bed is up (run: testbed.sh up N)"
}

check_host() {
  [[ $1 =~ ^[0-9]+$ ]] && (($1 >= 1 && $1 <= $(host_count))) ||
    die "host must be 1..$(host_count), got '$1'"
}

# Everything a test bed ever made, whether or not the state directory survived: the namespaces
# with our prefix (their processes first, so nothing keeps running in a removed namespace) and the
# watchdog. veth pairs and the bridge live inside the namespaces and go with them.
teardown() {
  if [[ -s $kState/watchdog.pid ]]; then
    local w
    w=$(cat "$kState/watchdog.pid")
    [[ $w =~ ^[0-9]+$ && $w != "$$" && $w != "${BASHPID:-$$}" ]] && kill "$w" 2>/dev/null || true
  fi
  local ns pids
  for ns in $(ip netns list 2>/dev/null | awk -v p="$kPrefix-" 'index($1, p) == 1 {print $1}'); do
    for _ in 1 2 3; do
      pids=$(ip netns pids "$ns" 2>/dev/null || true)
      [[ -z $pids ]] && break
      # shellcheck disable=SC2086
      kill -9 $pids 2>/dev/null || true
      sleep 0.2
    done
    ip netns delete "$ns" 2>/dev/null || true
  done
  rm -rf "$kState"
}

in_ns() {
  local ns=$1
  shift
  ip netns exec "$ns" "$@"
}

bring_up() {
  local n=$1
  ((n >= 1 && n <= 4)) || die "up: N must be 1..4, got $n"
  teardown # leftovers of a killed run
  mkdir -p "$kState"
  # A failure half-way leaves nothing behind.
  trap 'teardown' ERR
  ip netns add "$kPrefix-sw"
  in_ns "$kPrefix-sw" ip link set lo up
  in_ns "$kPrefix-sw" ip link add br0 type bridge
  in_ns "$kPrefix-sw" ip link set br0 up
  # The head (mpirun) is host 0 at .10; hosts 1..N at .11...
  local i ns
  for ((i = 0; i <= n; i++)); do
    if ((i == 0)); then ns=$kPrefix-head; else ns=$(host_ns "$i"); fi
    ip netns add "$ns"
    in_ns "$ns" ip link set lo up
    ip link add "${kPrefix}p$i" netns "$kPrefix-sw" type veth peer name eth0 netns "$ns"
    in_ns "$kPrefix-sw" ip link set "${kPrefix}p$i" master br0 up
    in_ns "$ns" ip addr add "$(host_ip "$i")/24" dev eth0
    in_ns "$ns" ip link set eth0 up
    echo "$(host_ip "$i") $ns" >>"$kState/hosts"
  done
  echo "$n" >"$kState/count"
  # Every host must answer the head: a TCP connection to a closed port is refused at once when the
  # host is reachable, and times out when it is not.
  for ((i = 1; i <= n; i++)); do
    local rc=0
    in_ns "$kPrefix-head" timeout 3 bash -c "exec 3<>/dev/tcp/$(host_ip "$i")/9" 2>/dev/null || rc=$?
    if ((rc == 124)); then
      teardown
      die "host $i ($(host_ip "$i")) does not answer"
    fi
  done
  trap - ERR
}

start_watchdog() {
  local pid=$1
  [[ $pid =~ ^[0-9]+$ ]] || die "--watch needs a process id"
  # Double-forked and detached, so that a SIGKILL of the caller's process tree (a CTest timeout)
  # does not take it along; it runs teardown once PID is gone.
  (
    setsid bash -c '
      while kill -0 "$1" 2>/dev/null; do sleep 1; done
      exec "$2" down --if-owner "$1"' watchdog "$pid" "$here/testbed.sh" \
      </dev/null >/dev/null 2>&1 9>&- &
    echo $! >"$kState/watchdog.pid"
  )
  echo "$pid" >"$kState/owner"
}

# The kernel may lack netem (this machine's has tbf, htb and nftables only): rate is shaped with
# tbf, delay needs netem and is refused without it, loss is dropped by nftables in the switch.
has_netem() {
  in_ns "$kPrefix-sw" tc qdisc add dev lo root netem delay 0 2>/dev/null || return 1
  in_ns "$kPrefix-sw" tc qdisc del dev lo root 2>/dev/null || true
}

# shape HOST GBPS DELAY_S: HOST's outgoing traffic at GBPS GB/s (1e9 B/s), one-way delay DELAY_S.
shape_host() {
  local host=$1 gbps=$2 delay=$3 args
  args=$(/usr/bin/python3 - "$gbps" "$delay" <<'EOF2'
import sys
try:
    gbps, delay = float(sys.argv[1]), float(sys.argv[2])
except ValueError:
    sys.exit("testbed: shape: GBPS and DELAY_S must be numbers")
if not gbps > 0 or not delay >= 0:
    sys.exit("testbed: shape: GBPS must be > 0 and DELAY_S >= 0")
rate = gbps * 1e9  # bytes/s
# A bucket of 2 ms of traffic (at least 64 KiB, one GSO packet) and a queue of 2 s: a fast sender
# is paced, not dropped. With a delay, netem does both.
burst = max(65536, int(rate * 0.002))
if delay > 0:
    print(f"netem rate {int(rate * 8)}bit delay {delay * 1e6:.0f}us limit 100000")
else:
    print(f"tbf rate {int(rate * 8)}bit burst {burst} latency 2s")
EOF2
  ) || exit 2
  if [[ $args == netem* ]] && ! has_netem; then
    die "shape: a delay needs netem (sch_netem), which this kernel lacks; use DELAY_S 0"
  fi
  # shellcheck disable=SC2086
  in_ns "$(host_ns "$host")" tc qdisc replace dev eth0 root $args
}

# loss HOST PCT: the switch drops PCT % of the frames to and from HOST, independently at random.
set_loss() {
  local host=$1 pct=$2
  [[ $pct =~ ^[0-9]+$ ]] && ((pct <= 100)) || die "loss: PCT must be an integer 0..100, got '$pct'"
  in_ns "$kPrefix-sw" nft delete table bridge "qtb_loss$host" 2>/dev/null || true
  ((pct == 0)) && return 0
  in_ns "$kPrefix-sw" nft -f - <<EOF2
table bridge qtb_loss$host {
  chain forward {
    type filter hook forward priority 0; policy accept;
    iifname "${kPrefix}p$host" numgen random mod 100 < $pct drop
    oifname "${kPrefix}p$host" numgen random mod 100 < $pct drop
  }
}
EOF2
}

cmd=${1:-}
shift || true
[[ $cmd == "" || $cmd == -h || $cmd == --help ]] && { sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; exit 0; }
[[ $(id -u) == 0 ]] || die "needs root (ip netns, veth, tc)"
command -v ip >/dev/null && command -v tc >/dev/null || die "needs iproute2 (ip, tc)"

case $cmd in
  up)
    n=${1:-}
    [[ $n =~ ^[0-9]+$ ]] || die "usage: testbed.sh up N [--watch PID]"
    exec 9>"$kLock"
    flock -w 120 9 || die "another test bed operation holds $kLock"
    bring_up "$n"
    if [[ ${2:-} == --watch ]]; then start_watchdog "${3:-}"; fi
    echo "test bed up: $n host(s): $("$0" hosts)"
    ;;
  down)
    exec 9>"$kLock"
    flock -w 120 9 || die "another test bed operation holds $kLock"
    # The watchdog of a test bed tears down only its own, never a later one built after its
    # owner was killed.
    if [[ ${1:-} == --if-owner ]]; then
      [[ $(cat "$kState/owner" 2>/dev/null) == "${2:-}" ]] || exit 0
      rm -f "$kState/watchdog.pid"
    fi
    teardown
    ;;
  status)
    if ! ip netns list | grep -q "^$kPrefix-"; then echo "no test bed"; exit 0; fi
    ip netns list | grep "^$kPrefix-" | sort
    for ((i = 1; i <= $(host_count); i++)); do
      printf 'host %d %s: %s\n' "$i" "$(host_ip "$i")" \
        "$(in_ns "$(host_ns "$i")" tc qdisc show dev eth0 | head -1)"
    done
    ;;
  hosts)
    require_up
    k=${1:-$(host_count)}
    check_host "$k"
    seq 1 "$k" | while read -r i; do host_ip "$i"; done | paste -sd,
    ;;
  mpirun)
    require_up
    k=$(host_count)
    if [[ ${1:-} =~ ^[0-9]+$ ]]; then k=$1; shift; fi
    check_host "$k"
    hosts=$("$0" hosts "$k")
    # One slot per host; TCP only (no shared memory, no UCX), on the test bed's subnet only.
    exec ip netns exec "$kPrefix-head" mpirun --host "$hosts" -n "$k" \
      --mca plm_rsh_agent "$here/rsh_agent.sh" --mca plm_rsh_no_tree_spawn 1 \
      --mca pml ob1 --mca btl tcp,self --mca btl_tcp_if_include "$kSubnet" \
      --mca oob_tcp_if_include "$kSubnet" "$@"
    ;;
  exec)
    require_up
    check_host "${1:-}"
    h=$1
    shift
    exec ip netns exec "$(host_ns "$h")" "$@"
    ;;
  shape)
    require_up
    gbps=${1:?usage: shape GBPS [DELAY_S] [HOST]}
    if [[ -n ${3:-} ]]; then check_host "$3"; targets=$3; else targets=$(seq 1 "$(host_count)"); fi
    for i in $targets; do shape_host "$i" "$gbps" "${2:-0}"; done
    ;;
  shape-from)
    require_up
    file=${1:?usage: shape-from FILE [--scale S]}
    shift
    quilt=${QUILT:-${QUILT_BUILD_DIR:-$here/../../build/release}/bin/quilt}
    plan=$("$quilt" plan "$file" "$@") || die "quilt plan $file failed"
    links=$(grep '^ *network link:' <<<"$plan" | sed 's/^ *//; s/ (.*//' | sort -u || true)
    [[ -n $links ]] || die "$file states no network link (links.mpi_gbps); nothing to shape"
    (($(wc -l <<<"$links") == 1)) ||
      die "the runs of $file state different links; shape each run's with testbed.sh shape"
    gbps=$(sed -n 's/^network link: \([0-9.e+-]*\) GB\/s.*/\1/p' <<<"$links")
    delay=$(sed -n 's/.*, \([0-9.e+-]*\) s latency.*/\1/p' <<<"$links")
    [[ -n $gbps ]] || die "$file states a latency but no rate (links.mpi_gbps)"
    "$0" shape "$gbps" "${delay:-0}"
    echo "shaped every host's link: $gbps GB/s, ${delay:-0} s delay (from $file)"
    ;;
  loss)
    require_up
    pct=${1:?usage: loss PCT HOST}
    check_host "${2:-}"
    set_loss "$2" "$pct"
    ;;
  link)
    require_up
    state=${1:?usage: link down|up HOST}
    [[ $state == down || $state == up ]] || die "link: down or up, got '$state'"
    check_host "${2:-}"
    in_ns "$kPrefix-sw" ip link set "${kPrefix}p$2" "$state"
    ;;
  unshape)
    require_up
    for ((i = 1; i <= $(host_count); i++)); do
      in_ns "$(host_ns "$i")" tc qdisc del dev eth0 root 2>/dev/null || true
      set_loss "$i" 0
    done
    ;;
  *) die "unknown command '$cmd' (up, down, status, hosts, mpirun, exec, shape, shape-from, loss, link, unshape)" ;;
esac
