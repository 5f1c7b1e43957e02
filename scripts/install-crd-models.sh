#!/usr/bin/env bash
# Install the CRD validators the chart tests use into .tools/npm (idempotent): npm packages of
# kubernetes-models (MIT) generated from the prometheus-operator and KEDA CRD schemas, so the
# chart's ServiceMonitor, PrometheusRule, ScaledObject, TriggerAuthentication and HTTPRoute are
# validated too (prometheus-operator, KEDA and Gateway API CRD schemas).
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=${TOOLS:-.tools}
PREFIX=$TOOLS/npm
PACKAGES=("@kubernetes-models/prometheus-operator@6.0.0" "@kubernetes-models/keda@2.0.0"
          "@kubernetes-models/gateway-api@2.0.0")
STAMP=$PREFIX/.crd-models-$(printf '%s' "${PACKAGES[*]}" | md5sum | cut -c1-12)

[ -f "$STAMP" ] && exit 0
command -v npm >/dev/null || { echo "install-crd-models: npm is needed (apt-get install npm)" >&2; exit 1; }
echo "crd-models: installing ${PACKAGES[*]} into $PREFIX"
mkdir -p "$PREFIX"
npm install --silent --no-audit --no-fund --no-save --prefix "$PREFIX" "${PACKAGES[@]}"
rm -f "$PREFIX"/.crd-models-*
touch "$STAMP"
