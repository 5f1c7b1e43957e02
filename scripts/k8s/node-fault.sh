#!/usr/bin/env bash
# scripts/k8s/node-fault.sh cut|restore N: lose node N of the local cluster without warning, as a
# dead switch port or a hung host would, and bring it back.
#
#   cut      node N's port on the fabric goes down: its kubelet no longer reaches the API server
#            (on node 1), and nothing reaches its pods or it. Its processes keep running, as on a
#            partitioned host: kube-controller-manager marks it NotReady after 20 s without a
#            lease renewal (--node-monitor-grace-period, up.sh), which takes its pods out of the
#            Services' endpoints; they are evicted 300 s later (default unreachable toleration).
#   restore  the port comes up: the kubelet renews its lease and the node is Ready again.
#
# Cutting node 1 cuts every other node off the control plane; the tests and scripts/k8s/exec,
# in node 1's namespace, still reach it.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/k8s/lib.sh

usage() { echo "usage: $0 cut|restore NODE (1 to $(node_numbers | wc -l))" >&2; exit 2; }
[ $# = 2 ] || usage
action=$1 n=$2
[[ $n =~ ^[0-9]+$ ]] || usage
[ "$(id -u)" = 0 ] || { log "node-fault needs root"; exit 1; }
[ -e "$FABRIC_NETNS_PATH" ] || { log "no cluster (make k8s-up)"; exit 1; }
[ -d "$(node_run "$n")" ] || usage
port=$(node_id "$n")  # the node's end on the fabric
case $action in
  cut) state=down ;;
  restore) state=up ;;
  *) usage ;;
esac
in_fabric ip link set "$port" "$state" || { log "ip link set $port $state in $FABRIC_NETNS failed"; exit 1; }
log "node $n ($(node_name "$n"), $(node_ip "$n")): link on the fabric $state"
if [ "$action" = cut ] && [ "$n" = 1 ]; then
  log "node 1 runs the control plane: every other node is cut off from the API server too"
fi
