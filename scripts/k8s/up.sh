#!/usr/bin/env bash
# make k8s-up [K8S_NODES=3]: a Kubernetes of the real components with K8S_NODES worker nodes
# (1 to 9), each in a network namespace of its own; node 1 also runs the control plane.
#
#   netns channels-fleet-k8s-<checkout hash>-<N>, one per node: lo, `node0` (a veth) with the
#   node's IP 10.249.0.<N+1>, the pods' bridge cni0 (CNI bridge + host-local + portmap) on the
#   node's pod CIDR 10.244.<N-1>.0/24, a route to every other node's pod CIDR via that node.
#   netns channels-fleet-k8s-<hash>-fabric: the bridge fabric0 that every node's link (`node<N>`
#   on this side) is a port of, a plain switch. No default route anywhere: nothing leaves.
#   Node 1: etcd -> kube-apiserver -> kube-controller-manager, kube-scheduler; every node:
#   containerd + runc (Debian) -> kubelet (zone label topology.kubernetes.io/zone=zone-a|b|c)
#   -> kube-proxy (iptables); then CoreDNS and local-path-provisioner (Deployments; StorageClass
#   `standard`, default; volumes under the node's own directory).
#
# Every daemon is started with `nsenter --net` (not `ip netns exec`, which remounts /sys and hides
# the cgroup mounts), logs to .run/k8s/logs/<name>.log (a node's as node<N>-<name>.log) and is
# stopped by scripts/k8s/down.sh. A step that fails names its component and shows the end of its
# log. The cluster's kubeconfig is .run/k8s/kubeconfig/admin.conf; reach it with scripts/k8s/exec
# (kubectl, helm, ... inside node 1's namespace). scripts/k8s/node-fault.sh cuts a node off.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/k8s/lib.sh

[ "$(id -u)" = 0 ] || { log "k8s-up needs root (network namespace, mounts, cgroups)"; exit 1; }
for tool in containerd ctr runc nsenter ip iptables conntrack openssl envsubst curl; do
  command -v "$tool" >/dev/null || { log "$tool is missing: run make k8s-deps"; exit 1; }
done
[ -x /usr/lib/cni/bridge ] || { log "CNI plugins missing (/usr/lib/cni): run make k8s-deps"; exit 1; }
[ -x "$K8S_BIN/kube-apiserver" ] || { log "not built: run make k8s-build"; exit 1; }

if ! [[ $K8S_NODES =~ ^[1-9]$ ]]; then
  log "K8S_NODES=$K8S_NODES: 1 to 9 nodes (each holds its own copy of the images, ~2.5 GB on disk)"
  exit 1
fi

CONTROL_PLANE=(etcd kube-apiserver kube-controller-manager kube-scheduler)
NODE_DAEMONS=(containerd kubelet kube-proxy)
running() {  # every daemon of the cluster that was brought up
  local name n
  for name in "${CONTROL_PLANE[@]}"; do
    kill -0 "$(cat "$PIDS/$name.pid" 2>/dev/null)" 2>/dev/null || return 1
  done
  for n in $(node_numbers); do
    for name in "${NODE_DAEMONS[@]}"; do
      kill -0 "$(cat "$PIDS/$(node_id "$n")-$name.pid" 2>/dev/null)" 2>/dev/null || return 1
    done
  done
  [ -f "$K8S_RUN/up" ]
}
if running; then
  up_nodes=$(node_numbers | wc -l)
  log "already up, nodes=$up_nodes (make k8s-down stops it)"
  if [ "$up_nodes" != "$K8S_NODES" ]; then log "K8S_NODES=$K8S_NODES: make k8s-down first"; fi
  exit 0
fi
# Leftovers of a cluster that did not come up or stop cleanly go first.
if [ -d "$K8S_RUN" ]; then scripts/k8s/down.sh; fi

