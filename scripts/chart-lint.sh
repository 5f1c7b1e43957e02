#!/usr/bin/env bash
# make chart-lint: helm lint --strict (defaults and every ci/*-values.yaml), then the chart tests:
# helm template with the defaults and every optional feature, each manifest validated against the
# Kubernetes OpenAPI schemas of the supported versions, and the refusals of bad values.
set -euo pipefail
cd "$(dirname "$0")/.."

HELM=${HELM:-$(command -v helm || echo .tools/bin/helm)}
[ -x "$HELM" ] || { echo "chart-lint: helm not found; run make helm" >&2; exit 1; }
export HELM
CHART=charts/channels-fleet
t0=$SECONDS

echo "== helm $("$HELM" version --short)"
for values in "" "$CHART"/ci/*-values.yaml; do
  echo "== helm lint --strict $CHART${values:+ -f $values}"
  "$HELM" lint --strict "$CHART" ${values:+-f "$values"} | grep -v '^$'
done

echo "== pytest tests/chart (render, Kubernetes schemas, refusals)"
.venv/bin/pytest tests/chart -q -s -rs -p no:cacheprovider "$@"
echo "== chart-lint done in $((SECONDS - t0)) s"
