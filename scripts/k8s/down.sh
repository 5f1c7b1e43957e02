#!/usr/bin/env bash
# make k8s-down: stop the local cluster and leave nothing of it on the host: no process, mount,
# network namespace, cgroup or iptables rule (its rules live in its namespace, which goes), and
# the kernel tunables the kubelet set are put back. Ends with scripts/k8s/leftovers.sh, which
# fails (exit 1) and lists what is left if anything is.
#
# Order: every node's kubelet first (it would restart pods); then every pod sandbox through each
# node's CRI (podsweep: CNI DEL, pod namespaces and mounts), the kube-proxies, the control plane,
# etcd, the containerds; then what a killed process may have left (shims, mounts, cgroups, the
# nodes' and the fabric's namespaces), whatever the node count was. The logs stay in
# .run/k8s-logs for a look afterwards.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/k8s/lib.sh

[ "$(id -u)" = 0 ] || { log "k8s-down needs root"; exit 1; }

alive() {  # alive PID...: is any of them still running?
  local pid
  for pid in "$@"; do kill -0 "$pid" 2>/dev/null && return 0; done
  return 1
}

stop() {  # stop NAME...: SIGTERM to all of them, SIGKILL to any still there after 15 s
  local name pid pids=() t0=$SECONDS
  for name in "$@"; do
    if pid=$(cat "$PIDS/$name.pid" 2>/dev/null); then
      pids+=("$pid")
      kill -TERM "$pid" 2>/dev/null || true
      rm -f "$PIDS/$name.pid"
    fi
  done
  for _ in $(seq 75); do alive "${pids[@]}" || break; sleep 0.2; done
  for pid in "${pids[@]}"; do
    if kill -KILL "$pid" 2>/dev/null; then log "killed $pid ($*) after 15 s"; fi
  done
  if [ $((SECONDS - t0)) -gt 2 ]; then log "$* stopped in $((SECONDS - t0)) s"; fi
}

if [ -d "$K8S_RUN" ]; then
  t0=$SECONDS
  nodes=$(node_numbers)
  node_daemons() {  # node_daemons NAME: that daemon's name on every node
    local n
    for n in $nodes; do echo "$(node_id "$n")-$1"; done
  }
  stop $(node_daemons kubelet)
  # Each node's pods at once: podsweep takes seconds a node.
  sweeps=()
  for n in $nodes; do
    socket=$(node_run "$n")/containerd.sock
    if [ -S "$socket" ] && [ -f "$PIDS/$(node_id "$n")-containerd.pid" ]; then
      timeout 150 "$K8S_BIN/podsweep" "unix://$socket" >&2 \
        || log "podsweep of node $n failed: the sweep below removes what is left" &
      sweeps+=($!)
    fi
  done
  wait "${sweeps[@]}"
  stop $(node_daemons kube-proxy) kube-scheduler kube-controller-manager kube-apiserver
  stop etcd $(node_daemons containerd)

  # Processes of the cluster that outlived their parents: shims of its containerds, anything
  # still in the pods' cgroups.
  pids=$(pgrep -f -- "-address $K8S_RUN/node[0-9]+/containerd.sock" || true)
  for dir in $(cluster_cgroup_dirs); do
    pids+=" $(find "$dir" -name cgroup.procs -exec cat {} + 2>/dev/null || true)"
  done
  for pid in $pids; do kill -KILL "$pid" 2>/dev/null && log "killed leftover process $pid"; done
  sleep 0.5

  # Mounts under .run/k8s (pod volumes, rootfs, shm, pod netns), deepest first.
  awk -v root="$K8S_RUN/" 'index($5, root) == 1 {print $5}' /proc/self/mountinfo | sort -r -u \
    | while read -r mnt; do umount "$mnt" 2>/dev/null || umount -l "$mnt"; done

  # The nodes' namespaces and the fabric's: their links and iptables rules go with them.
  for netns in $(cluster_netns); do ip netns delete "$netns"; done

  # Cgroups the kubelets and runc made under each cgroupRoot, in every hierarchy, leaves first.
  for dir in $(cluster_cgroup_dirs); do
    find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done

  # Host state k8s-up recorded: directories that did not exist before, kernel tunables (below).
  find /var/log/containers -maxdepth 1 -type l -lname "$K8S_RUN/*" -delete 2>/dev/null || true
  while read -r dir; do
    case $dir in
      /run/netns) if [ -z "$(ls -A /run/netns 2>/dev/null)" ]; then
                    umount /run/netns 2>/dev/null || true; rmdir /run/netns 2>/dev/null || true; fi ;;
      # Only the device-plugin socket, whose path the kubelet does not take from --root-dir.
      /var/lib/kubelet) pgrep -x kubelet >/dev/null || rm -rf /var/lib/kubelet ;;
      *) rmdir "$dir" 2>/dev/null || true ;;
    esac
  done <"$K8S_RUN/host/created-dirs"

  rm -rf "$ROOT/.run/k8s-logs"
  if [ -d "$LOGS" ]; then mv "$LOGS" "$ROOT/.run/k8s-logs"; fi
  if kubelets=$(pgrep -x kubelet); then
    log "kernel tunables stay as a kubelet set them: another local cluster's runs" \
      "(pid $(echo $kubelets)); its k8s-down puts them back"
  elif [ -f "$HOST_SYSCTLS" ]; then  # the last cluster down: as before the first came up
    sysctl -q -p "$HOST_SYSCTLS"
    mkdir -p "$ROOT/.run/k8s-logs" && mv "$HOST_SYSCTLS" "$ROOT/.run/k8s-logs/"
    rmdir "${HOST_SYSCTLS%/*}" 2>/dev/null || true
  fi
  # Never rm -rf through a mount that is still there (leftovers.sh names it below).
  if ! awk -v root="$K8S_RUN/" 'index($5, root) == 1 {found = 1} END {exit !found}' /proc/self/mountinfo; then
    rm -rf "$K8S_RUN"
  fi
  log "down in $((SECONDS - t0)) s (logs: .run/k8s-logs)"
fi
exec scripts/k8s/leftovers.sh
