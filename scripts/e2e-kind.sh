#!/usr/bin/env bash
# make e2e-kind: kind cluster, demo images, helm install, then the shared e2e scenarios
# (tests/e2e/scenarios.py) through the KubeStack adapter (tests/e2e/kube_stack.py).
# Without a working Docker engine or kind it says so in one line and exits 0 (skipped).
#
#   KEEP_CLUSTER=1    leave the cluster up afterwards (kind delete cluster --name channels-fleet-e2e)
#   BASE=image        base image for the Dockerfiles (default: python:3.11-slim, pulled by podman)
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${KIND_CLUSTER:-channels-fleet-e2e}
NS=${E2E_NAMESPACE:-fleet-e2e}
RELEASE=fleet
HELM=${HELM:-$(command -v helm || echo .tools/bin/helm)}
KUBECTL=${KUBECTL:-$(command -v kubectl || echo .tools/bin/kubectl)}

if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
  echo "e2e-kind: SKIPPED (no working Docker engine: docker info fails or docker is missing)"
  exit 0
fi
if ! command -v kind >/dev/null 2>&1; then
  echo "e2e-kind: SKIPPED (kind is not installed)"
  exit 0
fi

log() { printf '[e2e-kind] %s\n' "$*" >&2; }
t0=$SECONDS

# 1. Images: the images engineer's Dockerfiles, built by `make images` with podman on a pulled
#    official base (this host has no local debootstrap base), then moved into kind.
export BASE=${BASE:-docker.io/library/python:3.11-slim}
command -v podman >/dev/null || make podman
podman image exists "$BASE" || podman pull "$BASE"
make images BASE="$BASE"
archive=$(mktemp -d)
trap 'rm -rf "$archive"' EXIT

# 2. Cluster.
if ! kind get clusters | grep -qx "$CLUSTER"; then
  log "creating kind cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" --config tests/e2e/kind/kind-config.yaml --wait 180s
fi
cleanup() {
  rm -rf "$archive"
  if [ -z "${KEEP_CLUSTER:-}" ]; then kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
for image in channels-fleet-interface channels-fleet-chat; do
  podman save --format docker-archive -o "$archive/$image.tar" "localhost/$image:latest"
  kind load image-archive --name "$CLUSTER" "$archive/$image.tar"
done

# 3. Install: the chart's defaults (its own Redis Cluster and PostgreSQL, pulled by the kind
#    node from docker.io) plus tests/e2e/kind/values.yaml.
"$KUBECTL" create namespace "$NS" --dry-run=client -o yaml | "$KUBECTL" apply -f -
"$HELM" upgrade --install "$RELEASE" charts/channels-fleet -n "$NS" \
  -f tests/e2e/kind/values.yaml --wait --timeout 10m
"$KUBECTL" -n "$NS" get pods -o wide
"$HELM" test "$RELEASE" -n "$NS" --logs   # /readyz everywhere + a WebSocket round trip

# 4. Scenarios.
export E2E_KIND=1 E2E_NAMESPACE="$NS" E2E_RELEASE="$RELEASE" KUBECTL
export E2E_BASE_URL=http://127.0.0.1:18080
status=0
.venv/bin/pytest -v -s -p no:cacheprovider tests/e2e/kind || status=$?
if [ "$status" != 0 ]; then
  "$KUBECTL" -n "$NS" get pods -o wide || true
  "$KUBECTL" -n "$NS" logs -l app.kubernetes.io/instance="$RELEASE" --tail=50 --prefix || true
fi
log "done in $((SECONDS - t0)) s (exit $status)"
exit "$status"