t_start=$SECONDS
mkdir -p "$LOGS" "$PIDS" "$K8S_RUN/host" "$K8S_RUN/etc"
NODES=$(seq "$K8S_NODES")
for n in $NODES; do mkdir -p "$(node_run "$n")"/{etc,cni/net.d,storage}; done

# --- host state this cluster changes, recorded for k8s-down ---------------------------------
# The kubelet sets these kernel tunables at start (container_manager_linux.go: setupKernelTunables);
# they are host-wide: the last k8s-down of the machine puts back what was there before the first.
if [ ! -f "$HOST_SYSCTLS" ]; then
  mkdir -p "${HOST_SYSCTLS%/*}"
  for key in "${KUBELET_SYSCTLS[@]}"; do echo "$key=$(sysctl -n "$key")"; done >"$HOST_SYSCTLS"
fi
# Created by `ip netns add` / the kubelet when missing: removed again by k8s-down if so.
for dir in /run/netns /var/lib/kubelet /var/log/containers; do
  [ -e "$dir" ] || echo "$dir"
done >"$K8S_RUN/host/created-dirs"

# --- helpers ---------------------------------------------------------------------------------
TEMPLATE_VARS=(K8S_RUN PAUSE_IMAGE DNS_SERVICE_IP CLUSTER_CIDR COREDNS_IMAGE COREDNS_REPLICAS
               LOCAL_PATH_IMAGE LOCAL_PATH_NODE_PATHS HELPER_IMAGE
               NODE_ID NODE_RUN NODE_NAME NODE_IP POD_CIDR CGROUP_ROOT)
render() {  # render TEMPLATE OUT: only the variables it uses, each set (scripts keep their $VARs)
  local name used=()
  for name in "${TEMPLATE_VARS[@]}"; do
    grep -qF "\${$name}" "scripts/k8s/templates/$1" || continue
    [ -n "${!name:-}" ] || { log "render $1: $name is empty"; exit 1; }
    used+=("$name")
  done
  (export "${used[@]}"; envsubst "$(printf '${%s} ' "${used[@]}")") \
    <"scripts/k8s/templates/$1" >"$2"
}
render_node() {  # render_node N TEMPLATE OUT: OUT under node N's directory, with its NODE_* values
  local NODE_ID NODE_RUN NODE_NAME NODE_IP POD_CIDR CGROUP_ROOT
  NODE_ID=$(node_id "$1") NODE_RUN=$(node_run "$1") NODE_NAME=$(node_name "$1")
  NODE_IP=$(node_ip "$1") POD_CIDR=$(node_pod_cidr "$1") CGROUP_ROOT=$(node_cgroup_root "$1")
  render "$2" "$NODE_RUN/$3"
}

start() {  # start N NAME PROGRAM ARGS...: a daemon in node N's namespace, in a session of its own
  local n=$1 name=$2
  shift 2
  # nsenter itself in the background (not in_node, a function: $! would be a subshell's pid),
  # so the pid recorded is the daemon's and k8s-down stops the daemon.
  nsenter --net="$(node_netns_path "$n")" -- setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
}

# wait_until NAME SECONDS WHAT CHECK...: poll CHECK; fail NAME if it exits or time runs out.
wait_until() {
  local name=$1 timeout=$2 what=$3 t0=$SECONDS
  shift 3
  until "$@" >/dev/null 2>&1; do
    if [ -f "$PIDS/$name.pid" ] && ! kill -0 "$(cat "$PIDS/$name.pid")" 2>/dev/null; then
      fail "$name" "exited before $what"
    fi
    [ $((SECONDS - t0)) -lt "$timeout" ] || fail "$name" "no $what after ${timeout} s"
    sleep 0.5
  done
  log "$name: $what ($((SECONDS - t0)) s)"
}

