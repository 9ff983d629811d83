# What the local test cluster is built from, and where its parts live. Sourced by the other
# cluster/ scripts; each value can be overridden from the environment.
K8S_VERSION=1.20.2
# Debian bookworm's source package: the full upstream v1.20.2 tree with vendor/.
K8S_SOURCE_VERSION=${K8S_SOURCE_VERSION:-1.20.5+really1.20.2-1.1+deb12u1}
CACHE=${INFERSHIP_CLUSTER_CACHE:-/var/cache/infership/k8s}
# Everything a running cluster writes: certificates, etcd, containerd, kubelet, logs.
RUN=${INFERSHIP_CLUSTER_DIR:-/var/lib/infership-cluster}
BIN="$CACHE/$K8S_SOURCE_VERSION/bin"
# Ports on 127.0.0.1, away from the defaults so a real cluster on the machine is not touched.
ETCD_PORT=19379
ETCD_PEER_PORT=19380
APISERVER_PORT=19443
KUBELET_PORT=19250
KUBELET_HEALTHZ_PORT=19248
PROXY_METRICS_PORT=19249
PROXY_HEALTHZ_PORT=19256
KCM_PORT=19257
SCHEDULER_PORT=19259
STREAM_PORT=19010
SERVICE_CIDR=10.96.0.0/24
POD_CIDR=10.244.77.0/24
BRIDGE=infership0
PAUSE_IMAGE=localhost/infership-pause:1
