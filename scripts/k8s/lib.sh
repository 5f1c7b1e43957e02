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

# The cluster: K8S_NODES worker nodes (make k8s-up K8S_NODES=N; default 3), node 1 also runs the
# control plane. Each node has its own network namespace, containerd, kubelet, kube-proxy, pod
# CIDR and cgroupRoot. Names carry a hash of the checkout, so clusters of two checkouts on one
# machine do not meet.
K8S_NODES=${K8S_NODES:-3}
CHECKOUT_ID=$(printf '%s' "$ROOT" | sha256sum | cut -c1-8)
CLUSTER_ID=channels-fleet-k8s-$CHECKOUT_ID  # prefix of its network namespaces and cgroupRoots
# The nodes' links meet on one bridge in a namespace of their own, as on a switch.
FABRIC_NETNS=$CLUSTER_ID-fabric
FABRIC_NETNS_PATH=/run/netns/$FABRIC_NETNS
# The kernel tunables the kubelet changes are host-wide, so one record serves every local cluster
# on the machine: made by the first to come up, put back by the last to go down.
HOST_SYSCTLS=/run/channels-fleet-k8s/sysctl.saved
KUBELET_SYSCTLS=(kernel.panic kernel.panic_on_oops vm.overcommit_memory vm.panic_on_oom
                 kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

# Addresses inside the namespaces (nothing outside them routes to them).
NODE_SUBNET=10.249.0.0/24     # the nodes' addresses, on the fabric
CLUSTER_CIDR=10.244.0.0/16    # every node's pod CIDR (a /24 each)
SERVICE_CIDR=10.96.0.0/16
API_SERVICE_IP=10.96.0.1
DNS_SERVICE_IP=10.96.0.10

# Node N: per-node values come from these functions, never from globals a loop would overwrite.
node_id() { echo "node$1"; }                         # its logs, pid files, certificates, state dir
node_name() { echo "channels-fleet-k8s-$1"; }        # the Node object
node_ip() { echo "${NODE_SUBNET%.*}.$(($1 + 1))"; }  # 10.249.0.2, .3, ...
node_pod_cidr() { echo "${CLUSTER_CIDR%%.0.0/16}.$(($1 - 1)).0/24"; }  # 10.244.0.0/24, 10.244.1.0/24, ...
node_netns() { echo "$CLUSTER_ID-$1"; }
node_netns_path() { echo "/run/netns/$(node_netns "$1")"; }
node_run() { echo "$K8S_RUN/$(node_id "$1")"; }     # containerd, kubelet root, CNI, pod logs, volumes
node_cgroup_root() { echo "/$CLUSTER_ID-$1"; }      # the kubelet's cgroupRoot
# Three zones, as a cloud region has: nodes 1, 2, 3 in zone-a, zone-b, zone-c (a 4th in zone-a).
node_zone() { local zones=(zone-a zone-b zone-c); echo "${zones[($1 - 1) % 3]}"; }
# The nodes of the cluster that is (or was being) brought up: their state directories.
node_numbers() {
  local dir
  for dir in "$K8S_RUN"/node[0-9]*; do
    if [ -d "$dir" ]; then echo "${dir##*/node}"; fi
  done | sort -n
}
node_ctr() {  # node_ctr N ARGS...: ctr on node N's containerd, in the CRI's namespace
  local n=$1
  shift
  ctr --address "$(node_run "$n")/containerd.sock" --namespace k8s.io "$@"
}
# import_images ARCHIVE...: into every node's containerd at once (the nodes share no image store).
import_images() {
  local n pids=()
  for n in $(node_numbers); do
    (for archive in "$@"; do
       node_ctr "$n" images import "$archive" || { echo "ctr images import $archive failed"; exit 1; }
     done) >>"$LOGS/$(node_id "$n")-containerd.log" 2>&1 &
    pids[n]=$!
  done
  for n in $(node_numbers); do
    wait "${pids[n]}" || fail "$(node_id "$n")-containerd" "ctr images import into node $n"
  done
}

# Node 1 holds the control plane; the tests and scripts/k8s/exec run in its namespace.
NETNS=$(node_netns 1)
NETNS_PATH=$(node_netns_path 1)
CONTROL_PLANE_IP=$(node_ip 1)
API_URL=https://$CONTROL_PLANE_IP:6443

# Images the cluster runs besides the project's (built by scripts/k8s/build.sh).
PAUSE_IMAGE=localhost/k8s/pause:local
COREDNS_IMAGE=localhost/k8s/coredns:$COREDNS_VERSION
LOCAL_PATH_IMAGE=localhost/k8s/local-path-provisioner:$LOCAL_PATH_VERSION
HELPER_IMAGE=localhost/k8s/busybox:local
# The External metrics API the autoscale phase's HPA reads (tests/e2e/k8s/test_autoscale.py).
ADAPTER_IMAGE=localhost/k8s/prometheus-adapter:$ADAPTER_VERSION

# The cgroup hierarchies: each v1 hierarchy (this VM), or the unified one (cgroups v2).
cgroup_hierarchies() {
  if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
    echo /sys/fs/cgroup
    return
  fi
  local hierarchy
  for hierarchy in /sys/fs/cgroup/*/; do
    if [ -f "${hierarchy}cgroup.procs" ]; then echo "${hierarchy%/}"; fi
  done
}
# cgroup_root_dirs CGROUP_ROOT: a node's cgroupRoot in each hierarchy.
cgroup_root_dirs() {
  local hierarchy
  for hierarchy in $(cgroup_hierarchies); do echo "$hierarchy$1"; done
}
# Every node's cgroupRoot that exists, whatever the node count was (for k8s-down and leftovers).
cluster_cgroup_dirs() {
  local hierarchy dir
  for hierarchy in $(cgroup_hierarchies); do
    for dir in "$hierarchy/$CLUSTER_ID"-*; do
      if [ -d "$dir" ]; then echo "$dir"; fi
    done
  done
}
# Every network namespace of the cluster that exists: the nodes' and the fabric.
cluster_netns() {
  local path
  for path in /run/netns/"$CLUSTER_ID"-*; do
    if [ -e "$path" ]; then echo "${path##*/}"; fi
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

in_netns() { nsenter --net="$NETNS_PATH" -- "$@"; }  # node 1's (the control plane's)
in_node() {  # in_node N COMMAND...: in node N's network namespace
  local n=$1
  shift
  nsenter --net="$(node_netns_path "$n")" -- "$@"
}
in_fabric() { nsenter --net="$FABRIC_NETNS_PATH" -- "$@"; }

# kubectl as the cluster admin, inside the namespace.
kc() { in_netns "$K8S_BIN/kubectl" --kubeconfig "$K8S_RUN/kubeconfig/admin.conf" "$@"; }
