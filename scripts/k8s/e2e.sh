#!/usr/bin/env bash
# make e2e-k8s [K8S_NODES=3]: the chart on a fresh local cluster of K8S_NODES nodes
# (scripts/k8s/up.sh), then tests/e2e/k8s
# (helm install with the chart's defaults and tests/e2e/k8s/values.yaml, helm test, the shared
# scenarios, a Redis hand-over, crashes (SIGKILL) of a Valkey master, a worker and an interface
# under load, pod security, a node drained and a node lost under load (three nodes), an upgrade
# rolling every pod under load, rollback, uninstall (what it leaves: the generated Secrets); then
# the GitOps round (helm template | kubectl apply --server-side into its own namespace, twice, a new
# image tag between: passwords kept, apps rolled, the new migration run); then the autoscale phase: the
# workers' HPA on prometheus-adapter and Prometheus, scale-out under load, scale-in without a
# disconnect), then k8s-down and a check that nothing of the cluster is left. Prints the
# `k8s-e2e:`, `k8s-gitops:` and `k8s-autoscale:` lines and the time of each phase.
#
# The tests run inside node 1's network namespace (the control plane's) with the cluster's DNS as
# their resolver, as a client pod would: they reach the interface Service by its name through
# kube-proxy, and the pods on every node through the nodes' routes.
#
#   K8S_KEEP=1       leave the cluster (and the release) up afterwards: make k8s-down
#   CHART=path       another checkout of the chart (default charts/channels-fleet)
#   PYTEST_ADDOPTS='-k "install or chat"'   run a part (pytest reads it itself)
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/k8s/lib.sh

E2E_RUN=$ROOT/.run/k8s-e2e
RESULTS=$E2E_RUN/results.json
NAMESPACE=fleet-e2e
RELEASE=fleet
GITOPS_TAG=gitops
export CHART=${CHART:-charts/channels-fleet}
VALUES=tests/e2e/k8s/values.yaml
HELM=$(command -v helm || echo "$ROOT/.tools/bin/helm")
rm -rf "$E2E_RUN"
mkdir -p "$E2E_RUN"

phases=()
phase() { phases+=("$1=$2s"); }

down_and_check() {
  local status=$? t=$SECONDS
  if [ -n "${K8S_KEEP:-}" ]; then
    log "K8S_KEEP: cluster left up (scripts/k8s/exec kubectl -n $NAMESPACE get pods; make k8s-down)"
    return
  fi
  scripts/k8s/down.sh || status=1
  phase k8s_down $((SECONDS - t))
  print_summary
  exit "$status"
}
print_summary() {
  if [ -f "$RESULTS" ]; then
    python3 - "$RESULTS" "$K8S_VERSION" <<'EOF'
import json, sys
results = json.load(open(sys.argv[1]))
fields = ["install", "pods_ready", "install_restarts", "valkey", "postgres", "shards_apart",
          "helm_test", "chat", "worker_rollout_disconnects",
          "worker_rollout_missed_in_rehome_window", "worker_stop_missed_in_rehome_window",
          "interface_rollout_disconnects_per_client", "interface_rollout_app_disconnects",
          "interface_rollout_lost", "interface_rollout_duplicated", "pod_kill_collateral_lost",
          "pod_kill_missed_in_rehome_window", "handover_s",
          "crash_failover_s", "crash_lost", "redis_restart_s", "worker_crash_lost_silently",
          "worker_crash_collateral_lost", "worker_crash_missed_in_rehome_window",
          "interface_crash_recovered_s", "drain_lost", "drain_s",
          "node_loss_serve_s", "node_loss_lost", "upgrade", "upgrade_lost", "rollback",
          "uninstall_left", "uninstall_kept", "pod_security"]
line = " ".join(f"{k}={results.get(k, 'FAIL')}" for k in fields)
print(f"k8s-e2e: kubernetes={sys.argv[2]} nodes={results.get('nodes', '?')} {line}")
print(f"k8s-gitops: {results.get('k8s_gitops', 'FAIL')}")
print(f"k8s-autoscale: {results.get('k8s_autoscale', 'FAIL')}")
print("k8s-e2e phases: " + " ".join(f"{k}={v}s" for k, v in results.get("phases", {}).items()))
EOF
  else
    echo "k8s-e2e: kubernetes=$K8S_VERSION no results (the tests did not run)"
  fi
  echo "k8s-e2e times: ${phases[*]}"
}
trap down_and_check EXIT

# 1. A fresh cluster (taken down by the trap also when it fails to come up).
t0=$SECONDS
scripts/k8s/down.sh >/dev/null
scripts/k8s/up.sh
phase cluster_up $((SECONDS - t0))

# 2. Every image the chart's pods use, from podman (make images) into every node's containerd
#    (the scheduler may put any pod on any node).
t0=$SECONDS
mapfile -t images < <("$HELM" template "$RELEASE" "$CHART" -n "$NAMESPACE" -f "$VALUES" \
  | awk '$1 == "image:" || $1 == "-" && $2 == "image:" {print $NF}' | tr -d '"' | sort -u)
[ ${#images[@]} -gt 0 ] || { log "helm template of $CHART names no image"; exit 1; }
for image in "${images[@]}"; do
  podman image exists "$image" || { log "image $image (used by the chart) is not built: make images"; exit 1; }
done
podman save --quiet --multi-image-archive --format docker-archive -o "$E2E_RUN/images.tar" "${images[@]}"
import_images "$E2E_RUN/images.tar"
rm -f "$E2E_RUN/images.tar"
# The GitOps round's "new image": the project's two images under a second tag, in every node.
for image in "${images[@]}"; do
  case $image in
    */channels-fleet-interface:*|*/channels-fleet-chat:*)
      for n in $(node_numbers); do
        node_ctr "$n" images tag --force "$image" "${image%:*}:$GITOPS_TAG" >/dev/null
      done ;;
  esac
done
phase images_import $((SECONDS - t0))
log "imported into every node's containerd (nodes=$(node_numbers | wc -l)): ${images[*]}"

# 3. The tests, inside node 1's network with the cluster's DNS (a private mount namespace gives them
#    their own /etc/resolv.conf; the host's is not touched).
printf 'nameserver %s\nsearch %s.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n' \
  "$DNS_SERVICE_IP" "$NAMESPACE" >"$E2E_RUN/resolv.conf"
t0=$SECONDS
status=0
E2E_K8S=1 E2E_K8S_RESULTS=$RESULTS E2E_K8S_LOGS=$E2E_RUN/logs E2E_NAMESPACE=$NAMESPACE E2E_RELEASE=$RELEASE \
  E2E_K8S_VALUES=$VALUES E2E_GITOPS_TAG=$GITOPS_TAG K8S_VERSION=$K8S_VERSION HELM=$HELM E2E_ADAPTER_IMAGE=$ADAPTER_IMAGE \
  KUBECONFIG=$K8S_RUN/kubeconfig/admin.conf KUBECTL=$K8S_BIN/kubectl \
  nsenter --net="$NETNS_PATH" -- unshare --mount --propagation slave -- sh -c \
    'mount --bind "$0" /etc/resolv.conf && exec "$@"' "$E2E_RUN/resolv.conf" \
    .venv/bin/pytest -v -s -p no:cacheprovider tests/e2e/k8s/test_k8s.py \
      tests/e2e/k8s/test_gitops.py tests/e2e/k8s/test_autoscale.py || status=$?
phase tests $((SECONDS - t0))
exit "$status"
