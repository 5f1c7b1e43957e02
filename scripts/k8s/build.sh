#!/usr/bin/env bash
# Build the local cluster's programs and images from their official sources (make k8s-build):
#
#   Kubernetes  kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl
#   etcd        the version the Kubernetes release requires
#   CoreDNS     cluster DNS (the plugins of Kubernetes' Corefile)
#   local-path-provisioner   the default StorageClass, as on kind
#   prometheus-adapter       the custom/external metrics API of make e2e-k8s's autoscale phase
#   pause, podsweep          pod sandbox process, CRI teardown helper (scripts/k8s/go/kubernetes)
#
# Versions are pinned by the go.mod/go.sum files under scripts/k8s/go/ (one module per upstream
# project, so each builds with exactly its own dependency pins); sources come from the Go module
# proxy through the `go` command. Binaries go to .tools/k8s/<kubernetes version>/bin, image
# archives (scratch images: one static binary each, plus Debian's busybox-static for the
# provisioner's helper pods) to .tools/k8s/<version>/images. A stamp of each module's inputs
# skips an unchanged module, so a second run takes about a second.
#
#   K8S_BUILD_NICE=10  niceness of the compiler (the machine is shared)
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/k8s/lib.sh

BUILD_LOGS=$K8S_TOOLS/logs
IMAGES=$K8S_TOOLS/images
mkdir -p "$K8S_BIN" "$BUILD_LOGS" "$IMAGES"

command -v go >/dev/null || { log "the go command is needed (Go >= 1.21; it fetches the toolchain go.mod asks for)"; exit 1; }
export CGO_ENABLED=0 GOTOOLCHAIN=${GOTOOLCHAIN:-auto} GOFLAGS=-mod=readonly

# Inputs of one module's build: Go version, flags, go.mod/go.sum and its own sources.
inputs_digest() {  # inputs_digest DIR EXTRA...
  local dir=$1
  shift
  { (cd "$dir" && go version) ; printf '%s\n' "$@"
    find "$dir" -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) -print0 | sort -z \
      | xargs -0 sha256sum; } | sha256sum | cut -c1-64
}

# build_module NAME LDFLAGS PACKAGE...: one `go build` for every program of a module, so they
# share compiled packages; -trimpath and -s -w keep the output reproducible and small.
build_module() {
  local name=$1 ldflags=$2 digest t0=$SECONDS
  shift 2
  local dir=scripts/k8s/go/$name stamp=$K8S_BIN/.stamp-$name
  digest=$(inputs_digest "$dir" "$ldflags" "$@")
  if [ "$(cat "$stamp" 2>/dev/null)" = "$digest" ]; then
    return
  fi
  log "building $name: $* (go build; cold: minutes)"
  if ! (cd "$dir" && nice -n "${K8S_BUILD_NICE:-10}" go build -trimpath -ldflags "$ldflags" \
          -o "$K8S_BIN/" "$@") >"$BUILD_LOGS/$name.log" 2>&1; then
    LOGS=$BUILD_LOGS fail "$name" "go build in $dir"
  fi
  echo "$digest" >"$stamp"
  log "built $name in $((SECONDS - t0)) s"
}

# The version the release reports (kubectl version, the chart's kubeVersion check): its own
# build sets these from git (hack/lib/version.sh); a module build has no git, so set them here.
minor=${K8S_VERSION#v*.}
version_flags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  version_flags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=${K8S_VERSION:1:1}"
  version_flags+=" -X $pkg.gitMinor=${minor%%.*} -X $pkg.gitTreeState=clean"
done

build_module kubernetes "-s -w$version_flags" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet \
  k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kubectl \
  go.etcd.io/etcd/server/v3 ./pause ./podsweep
# go names a program after its path's last element before a /vN suffix: etcd's is "server".
if [ -f "$K8S_BIN/server" ]; then mv -f "$K8S_BIN/server" "$K8S_BIN/etcd"; fi
build_module coredns "-s -w" .
build_module local-path-provisioner "-s -w" github.com/rancher/local-path-provisioner
build_module prometheus-adapter "-s -w" sigs.k8s.io/prometheus-adapter/cmd/adapter
# Named after its command's directory: give it its project's name.
if [ -f "$K8S_BIN/adapter" ]; then mv -f "$K8S_BIN/adapter" "$K8S_BIN/prometheus-adapter"; fi

# Debian's static busybox: the shell the provisioner's helper pods run (mkdir / rm of a volume's
# directory) and nslookup for k8s-up's DNS check. Fetched with apt, unpacked, never installed.
if [ ! -x "$K8S_BIN/busybox" ]; then
  debs=$(mktemp -d)
  (cd "$debs" && apt-get download -qq busybox-static >/dev/null 2>"$BUILD_LOGS/busybox.log") \
    || LOGS=$BUILD_LOGS fail busybox "apt-get download busybox-static (apt-get update first?)"
  dpkg-deb -x "$debs"/busybox-static_*.deb "$debs/root"
  install -m 0755 "$debs/root/bin/busybox" "$K8S_BIN/busybox"
  rm -rf "$debs"
fi

# Scratch images of those binaries, saved as archives that k8s-up imports into containerd.
image() {  # image NAME TAG ENTRYPOINT_JSON FILE...
  local name=$1 tag=$2 entrypoint=$3 digest ctx
  shift 3
  digest=$({ printf '%s %s\n' "$tag" "$entrypoint"; sha256sum "$0" "$@"; } | sha256sum | cut -c1-64)
  if [ "$(cat "$IMAGES/$name.digest" 2>/dev/null)" = "$digest" ] && [ -f "$IMAGES/$name.tar" ]; then
    return
  fi
  ctx=$(mktemp -d)
  mkdir -p "$ctx/bin"
  cp "$@" "$ctx/bin/"
  if [ "$name" = busybox ]; then  # applet links, so `sh`, `mkdir`, `rm` resolve on PATH
    for applet in $("$K8S_BIN/busybox" --list | grep -vx busybox); do
      ln -s busybox "$ctx/bin/$applet"
    done
  fi
  printf 'FROM scratch\nCOPY bin/ /bin/\nENV PATH=/bin\nENTRYPOINT %s\n' "$entrypoint" >"$ctx/Containerfile"
  podman --runtime runc build --quiet -t "$tag" -f "$ctx/Containerfile" "$ctx" >/dev/null \
    || { rm -rf "$ctx"; log "podman build of $tag failed"; exit 1; }
  rm -f "$IMAGES/$name.tar"
  podman save --quiet --format docker-archive -o "$IMAGES/$name.tar" "$tag"
  rm -rf "$ctx"
  echo "$digest" >"$IMAGES/$name.digest"
  log "image $tag saved"
}
image pause "$PAUSE_IMAGE" '["/bin/pause"]' "$K8S_BIN/pause"
image coredns "$COREDNS_IMAGE" '["/bin/coredns"]' "$K8S_BIN/coredns"
image local-path-provisioner "$LOCAL_PATH_IMAGE" '["/bin/local-path-provisioner"]' \
  "$K8S_BIN/local-path-provisioner"
image busybox "$HELPER_IMAGE" '["/bin/sh"]' "$K8S_BIN/busybox"
image prometheus-adapter "$ADAPTER_IMAGE" '["/bin/prometheus-adapter"]' "$K8S_BIN/prometheus-adapter"
log "kubernetes $K8S_VERSION, etcd $ETCD_VERSION, coredns $COREDNS_VERSION, local-path-provisioner $LOCAL_PATH_VERSION, prometheus-adapter $ADAPTER_VERSION: $K8S_BIN"
