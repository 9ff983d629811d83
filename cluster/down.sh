#!/usr/bin/env bash
# Stop the local test cluster started by cluster/up.sh and put the machine back as it was:
# pods, processes, mounts, network namespaces, cgroups, the bridge and its route, the KUBE-*
# iptables chains, the sysctls the kubelet and kube-proxy changed, and the kubelet's log
# folders. Touches only what up.sh made. Safe to run when nothing is up.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=cluster/versions.sh
. "$here/versions.sh"
export KUBECONFIG="$RUN/kubeconfig"
sock="$RUN/containerd/containerd.sock"

# Stop the process recorded in $RUN/NAME.pid: TERM, then KILL after 10 s.
stop() {
  local pidfile="$RUN/$1.pid" pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null
  fi
  rm -f "$pidfile"
}

# 1. Pods first, through the kubelet, so their sandboxes, netns and cgroups go the normal way.
if [ -f "$KUBECONFIG" ] && kubectl get --raw /readyz >/dev/null 2>&1; then
  for ns in $(kubectl get namespaces -o name 2>/dev/null | cut -d/ -f2); do
    case "$ns" in kube-system | kube-public | kube-node-lease) continue ;; esac
    kubectl -n "$ns" delete deployments,replicasets,statefulsets,daemonsets,jobs --all \
      --wait=false >/dev/null 2>&1
    kubectl -n "$ns" delete pods --all --grace-period=0 --force --wait=false >/dev/null 2>&1
  done
  for _ in $(seq 20); do
    [ -z "$(kubectl get pods -A -o name 2>/dev/null)" ] && break
    sleep 1
  done
fi
stop kube-proxy
[ -x "$BIN/kube-proxy" ] && "$BIN/kube-proxy" --cleanup >/dev/null 2>&1
stop kubelet
# 2. Whatever containers are left, then containerd and its shims.
if [ -S "$sock" ]; then
  for ns in $(ctr --address "$sock" namespaces ls -q 2>/dev/null); do
    for task in $(ctr --address "$sock" -n "$ns" tasks ls -q 2>/dev/null); do
      ctr --address "$sock" -n "$ns" tasks kill -s KILL "$task" >/dev/null 2>&1
    done
    sleep 1
    for task in $(ctr --address "$sock" -n "$ns" tasks ls -q 2>/dev/null); do
      ctr --address "$sock" -n "$ns" tasks delete -f "$task" >/dev/null 2>&1
    done
    for container in $(ctr --address "$sock" -n "$ns" containers ls -q 2>/dev/null); do
      ctr --address "$sock" -n "$ns" containers rm "$container" >/dev/null 2>&1
    done
  done
fi
for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $sock" 2>/dev/null); do kill -9 "$pid"; done
stop containerd
stop kube-scheduler
stop kube-controller-manager
stop kube-apiserver
stop etcd
# 3. What pods leave on the host.
grep -o " $RUN/[^ ]*" /proc/mounts | sort -r | while read -r mount; do umount -l "$mount"; done
for netns in $(ls /var/run/netns 2>/dev/null | grep '^cni-'); do
  # CNI's namespaces; podman's are netavark-* / netns-*. Only ours hold our bridge's veths.
  if ip netns exec "$netns" ip -o addr 2>/dev/null | grep -q " ${POD_CIDR%.*}\."; then
    ip netns del "$netns"
  fi
done
for cgroup in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/unified/kubepods; do
  [ -d "$cgroup" ] && find "$cgroup" -depth -type d -exec rmdir {} \; 2>/dev/null
done
ip route del "$SERVICE_CIDR" 2>/dev/null
ip link del "$BRIDGE" 2>/dev/null
# 4. iptables: the chains the kubelet and kube-proxy add, and the jumps into them.
for table in filter nat mangle; do
  for chain in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-PROXY-CANARY KUBE-MARK-DROP \
    KUBE-MARK-MASQ KUBE-POSTROUTING; do
    for tool in iptables ip6tables; do
      $tool -t "$table" -S 2>/dev/null | grep -E "^-A [A-Z]+ .*-j $chain( |\$)" |
        sed 's/^-A/-D/' | while read -r rule; do eval "$tool -t $table $rule"; done
      $tool -t "$table" -F "$chain" 2>/dev/null
      $tool -t "$table" -X "$chain" 2>/dev/null
    done
  done
done
# 5. Sysctls as they were before up.sh, and the folders kubelet 1.20 hard-codes.
if [ -f "$RUN/sysctl.saved" ]; then
  while IFS= read -r setting; do sysctl -qw "$setting" 2>/dev/null; done <"$RUN/sysctl.saved"
fi
rm -rf /var/log/pods /var/log/containers
find /run/containerd -depth -type d -empty -delete 2>/dev/null
left=$(pgrep -fc "^($BIN/|containerd --config $RUN|etcd --name infership-cluster)" 2>/dev/null)
echo "cluster: down; processes left: ${left:-0}" >&2
rm -rf "$RUN"
