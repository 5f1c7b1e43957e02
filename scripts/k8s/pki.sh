#!/usr/bin/env bash
# Certificates and kubeconfigs of the local cluster (run by scripts/k8s/up.sh), with openssl, as
# kubeadm lays them out: one cluster CA for the API server, the kubelet and every client, a
# front-proxy CA for the aggregation layer (metrics/custom-metrics API servers such as KEDA's or
# prometheus-adapter's), and the service-account signing key; each node (its .run/k8s/node<N>
# directory made by up.sh) gets a serving certificate for its kubelet and a client certificate
# of its own (system:node:<name>, as NodeRestriction requires). ECDSA P-256, valid 30 days: a
# test cluster lives for one run.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/k8s/lib.sh

PKI=$K8S_RUN/pki
KUBECONFIGS=$K8S_RUN/kubeconfig
mkdir -p "$PKI" "$KUBECONFIGS"
umask 077
DAYS=30

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/$1.key" 2>/dev/null; }

ca() {  # ca NAME CN
  key "$1"
  openssl req -x509 -new -key "$PKI/$1.key" -subj "/CN=$2" -days "$DAYS" -out "$PKI/$1.crt" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
}

# cert NAME CA SUBJECT USAGE [SANS]: USAGE is clientAuth, serverAuth or both.
cert() {
  local name=$1 ca=$2 subject=$3 usage=$4 sans=${5:-}
  key "$name"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    if [ -n "$sans" ]; then echo "subjectAltName=$sans"; fi
  } >"$PKI/$name.ext"
  openssl req -new -key "$PKI/$name.key" -subj "$subject" -out "$PKI/$name.csr"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" \
    -CAcreateserial -days "$DAYS" -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

ca ca kubernetes-ca
ca front-proxy-ca front-proxy-ca
cert apiserver ca /CN=kube-apiserver serverAuth \
  "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,DNS:$(node_name 1),IP:$API_SERVICE_IP,IP:$CONTROL_PLANE_IP,IP:127.0.0.1"
cert apiserver-kubelet-client ca "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
cert front-proxy-client front-proxy-ca /CN=front-proxy-client clientAuth
cert admin ca "/O=system:masters/CN=kubernetes-admin" clientAuth
cert controller-manager ca /CN=system:kube-controller-manager clientAuth
cert scheduler ca /CN=system:kube-scheduler clientAuth
cert kube-proxy ca /CN=system:kube-proxy clientAuth
nodes=$(node_numbers)
[ -n "$nodes" ] || { log "pki: no node directories under $K8S_RUN"; exit 1; }
for n in $nodes; do
  name=$(node_name "$n")
  cert "$(node_id "$n")-kubelet" ca "/CN=$name" serverAuth "DNS:$name,IP:$(node_ip "$n")"
  cert "$(node_id "$n")" ca "/O=system:nodes/CN=system:node:$name" clientAuth
done
key sa
openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub"
rm -f "$PKI"/*.srl

# One kubeconfig per client identity, certificates inline.
b64() { base64 -w0 "$1"; }
for name in admin controller-manager scheduler kube-proxy $(for n in $nodes; do node_id "$n"; done); do
  cat >"$KUBECONFIGS/$name.conf" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: channels-fleet-k8s
    cluster:
      server: $API_URL
      certificate-authority-data: $(b64 "$PKI/ca.crt")
users:
  - name: $name
    user:
      client-certificate-data: $(b64 "$PKI/$name.crt")
      client-key-data: $(b64 "$PKI/$name.key")
contexts:
  - name: channels-fleet-k8s
    context: {cluster: channels-fleet-k8s, user: $name}
current-context: channels-fleet-k8s
EOF
done
