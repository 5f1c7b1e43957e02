#!/usr/bin/env bash
# What the local cluster left on the host (run by scripts/k8s/down.sh, and by the e2e after it):
# processes of its binaries or in its cgroups, mounts under .run/k8s, the network namespaces of
# its nodes and fabric, its nodes' cgroups, iptables rules or links of its network in the host's
# namespace (they must only ever exist inside its own), and kernel tunables that differ from
# before k8s-up. Needs no record of the node count: it looks for every name of the checkout's
# cluster. Prints one line; exit 1 and a list if anything is left.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/k8s/lib.sh

left=()
for pid in $(pgrep -f -- "$K8S_RUN|$K8S_BIN" || true); do
  [ "$pid" = $$ ] || left+=("process $pid: $(tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null | cut -c1-120)")
done
while read -r mnt; do left+=("mount $mnt"); done \
  < <(awk -v root="$K8S_RUN/" -v ns="/run/netns/$CLUSTER_ID-" \
         'index($5, root) == 1 || index($5, ns) == 1 {print $5}' /proc/self/mountinfo)
for netns in $(cluster_netns); do left+=("network namespace /run/netns/$netns"); done
for dir in $(cluster_cgroup_dirs); do left+=("cgroup $dir"); done
# Addresses of the nodes (10.249.0.) and of any node's pods (10.244.).
addresses="${NODE_SUBNET%.*}\.|${CLUSTER_CIDR%%.0.0/16}\."
while read -r rule; do left+=("host iptables: $rule"); done \
  < <({ iptables-save 2>/dev/null; } | grep -E -- "KUBE-|$addresses|cni0" || true)
# The kernel tunables the kubelet sets, as before k8s-up, once no local cluster's kubelet runs.
if ! pgrep -x kubelet >/dev/null; then
  [ ! -f "$HOST_SYSCTLS" ] || left+=("kernel tunables recorded in $HOST_SYSCTLS, never put back")
  if [ -f "$ROOT/.run/k8s-logs/sysctl.saved" ] && [ ! -d "$K8S_RUN" ]; then
    while IFS='=' read -r key value; do
      now=$(sysctl -n "$key")
      [ "$now" = "$value" ] || left+=("sysctl $key=$now (was $value before k8s-up)")
    done <"$ROOT/.run/k8s-logs/sysctl.saved"
  fi
fi
while read -r link; do left+=("host link: $link"); done \
  < <(ip -o link show | awk -F': ' '$2 ~ /^(cni0|node[0-9]+|fabric0)(@|$)/ {print $2}')

if [ ${#left[@]} -eq 0 ]; then
  echo "k8s-leftovers: none (no process, mount, network namespace, cgroup or iptables rule of the cluster)"
  exit 0
fi
echo "k8s-leftovers: ${#left[@]} left on the host:"
printf '  %s\n' "${left[@]}"
exit 1
