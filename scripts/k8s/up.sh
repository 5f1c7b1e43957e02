#!/usr/bin/env bash
# make k8s-up: a one-node Kubernetes of the real components, in a network namespace of its own.
#
#   netns channels-fleet-k8s-<checkout hash>: lo, `node0` (a veth pair kept inside) with the node's IP, the pods'
#   bridge cni0 (CNI bridge + host-local + portmap). No default route: nothing leaves it.
#   containerd + runc (Debian) -> etcd -> kube-apiserver -> kube-controller-manager,
#   kube-scheduler -> kubelet -> kube-proxy (iptables) -> CoreDNS and local-path-provisioner
#   (Deployments; StorageClass `standard`, default).
#
# Every daemon is started with `nsenter --net` (not `ip netns exec`, which remounts /sys and hides
# the cgroup mounts), logs to .run/k8s/logs/<name>.log and is stopped by scripts/k8s/down.sh.
# A step that fails names its component and shows the end of its log. The cluster's kubeconfig
# is .run/k8s/kubeconfig/admin.conf; reach it with scripts/k8s/exec (kubectl, helm, ... inside
# the namespace).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/k8s/lib.sh

[ "$(id -u)" = 0 ] || { log "k8s-up needs root (network namespace, mounts, cgroups)"; exit 1; }
for tool in containerd ctr runc nsenter ip iptables conntrack openssl envsubst curl; do
  command -v "$tool" >/dev/null || { log "$tool is missing: run make k8s-deps"; exit 1; }
done
[ -x /usr/lib/cni/bridge ] || { log "CNI plugins missing (/usr/lib/cni): run make k8s-deps"; exit 1; }
[ -x "$K8S_BIN/kube-apiserver" ] || { log "not built: run make k8s-build"; exit 1; }