device_plugins_bound() {  # device_plugins_bound N: node N's kubelet listens on that socket
  in_node "$1" ss -xlpn | grep -F /var/lib/kubelet/device-plugins/kubelet.sock \
    | grep -q "pid=$(cat "$PIDS/$(node_id "$1")-kubelet.pid"),"
}
https_ok() {  # https_ok URL: 200 from a component's secure port, as the cluster admin
  in_netns curl -fsS --max-time 3 --cacert "$K8S_RUN/pki/ca.crt" --cert "$K8S_RUN/pki/admin.crt" \
    --key "$K8S_RUN/pki/admin.key" "$1"
}
http_ok() { in_node "$1" curl -fsS --max-time 3 "$2"; }  # http_ok N URL: from node N
# kube-controller-manager and kube-scheduler serve /healthz with a self-signed certificate of their
# own (no --tls-cert-file, as kubeadm runs them); their probes do not verify it either.
self_signed_ok() { in_netns curl -fsSk --max-time 3 "$1"; }

# --- network namespaces ------------------------------------------------------------------------
net() { "$@" >>"$LOGS/netns.log" 2>&1 || fail netns "$*"; }
net ip netns add "$FABRIC_NETNS"
net in_fabric ip link set lo up
net in_fabric ip link add fabric0 type bridge
net in_fabric ip link set fabric0 up
# A plain switch: frames between the nodes pass no iptables of the fabric's.
net in_fabric sysctl -qw net.bridge.bridge-nf-call-iptables=0
for n in $NODES; do
  ip=$(node_ip "$n")
  net ip netns add "$(node_netns "$n")"
  net in_node "$n" ip link set lo up
  # The node's address on a veth whose other end is the node's port on the fabric (node-fault.sh
  # cuts a node off there).
  net in_node "$n" ip link add node0 type veth peer name "$(node_id "$n")" netns "$FABRIC_NETNS"
  net in_fabric ip link set "$(node_id "$n")" master fabric0 up
  net in_node "$n" ip addr add "$ip/${NODE_SUBNET#*/}" dev node0
  net in_node "$n" ip link set node0 up
  # Service IPs are DNAT'ed by kube-proxy in OUTPUT, after a route was found: give them one.
  net in_node "$n" ip route add "$SERVICE_CIDR" dev node0 src "$ip"
  # Every other node's pods through that node (the routes a cloud's VPC would hold).
  for other in $NODES; do
    if [ "$other" != "$n" ]; then
      net in_node "$n" ip route add "$(node_pod_cidr "$other")" via "$(node_ip "$other")" dev node0
    fi
  done
  net in_node "$n" sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
  log "netns $(node_netns "$n"): node $(node_name "$n") at $ip, pods $(node_pod_cidr "$n"), $(node_zone "$n")"
done

# --- containerd ------------------------------------------------------------------------------
for n in $NODES; do
  render_node "$n" containerd.toml etc/containerd.toml
  render_node "$n" cni.conflist cni/net.d/10-channels-fleet-k8s.conflist
  start "$n" "$(node_id "$n")-containerd" containerd --config "$(node_run "$n")/etc/containerd.toml"
done
for n in $NODES; do
  wait_until "$(node_id "$n")-containerd" 30 "its socket" node_ctr "$n" version
