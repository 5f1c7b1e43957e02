# Shared by scripts/k8s/*.sh (sourced from the repository root): pinned versions, paths, the
# cluster's addresses, and helpers that name the failing component with the end of its log.

# Versions: the build modules' go.mod files are the one place they are pinned.
gomod_version() {  # gomod_version MODULE_DIR MODULE_PATH: its version in a require line or block
  awk -v m="$2" '$1 == "require" {$1 = ""; $0 = $0} $1 == m && $2 ~ /^v/ {print $2; exit}' \
    "scripts/k8s/go/$1/go.mod"
}
K8S_VERSION=$(gomod_version kubernetes k8s.io/kubernetes)
ETCD_VERSION=$(gomod_version kubernetes go.etcd.io/etcd/server/v3)
COREDNS_VERSION=$(gomod_version coredns github.com/coredns/coredns)
LOCAL_PATH_VERSION=$(gomod_version local-path-provisioner github.com/rancher/local-path-provisioner)
ADAPTER_VERSION=$(gomod_version prometheus-adapter sigs.k8s.io/prometheus-adapter)

ROOT=$PWD
K8S_TOOLS=$ROOT/.tools/k8s/$K8S_VERSION   # built binaries and image archives (kept across runs)
K8S_BIN=$K8S_TOOLS/bin
K8S_RUN=$ROOT/.run/k8s                    # one cluster's state: removed by k8s-down
LOGS=$K8S_RUN/logs
PIDS=$K8S_RUN/pids

# Every daemon runs in this network namespace; names carry a hash of the checkout, so clusters
# of two checkouts on one machine do not meet.
CHECKOUT_ID=$(printf '%s' "$ROOT" | sha256sum | cut -c1-8)
NETNS=channels-fleet-k8s-$CHECKOUT_ID
NETNS_PATH=/run/netns/$NETNS
CGROUP_ROOT=/channels-fleet-k8s-$CHECKOUT_ID  # kubelet's cgroupRoot, in every v1 hierarchy
# The kernel tunables the kubelet changes are host-wide, so one record serves every local cluster
# on the machine: made by the first to come up, put back by the last to go down.
HOST_SYSCTLS=/run/channels-fleet-k8s/sysctl.saved
KUBELET_SYSCTLS=(kernel.panic kernel.panic_on_oops vm.overcommit_memory vm.panic_on_oom
                 kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

# Addresses inside the namespace (nothing outside it routes to them).
NODE_NAME=channels-fleet-k8s
NODE_IP=10.249.0.2
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/16
API_SERVICE_IP=10.96.0.1
DNS_SERVICE_IP=10.96.0.10
API_URL=https://$NODE_IP:6443

# Images the cluster runs besides the project's (built by scripts/k8s/build.sh).
PAUSE_IMAGE=localhost/k8s/pause:local
COREDNS_IMAGE=localhost/k8s/coredns:$COREDNS_VERSION
LOCAL_PATH_IMAGE=localhost/k8s/local-path-provisioner:$LOCAL_PATH_VERSION
HELPER_IMAGE=localhost/k8s/busybox:local
# The External metrics API the autoscale phase's HPA reads (tests/e2e/k8s/test_autoscale.py).
ADAPTER_IMAGE=localhost/k8s/prometheus-adapter:$ADAPTER_VERSION

# The kubelet's cgroupRoot: a directory in each v1 hierarchy (this VM), or one in the unified
# hierarchy (cgroups v2).
cgroup_root_dirs() {
  if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
    echo "/sys/fs/cgroup$CGROUP_ROOT"
    return
  fi
  local hierarchy
  for hierarchy in /sys/fs/cgroup/*/; do
    if [ -f "${hierarchy}cgroup.procs" ]; then echo "${hierarchy%/}$CGROUP_ROOT"; fi
  done
}

log() { printf '[k8s] %s\n' "$*" >&2; }

# fail COMPONENT REASON: say which component failed, show the end of its log, exit 1. A script
# may define before_fail COMPONENT to add what it knows to that log first.
fail() {
  local component=$1 reason=$2
  if declare -F before_fail >/dev/null; then before_fail "$component"; fi
  printf 'k8s: %s failed: %s\n' "$component" "$reason" >&2
  if [ -s "$LOGS/$component.log" ]; then
    printf -- '--- last lines of %s ---\n' "$LOGS/$component.log" >&2
    tail -n "${FAIL_LOG_LINES:-25}" "$LOGS/$component.log" >&2
  fi
  exit 1
}

in_netns() { nsenter --net="$NETNS_PATH" -- "$@"; }

# kubectl as the cluster admin, inside the namespace.
kc() { in_netns "$K8S_BIN/kubectl" --kubeconfig "$K8S_RUN/kubeconfig/admin.conf" "$@"; }
