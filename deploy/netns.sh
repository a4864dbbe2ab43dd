#!/usr/bin/env bash
# A multi-host federation on one machine: each role in its own network namespace, joined by a
# bridge, with its own address. Needs root (CI runs as root).
#
#   deploy/netns.sh up [N]     namespaces <P>br (bridge), <P>link, <P>cli, <P>gw, <P>sn1..<P>snN
#   deploy/netns.sh down       delete every namespace with the prefix (stop processes first!)
#   deploy/netns.sh addr ROLE  print a role's address (link, cli, gw, sn1, ...)
#
# Environment: FEDREC_NETNS_PREFIX (default "fr-"), FEDREC_NETNS_SUBNET (default "10.77.0").
# Addresses: link .1, cli .5, gw .6, snI .(10+I). They exist only inside the namespaces.
set -euo pipefail
P=${FEDREC_NETNS_PREFIX:-fr-}
NET=${FEDREC_NETNS_SUBNET:-10.77.0}

addr() {
  case "$1" in
    link) echo "$NET.1" ;;
    cli) echo "$NET.5" ;;
    gw) echo "$NET.6" ;;
    sn[0-9]*) echo "$NET.$((10 + ${1#sn}))" ;;
    *) echo "netns.sh: unknown role '$1'" >&2; return 2 ;;
  esac
}

attach() { # role: a namespace with one veth end on the bridge and the role's address
  local ns="$P$1" peer="v$P$1" ip
  ip=$(addr "$1")
  ip netns add "$ns"
  ip link add "$peer" type veth peer name eth0 netns "$ns"
  ip link set "$peer" netns "${P}br"
  ip -n "${P}br" link set "$peer" master br0
  ip -n "${P}br" link set "$peer" up
  ip -n "$ns" addr add "$ip/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
}

down() {
  local ns
  for ns in $(ip netns list | awk '{print $1}'); do
    case "$ns" in "$P"br|"$P"link|"$P"cli|"$P"gw|"$P"sn[0-9]*) ip netns del "$ns" ;; esac
  done
}

up() {
  local n=${1:-2} i
  if [ ${#P} -gt 8 ]; then echo "netns.sh: prefix '$P' longer than 8 characters" >&2; exit 2; fi
  if ip netns list | awk '{print $1}' | grep -qx "${P}br"; then
    echo "netns.sh: namespaces with prefix '$P' already exist (run 'down' first)" >&2; exit 1
  fi
  trap 'down' ERR
  ip netns add "${P}br"
  ip -n "${P}br" link set lo up
  ip -n "${P}br" link add br0 type bridge
  ip -n "${P}br" link set br0 up
  for role in link cli gw; do attach "$role"; done
  for i in $(seq 1 "$n"); do attach "sn$i"; done
  trap - ERR
}

case "${1:-}" in
  up) up "${2:-2}" ;;
  down) down ;;
  addr) addr "${2:?role}" ;;
  *) echo "usage: $0 up [N] | down | addr ROLE" >&2; exit 2 ;;
esac