DAEMONS=(containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
running() {
  local name
  for name in "${DAEMONS[@]}"; do
    kill -0 "$(cat "$PIDS/$name.pid" 2>/dev/null)" 2>/dev/null || return 1
  done
  [ -f "$K8S_RUN/up" ]
}
if running; then
  log "already up (make k8s-down stops it)"
  exit 0
fi
# Leftovers of a cluster that did not come up or stop cleanly go first.
if [ -d "$K8S_RUN" ]; then scripts/k8s/down.sh; fi

t_start=$SECONDS
mkdir -p "$LOGS" "$PIDS" "$K8S_RUN/host" "$K8S_RUN/etc" "$K8S_RUN/cni/net.d" "$K8S_RUN/storage"

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
TEMPLATE_VARS=(K8S_RUN PAUSE_IMAGE POD_CIDR CGROUP_ROOT DNS_SERVICE_IP NODE_NAME NODE_IP
               COREDNS_IMAGE LOCAL_PATH_IMAGE HELPER_IMAGE)
render() {  # render TEMPLATE OUT: only these variables are substituted (scripts keep their $VARs)
  local name
  for name in "${TEMPLATE_VARS[@]}"; do
    [ -n "${!name}" ] || { log "render $1: $name is empty"; exit 1; }
  done
  (export "${TEMPLATE_VARS[@]}"; envsubst "$(printf '${%s} ' "${TEMPLATE_VARS[@]}")") \
    <"scripts/k8s/templates/$1" >"$2"
}

start() {  # start NAME PROGRAM ARGS...: a daemon in the namespace, in a session of its own
  local name=$1
  shift
  nsenter --net="$NETNS_PATH" -- setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
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

https_ok() {  # https_ok URL: 200 from a component's secure port, as the cluster admin
  in_netns curl -fsS --max-time 3 --cacert "$K8S_RUN/pki/ca.crt" --cert "$K8S_RUN/pki/admin.crt" \
    --key "$K8S_RUN/pki/admin.key" "$1"
}
http_ok() { in_netns curl -fsS --max-time 3 "$1"; }
# kube-controller-manager and kube-scheduler serve /healthz with a self-signed certificate of their
# own (no --tls-cert-file, as kubeadm runs them); their probes do not verify it either.
self_signed_ok() { in_netns curl -fsSk --max-time 3 "$1"; }

# --- network namespace -----------------------------------------------------------------------
ip netns add "$NETNS" 2>"$LOGS/netns.log" || fail netns "ip netns add $NETNS"
net() { in_netns "$@" >>"$LOGS/netns.log" 2>&1 || fail netns "$*"; }
net ip link set lo up
# The node's address, on one end of a veth pair that stays inside the namespace (this kernel
# has no dummy device).
net ip link add node0 type veth peer name node0-peer
net ip addr add "$NODE_IP/24" dev node0
net ip link set node0-peer up
net ip link set node0 up
# Service IPs are DNAT'ed by kube-proxy in OUTPUT, after a route was found: give them one.
net ip route add "$SERVICE_CIDR" dev node0 src "$NODE_IP"
net sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
log "netns $NETNS: node $NODE_NAME at $NODE_IP, pods $POD_CIDR, services $SERVICE_CIDR"

# --- containerd ------------------------------------------------------------------------------
render containerd.toml "$K8S_RUN/etc/containerd.toml"
render cni.conflist "$K8S_RUN/cni/net.d/10-channels-fleet-k8s.conflist"
start containerd containerd --config "$K8S_RUN/etc/containerd.toml"
CTR=(ctr --address "$K8S_RUN/containerd.sock" --namespace k8s.io)
wait_until containerd 30 "its socket" "${CTR[@]}" version
for archive in "$K8S_TOOLS"/images/*.tar; do
  "${CTR[@]}" images import "$archive" >>"$LOGS/containerd.log" 2>&1 \
    || fail containerd "ctr images import $archive"
done
log "containerd: $(ls "$K8S_TOOLS"/images/*.tar | wc -l) cluster images imported"

# --- certificates, etcd, control plane ---------------------------------------------------------
scripts/k8s/pki.sh
PKI=$K8S_RUN/pki
KCFG=$K8S_RUN/kubeconfig

start etcd "$K8S_BIN/etcd" --name "$NODE_NAME" --data-dir "$K8S_RUN/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster "$NODE_NAME=http://127.0.0.1:2380" \
  --listen-metrics-urls http://127.0.0.1:2381 --log-level warn
wait_until etcd 60 "health" http_ok http://127.0.0.1:2379/health

start kube-apiserver "$K8S_BIN/kube-apiserver" \
  --etcd-servers=http://127.0.0.1:2379 \
  --advertise-address="$NODE_IP" --bind-address=0.0.0.0 --secure-port=6443 \
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

start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
  --kubeconfig="$KCFG/controller-manager.conf" \
  --authentication-kubeconfig="$KCFG/controller-manager.conf" \
  --authorization-kubeconfig="$KCFG/controller-manager.conf" \
  --bind-address=127.0.0.1 --leader-elect=false --cluster-name=channels-fleet-k8s \
  --client-ca-file="$PKI/ca.crt" --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" \
  --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
  --root-ca-file="$PKI/ca.crt" --service-account-private-key-file="$PKI/sa.key" \
  --use-service-account-credentials=true --service-cluster-ip-range="$SERVICE_CIDR" \
  --controllers='*,bootstrapsigner,tokencleaner' --profiling=false
start kube-scheduler "$K8S_BIN/kube-scheduler" \
  --kubeconfig="$KCFG/scheduler.conf" \
  --authentication-kubeconfig="$KCFG/scheduler.conf" \
  --authorization-kubeconfig="$KCFG/scheduler.conf" \
  --bind-address=127.0.0.1 --leader-elect=false --profiling=false
wait_until kube-controller-manager 60 "/healthz" self_signed_ok https://127.0.0.1:10257/healthz
wait_until kube-scheduler 60 "/healthz" self_signed_ok https://127.0.0.1:10259/healthz

# --- node --------------------------------------------------------------------------------------
# The kubelet's cgroupRoot must exist; a new v1 cpuset starts with no CPUs and no memory nodes.
for dir in $(cgroup_root_dirs); do mkdir -p "$dir" || fail kubelet "mkdir $dir"; done
if [ -d "/sys/fs/cgroup/cpuset$CGROUP_ROOT" ]; then
  for file in cpuset.cpus cpuset.mems; do
    cat "/sys/fs/cgroup/cpuset/$file" >"/sys/fs/cgroup/cpuset$CGROUP_ROOT/$file"
  done
fi
render kubelet.yaml "$K8S_RUN/etc/kubelet.yaml"
render kube-proxy.yaml "$K8S_RUN/etc/kube-proxy.yaml"
start kubelet "$K8S_BIN/kubelet" --config="$K8S_RUN/etc/kubelet.yaml" \
  --kubeconfig="$KCFG/node.conf" --root-dir="$K8S_RUN/kubelet" \
  --hostname-override="$NODE_NAME" --node-ip="$NODE_IP"
wait_until kubelet 60 "/healthz" http_ok http://127.0.0.1:10248/healthz
start kube-proxy "$K8S_BIN/kube-proxy" --config="$K8S_RUN/etc/kube-proxy.yaml"
wait_until kube-proxy 60 "/healthz" http_ok http://127.0.0.1:10256/healthz
node_ready() { [ "$(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
wait_until kubelet 120 "node Ready" node_ready

# --- add-ons -----------------------------------------------------------------------------------
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
# CoreDNS answers through its Service (kube-proxy's DNAT) for a name the API server owns.
dns_answers() {
  in_netns "$K8S_BIN/busybox" nslookup kubernetes.default.svc.cluster.local "$DNS_SERVICE_IP" \
    | grep -q "Address: $API_SERVICE_IP"
}
wait_until coredns 60 "an answer for kubernetes.default.svc.cluster.local" dns_answers

touch "$K8S_RUN/up"
log "up in $((SECONDS - t_start)) s: kubernetes $K8S_VERSION (etcd $ETCD_VERSION, coredns $COREDNS_VERSION, containerd $(containerd --version | awk '{print $3}'))"
log "kubectl: scripts/k8s/exec kubectl get pods -A    (kubeconfig: $KCFG/admin.conf, API $API_URL inside netns $NETNS)"