done
import_images "$K8S_TOOLS"/images/*.tar
log "containerd: $(ls "$K8S_TOOLS"/images/*.tar | wc -l) cluster images imported into every node's"

# --- certificates, etcd, control plane ---------------------------------------------------------
scripts/k8s/pki.sh
PKI=$K8S_RUN/pki
KCFG=$K8S_RUN/kubeconfig

start 1 etcd "$K8S_BIN/etcd" --name "$(node_name 1)" --data-dir "$K8S_RUN/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster "$(node_name 1)=http://127.0.0.1:2380" \
  --listen-metrics-urls http://127.0.0.1:2381 --log-level warn
wait_until etcd 60 "health" http_ok 1 http://127.0.0.1:2379/health

start 1 kube-apiserver "$K8S_BIN/kube-apiserver" \
  --etcd-servers=http://127.0.0.1:2379 \
  --advertise-address="$CONTROL_PLANE_IP" --bind-address=0.0.0.0 --secure-port=6443 \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --client-ca-file="$PKI/ca.crt" \
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
  --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority="$PKI/ca.crt" \
  --kubelet-preferred-address-types=InternalIP,Hostname \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
  --allow-privileged=true --profiling=false \
  --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" \
  --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --proxy-client-cert-file="$PKI/front-proxy-client.crt" \
  --proxy-client-key-file="$PKI/front-proxy-client.key" \
  --enable-aggregator-routing=true
wait_until kube-apiserver 120 "/readyz" https_ok "$API_URL/readyz"

# A node that stops renewing its lease is NotReady after 20 s, not the default 50 s: a later
# scenario cuts a node off (node-fault.sh) and needs its loss seen fast. (Its pods are evicted
# 300 s later still: the API server's default unreachable toleration.) The kubelets renew every
# 5 s (templates/kubelet.yaml), so a slow renewal on this shared machine is not a lost node.
start 1 kube-controller-manager "$K8S_BIN/kube-controller-manager" \
  --node-monitor-grace-period=20s \
  --kubeconfig="$KCFG/controller-manager.conf" \
  --authentication-kubeconfig="$KCFG/controller-manager.conf" \
  --authorization-kubeconfig="$KCFG/controller-manager.conf" \
  --bind-address=127.0.0.1 --leader-elect=false --cluster-name=channels-fleet-k8s \
  --client-ca-file="$PKI/ca.crt" --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" \
  --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
  --root-ca-file="$PKI/ca.crt" --service-account-private-key-file="$PKI/sa.key" \
  --use-service-account-credentials=true --service-cluster-ip-range="$SERVICE_CIDR" \
  --controllers='*,bootstrapsigner,tokencleaner' --profiling=false
start 1 kube-scheduler "$K8S_BIN/kube-scheduler" \
  --kubeconfig="$KCFG/scheduler.conf" \
  --authentication-kubeconfig="$KCFG/scheduler.conf" \
  --authorization-kubeconfig="$KCFG/scheduler.conf" \
  --bind-address=127.0.0.1 --leader-elect=false --profiling=false
wait_until kube-controller-manager 60 "/healthz" self_signed_ok https://127.0.0.1:10257/healthz
wait_until kube-scheduler 60 "/healthz" self_signed_ok https://127.0.0.1:10259/healthz

# --- nodes -------------------------------------------------------------------------------------
for n in $NODES; do
  # The kubelet's cgroupRoot must exist; a new v1 cpuset starts with no CPUs and no memory nodes.
  cgroup_root=$(node_cgroup_root "$n")
  for dir in $(cgroup_root_dirs "$cgroup_root"); do
    mkdir -p "$dir" || fail "$(node_id "$n")-kubelet" "mkdir $dir"
  done
  if [ -d "/sys/fs/cgroup/cpuset$cgroup_root" ]; then
    for file in cpuset.cpus cpuset.mems; do
      cat "/sys/fs/cgroup/cpuset/$file" >"/sys/fs/cgroup/cpuset$cgroup_root/$file"
    done
  fi
  render_node "$n" kubelet.yaml etc/kubelet.yaml
  render_node "$n" kube-proxy.yaml etc/kube-proxy.yaml
  # The zone label is one NodeRestriction lets a kubelet set on its own Node.
  start "$n" "$(node_id "$n")-kubelet" "$K8S_BIN/kubelet" --config="$(node_run "$n")/etc/kubelet.yaml" \
    --kubeconfig="$KCFG/$(node_id "$n").conf" --root-dir="$(node_run "$n")/kubelet" \
    --hostname-override="$(node_name "$n")" --node-ip="$(node_ip "$n")" \
    --node-labels="topology.kubernetes.io/zone=$(node_zone "$n")"
  start "$n" "$(node_id "$n")-kube-proxy" "$K8S_BIN/kube-proxy" \
    --config="$(node_run "$n")/etc/kube-proxy.yaml"
  # One kubelet at a time: each binds /var/lib/kubelet/device-plugins/kubelet.sock (a path no
  # flag moves) after removing the one there; two starting together can both remove it, and the
  # second bind then fails (EADDRINUSE) and that kubelet exits.
  wait_until "$(node_id "$n")-kubelet" 60 "its device plugins' socket" device_plugins_bound "$n"
done
node_ready() {  # node_ready N
  [ "$(kc get node "$(node_name "$1")" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}
for n in $NODES; do
  wait_until "$(node_id "$n")-kubelet" 60 "/healthz" http_ok "$n" http://127.0.0.1:10248/healthz
  wait_until "$(node_id "$n")-kube-proxy" 60 "/healthz" http_ok "$n" http://127.0.0.1:10256/healthz
done
for n in $NODES; do wait_until "$(node_id "$n")-kubelet" 120 "node Ready" node_ready "$n"; done

# --- add-ons -----------------------------------------------------------------------------------
# Two CoreDNS on two nodes when there are two: the cluster's names survive the loss of one node.
COREDNS_REPLICAS=$((K8S_NODES > 1 ? 2 : 1))
# Each node's volumes in its own directory, as a real node's disk (lost with the node).
LOCAL_PATH_NODE_PATHS=$(for n in $NODES; do
  printf '{"node": "%s", "paths": ["%s/storage"]}\n' "$(node_name "$n")" "$(node_run "$n")"
done | paste -sd, -)
render addons/coredns.yaml "$K8S_RUN/etc/coredns.yaml"
render addons/local-path-storage.yaml "$K8S_RUN/etc/local-path-storage.yaml"
kc apply -f "$K8S_RUN/etc/coredns.yaml" -f "$K8S_RUN/etc/local-path-storage.yaml" \
  >>"$LOGS/addons.log" 2>&1 || fail addons "kubectl apply of CoreDNS and local-path-storage"
rolled_out() { kc -n "$1" rollout status "deployment/$2" --timeout=5s; }
before_fail() {  # called by fail: the add-on pods' state and logs go into that log
  case $1 in addons | coredns) ;; *) return ;; esac
  local addon
  for addon in kube-system/k8s-app=kube-dns local-path-storage/app=local-path-provisioner; do
    kc -n "${addon%/*}" get pods -o wide
    kc -n "${addon%/*}" get events --sort-by=.lastTimestamp | tail -n 15
    kc -n "${addon%/*}" logs --all-containers --prefix --tail=10 -l "${addon#*/}"
  done >>"$LOGS/$1.log" 2>&1 || true
}
for addon in kube-system/coredns local-path-storage/local-path-provisioner; do
  wait_until addons 120 "$addon rolled out" rolled_out "${addon%/*}" "${addon#*/}"
done
# CoreDNS answers through its Service (kube-proxy's DNAT) for a name the API server owns, on every
# node: each node's Service rules and its routes to the CoreDNS pods' nodes work.
dns_answers() {  # dns_answers N
  in_node "$1" "$K8S_BIN/busybox" nslookup kubernetes.default.svc.cluster.local "$DNS_SERVICE_IP" \
    | grep -q "Address: $API_SERVICE_IP"
}
for n in $NODES; do
  wait_until coredns 60 "an answer for kubernetes.default.svc.cluster.local on $(node_name "$n")" \
    dns_answers "$n"
done

touch "$K8S_RUN/up"
log "up in $((SECONDS - t_start)) s: nodes=$K8S_NODES, kubernetes $K8S_VERSION (etcd $ETCD_VERSION, coredns $COREDNS_VERSION, containerd $(containerd --version | awk '{print $3}'))"
log "kubectl: scripts/k8s/exec kubectl get pods -A    (kubeconfig: $KCFG/admin.conf, API $API_URL inside node 1's netns $NETNS)"
