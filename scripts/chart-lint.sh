#!/usr/bin/env bash
# make chart-lint: the chart checks in tests/chart, with their output shown:
#   helm lint --strict on the defaults and every ci/*-values.yaml (test_lint.py),
#   helm template with the defaults and every optional feature, what it renders (test_render.py),
#   every manifest against the Kubernetes OpenAPI schemas of 1.29-1.35, and the custom resources
#   against their CRD schemas (test_kubernetes_schemas.py),
#   bad values refused with the right message (test_refusals.py),
#   schema/README generated from values.yaml, monitoring copies identical and every alert
#   expression scoped (test_sync.py).
# The chart has no dependencies: nothing is fetched first.
set -euo pipefail
cd "$(dirname "$0")/.."

HELM=${HELM:-$(command -v helm || echo .tools/bin/helm)}
[ -x "$HELM" ] || { echo "chart-lint: helm not found; run make helm" >&2; exit 1; }
export HELM
t0=$SECONDS
echo "== chart-lint with helm $("$HELM" version --short)"
.venv/bin/pytest tests/chart -q -s -rs -p no:cacheprovider "$@"
echo "== chart-lint done in $((SECONDS - t0)) s"
