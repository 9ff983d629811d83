#!/usr/bin/env bash
# Start a one-node Kubernetes on 127.0.0.1 for tests and trials: etcd, kube-apiserver,
# controller-manager, scheduler, containerd with a bridge CNI, kubelet and kube-proxy.
# Builds the server binaries first when they are not cached (cluster/build.sh). Idempotent:
# with a cluster already up it only prints where it is.
#
#   cluster/up.sh        # progress on stderr; the kubeconfig's path is the last line
#
# cluster/down.sh stops it and removes everything it made; cluster/load.sh IMAGE copies a
# podman image into its container runtime.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=cluster/versions.sh
. "$here/versions.sh"
export KUBECONFIG="$RUN/kubeconfig"
start=$(date +%s%N)
step() {
  local tenths=$((($(date +%s%N) - start) / 100000000))
  printf 'cluster: %3d.%d s  %s\n' $((tenths / 10)) $((tenths % 10)) "$*" >&2
}
# Wait up to $1 seconds for a command to succeed.
wait_for() {
  local seconds=$1
  shift
  local until=$(($(date +%s) + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$until" ]; then
      echo "cluster: gave up after ${seconds} s waiting for: $*; logs in $RUN/logs" >&2
      return 1
    fi
    sleep 0.2
  done
}
api_ready() { curl -fs --cacert "$RUN/pki/ca.crt" -H "Authorization: Bearer $(cat "$RUN/pki/admin.token")" \
  "https://127.0.0.1:$APISERVER_PORT/readyz"; }
node_ready() { kubectl get node localhost -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | grep -qx True; }

if [ -f "$RUN/pki/admin.token" ] && api_ready >/dev/null 2>&1 && node_ready 2>/dev/null; then
  step "already up"
  echo "$KUBECONFIG"
  exit 0
fi
"$here/down.sh" >/dev/null 2>&1 || true  # a half-started cluster from an earlier run

"$here/packages.sh"
"$here/build.sh" >/dev/null
step "binaries ready in $BIN"

rm -rf "$RUN"
mkdir -p "$RUN"/{pki,logs,cni/net.d,containerd}
# What the kubelet and kube-proxy change on the host, to put back on teardown.
for key in net.ipv4.conf.all.route_localnet vm.overcommit_memory vm.panic_on_oom kernel.panic \
  kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward; do
  value=$(sysctl -n "$key" 2>/dev/null) && echo "$key=$value"
done >"$RUN/sysctl.saved"

# Certificates: a CA of our own, the API server's serving certificate (127.0.0.1 and the
# in-cluster names), the service-account signing key and one admin bearer token.
(
  cd "$RUN/pki"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 \
    -subj "/CN=infership-test-cluster-ca" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr \
    -subj "/CN=kube-apiserver" 2>/dev/null
  printf '%s\n' "subjectAltName=IP:127.0.0.1,IP:${SERVICE_CIDR%.*}.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc" \
    "basicConstraints=CA:FALSE" "keyUsage=digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth" >apiserver.ext
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
    -extfile apiserver.ext -out apiserver.crt 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  openssl rand -hex 24 >admin.token
  echo "$(cat admin.token),admin,admin,system:masters" >tokens.csv
  chmod 600 ./*.key admin.token tokens.csv
)
kubectl config set-cluster local --server="https://127.0.0.1:$APISERVER_PORT" \
  --certificate-authority="$RUN/pki/ca.crt" --embed-certs=true >/dev/null
kubectl config set-credentials admin --token="$(cat "$RUN/pki/admin.token")" >/dev/null
kubectl config set-context local --cluster=local --user=admin >/dev/null
kubectl config use-context local >/dev/null
chmod 600 "$KUBECONFIG"

fill() {
  sed -e "s|@RUN@|$RUN|g" -e "s|@PAUSE_IMAGE@|$PAUSE_IMAGE|g" -e "s|@STREAM_PORT@|$STREAM_PORT|g" \
    -e "s|@BRIDGE@|$BRIDGE|g" -e "s|@POD_CIDR@|$POD_CIDR|g" -e "s|@KUBELET_PORT@|$KUBELET_PORT|g" \
    -e "s|@KUBELET_HEALTHZ_PORT@|$KUBELET_HEALTHZ_PORT|g" "$1"
}
fill "$here/config/containerd.toml" >"$RUN/containerd/config.toml"
fill "$here/config/cni.conflist" >"$RUN/cni/net.d/10-infership.conflist"
fill "$here/config/kubelet.yaml" >"$RUN/kubelet.yaml"
echo "nameserver 127.0.0.1" >"$RUN/resolv.conf"  # no DNS in the cluster: tests use ClusterIPs

# Every process in its own session, logging under $RUN/logs, so it outlives this script.
launch() {
  local name=$1
  shift
  setsid nohup "$@" >"$RUN/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}
launch etcd etcd --name infership-cluster --data-dir "$RUN/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "infership-cluster=http://127.0.0.1:$ETCD_PEER_PORT"
launch containerd containerd --config "$RUN/containerd/config.toml"
wait_for 20 curl -fs "http://127.0.0.1:$ETCD_PORT/health"
step "etcd up"
# The insecure port is gone in 1.20: everything, kubelet included, talks TLS with the token.
# --endpoint-reconciler-type=none: the advertise address is loopback, which the kubernetes
# Service's endpoints may not hold.
launch kube-apiserver "$BIN/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --bind-address=127.0.0.1 --secure-port="$APISERVER_PORT" --advertise-address=127.0.0.1 \
  --tls-cert-file="$RUN/pki/apiserver.crt" --tls-private-key-file="$RUN/pki/apiserver.key" \
  --client-ca-file="$RUN/pki/ca.crt" --token-auth-file="$RUN/pki/tokens.csv" \
  --authorization-mode=Node,RBAC \
  --service-account-key-file="$RUN/pki/sa.pub" \
  --service-account-signing-key-file="$RUN/pki/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-cluster-ip-range="$SERVICE_CIDR" --allow-privileged=true \
  --kubelet-preferred-address-types=Hostname,InternalIP --kubelet-port="$KUBELET_PORT" \
  --endpoint-reconciler-type=none --profiling=false
wait_for 90 api_ready
step "API server ready"
common=(--kubeconfig="$KUBECONFIG" --authentication-kubeconfig="$KUBECONFIG"
  --authorization-kubeconfig="$KUBECONFIG" --bind-address=127.0.0.1 --port=0
  --leader-elect=false --profiling=false)
launch kube-controller-manager "$BIN/kube-controller-manager" "${common[@]}" \
  --secure-port="$KCM_PORT" --service-account-private-key-file="$RUN/pki/sa.key" \
  --root-ca-file="$RUN/pki/ca.crt" --use-service-account-credentials=false \
  --controllers='*,-nodeipam,-cloud-node-lifecycle' --horizontal-pod-autoscaler-sync-period=5s
launch kube-scheduler "$BIN/kube-scheduler" "${common[@]}" --secure-port="$SCHEDULER_PORT"

# The pod sandbox image, built once from cluster/pause.c and cached beside the binaries.
pause_tar="$CACHE/pause-$(sha256sum "$here/pause.c" | cut -c1-12).tar"
if [ ! -s "$pause_tar" ]; then
  context=$(mktemp -d)
  gcc -static -Os -o "$context/pause" "$here/pause.c"
  printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$context/Containerfile"
  podman build -q -t "$PAUSE_IMAGE" "$context" >/dev/null
  podman save -q --format docker-archive -o "$pause_tar.partial" "$PAUSE_IMAGE" >/dev/null
  mv "$pause_tar.partial" "$pause_tar"
  rm -rf "$context"
fi
wait_for 20 test -S "$RUN/containerd/containerd.sock"
ctr --address "$RUN/containerd/containerd.sock" -n k8s.io images import "$pause_tar" >/dev/null
step "containerd up, pause image loaded"

# The pods' bridge exists before the first pod so ClusterIP traffic can be routed to it and
# never leaves the machine (kube-proxy rewrites it to a pod address on the way out).
ip link add "$BRIDGE" type bridge 2>/dev/null || true
ip link set "$BRIDGE" up
ip route replace "$SERVICE_CIDR" dev "$BRIDGE"
launch kubelet "$BIN/kubelet" --config="$RUN/kubelet.yaml" --kubeconfig="$KUBECONFIG" \
  --container-runtime=remote \
  --container-runtime-endpoint="unix://$RUN/containerd/containerd.sock" \
  --root-dir="$RUN/kubelet" --hostname-override=localhost \
  --pod-infra-container-image="$PAUSE_IMAGE"
launch kube-proxy "$BIN/kube-proxy" --kubeconfig="$KUBECONFIG" --hostname-override=localhost \
  --proxy-mode=iptables --cluster-cidr="$POD_CIDR" \
  --metrics-bind-address="127.0.0.1:$PROXY_METRICS_PORT" \
  --healthz-bind-address="127.0.0.1:$PROXY_HEALTHZ_PORT" \
  --conntrack-max-per-core=0 --conntrack-tcp-timeout-established=0 \
  --conntrack-tcp-timeout-close-wait=0 --nodeport-addresses=127.0.0.1/32 --profiling=false
wait_for 120 node_ready
step "node Ready"
wait_for 60 kubectl -n default get serviceaccount default
step "default service account made"
echo "export KUBECONFIG=$KUBECONFIG" >"$RUN/env"
echo "$KUBECONFIG"
