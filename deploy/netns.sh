#!/usr/bin/env bash
# A multi-host federation on one machine: each role in its own network namespace, joined by a
# bridge, with its own address. Needs root (CI runs as root).
#
#   deploy/netns.sh up [N]     namespaces <P>br (bridge), <P>link, <P>cli, <P>gw, <P>sn1..<P>snN
#                              (refused if one of them exists already; a failure half-way
#                              deletes what it made)
#   deploy/netns.sh down       delete the namespaces `up` made with this prefix, and nothing else
#                              (stop the processes inside them first!)
#   deploy/netns.sh addr ROLE  print a role's address (link, cli, gw, sn1, ...)
#
# Environment (give `down` and `addr` the same values as `up`):
#   FEDREC_NETNS_PREFIX  namespace name prefix <P>, at most 8 characters (default "fr-"); one
#                        prefix = one topology, so two can coexist with different prefixes
#   FEDREC_NETNS_SUBNET  first three octets of the bridge's /24 (default "10.77.0", the
#                        addresses of deploy/federation.yaml)
#   FEDREC_NETNS_STATE   folder of the state files (default /run/fedrec-netns): `up` records
#                        each namespace it makes in <state>/<P>.list; `down` deletes exactly
#                        those, then the file. Namespaces it did not make are never touched.
# Addresses: link .1, cli .5, gw .6, snI .(10+I). They exist only inside the namespaces.
set -Eeuo pipefail # -E: the ERR trap of `up` also fires inside its functions
P=${FEDREC_NETNS_PREFIX:-fr-}
NET=${FEDREC_NETNS_SUBNET:-10.77.0}
STATE_DIR=${FEDREC_NETNS_STATE:-/run/fedrec-netns}
STATE="$STATE_DIR/${P}.list"

addr() {
  case "$1" in
    link) echo "$NET.1" ;;
    cli) echo "$NET.5" ;;
    gw) echo "$NET.6" ;;
    sn[0-9]*) echo "$NET.$((10 + ${1#sn}))" ;;
    *) echo "netns.sh: unknown role '$1'" >&2; return 2 ;;
  esac
}

made() { # create namespace $1 and record it, so that `down` deletes it (and only it)
  ip netns add "$1"
  echo "$1" >>"$STATE"
}

attach() { # role: a namespace with one veth end on the bridge and the role's address
  local ns="$P$1" peer="v$P$1" ip
  ip=$(addr "$1")
  made "$ns"
  ip link add "$peer" type veth peer name eth0 netns "$ns"
  ip link set "$peer" netns "${P}br"
  ip -n "${P}br" link set "$peer" master br0
  ip -n "${P}br" link set "$peer" up
  ip -n "$ns" addr add "$ip/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
}

down() {
  local ns existing
  if [ ! -f "$STATE" ]; then
    echo "netns.sh: nothing to delete: no $STATE (prefix '$P' was not brought up here)" >&2
    return 0
  fi
  existing=$(ip netns list | awk '{print $1}')
  while read -r ns; do
    if [ -n "$ns" ] && grep -qxF "$ns" <<<"$existing"; then ip netns del "$ns"; fi
  done <"$STATE"
  rm -f "$STATE"
}

up() {
  local n=${1:-2} i
  if [ ${#P} -gt 8 ]; then echo "netns.sh: prefix '$P' longer than 8 characters" >&2; exit 2; fi
  if [ -f "$STATE" ] || ip netns list | awk '{print $1}' | grep -qx "${P}br"; then
    echo "netns.sh: namespaces with prefix '$P' already exist (run 'down' first)" >&2; exit 1
  fi
  local taken role
  for role in br link cli gw $(seq -f 'sn%g' 1 "$n"); do
    if ip netns list | awk '{print $1}' | grep -qxF "$P$role"; then
      taken="${taken:-}${taken:+ }$P$role"
    fi
  done
  if [ -n "${taken:-}" ]; then
    echo "netns.sh: namespace(s) $taken already exist but were not made by 'up' with prefix" \
      "'$P': delete them, or choose another FEDREC_NETNS_PREFIX" >&2
    exit 1
  fi
  mkdir -p "$STATE_DIR"
  : >"$STATE"
  trap 'down' ERR
  made "${P}br"
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
