#!/usr/bin/env bash
# topo.sh up|down        routed topology of the data-plane benchmark
#
# Adapted from the data-plane baseline's topo.sh (docs/notes/dataplane-baseline.md;
# the script is not part of this repository), routed mode with a scratch host
# namespace. Calico-style: task i has 10.233.1.i/32 on eth0 and an on-link
# route for 10.233.0.0/16; its host end veth-b<i> in
# $P-host has proxy_arp, per-interface forwarding and a /32 route to the task.
# IPv4 only (IPv6 addresses are not generated at all). No sysctl of the
# root namespace is touched and no namespace has a route out.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
[ "$(id -u)" = 0 ] || die "must run as root"

down() {
  local i pids
  for ((i = 1; i <= N; i++)); do
    netns_exists "$(task_ns "$i")" || continue
    # processes we left inside (servers) would keep the namespace alive
    pids=$(ip netns pids "$(task_ns "$i")" 2>/dev/null || true)
    if [ -n "$pids" ]; then kill $pids 2>/dev/null || true; sleep 0.2; fi
    ip netns del "$(task_ns "$i")" || true
  done
  if netns_exists "$HOSTNS"; then ip netns del "$HOSTNS" || true; fi
  return 0
}

hsys() { H sysctl -qw "$1=$2"; }

up() {
  local i ns hif
  netns_exists "$HOSTNS" && die "netns $HOSTNS exists (not ours?)"
  trap 'echo "topo up failed; tearing down" >&2; down' ERR
  ip netns add "$HOSTNS"
  H ip link set lo up
  for ((i = 1; i <= N; i++)); do
    ns=$(task_ns "$i") hif=$(host_if "$i")
    netns_exists "$ns" && die "netns $ns exists (not ours?)"
    ip netns add "$ns"
    H ip link add name "$hif" type veth peer name eth0 netns "$ns"
    H ip link set dev "$hif" addrgenmode none
    T "$i" ip link set eth0 addrgenmode none
    T "$i" ip link set lo up
    hsys "net.ipv4.conf.$hif.forwarding" 1
    hsys "net.ipv4.conf.$hif.proxy_arp" 1
    hsys "net.ipv4.conf.$hif.rp_filter" 0
    hsys "net.ipv4.neigh.$hif.proxy_delay" 0
    H ip link set dev "$hif" up
    H ip route add "$(task_ip4 "$i")/32" dev "$hif" scope link
    T "$i" ip addr add "$(task_ip4 "$i")/32" dev eth0
    T "$i" ip link set eth0 up
    T "$i" ip route add 10.233.0.0/16 dev eth0 scope link src "$(task_ip4 "$i")"
  done
  trap - ERR
  # sanity: task1 reaches every other task; nothing else is routable from a task
  for ((i = 2; i <= N; i++)); do
    T 1 ping -q -c1 -W2 "$(task_ip4 "$i")" >/dev/null || { down; die "task1 -> task$i ping failed"; }
  done
  if T 1 ip route get 1.1.1.1 >/dev/null 2>&1; then down; die "task netns has a route out (should not)"; fi
  log "topology up: host $HOSTNS, tasks $(task_ns 1)..$(task_ns "$N")"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
