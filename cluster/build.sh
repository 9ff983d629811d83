#!/usr/bin/env bash
# Build the Kubernetes server binaries for the local test cluster from Debian's `kubernetes`
# source package, once per source version: a cache hit costs nothing, a cold build ~9 minutes
# on two cores. Debian ships kubectl, etcd, containerd, runc and the CNI plugins as binaries,
# but not kube-apiserver, the controller-manager, the scheduler, the kubelet or kube-proxy.
#
#   cluster/build.sh            # prints the folder holding the five binaries as its last line
#
# INFERSHIP_CLUSTER_CACHE (default /var/cache/infership/k8s) holds one folder per version.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=cluster/versions.sh
. "$here/versions.sh"

bin="$CACHE/$K8S_SOURCE_VERSION/bin"
servers=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
have_all() { for s in "${servers[@]}"; do [ -x "$bin/$s" ] || return 1; done; }
if have_all; then
  echo "cluster/build.sh: cached binaries for $K8S_SOURCE_VERSION" >&2
  echo "$bin"
  exit 0
fi

"$here/packages.sh"
apt_quiet() { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@"; }
# The source package needs a deb-src line for the suites the machine already uses.
sources=/etc/apt/sources.list.d/infership-k8s-src.sources
if ! apt-cache showsrc "kubernetes=$K8S_SOURCE_VERSION" >/dev/null 2>&1; then
  sed -n 's/^Types: deb$/Types: deb-src/p; /^URIs:/p; /^Suites:/p; /^Components:/p; /^Signed-By:/p; /^$/p' \
    /etc/apt/sources.list.d/debian.sources >"$sources"
  apt_quiet update -qq
fi
apt_quiet install -y -qq --no-install-recommends golang-go rsync dpkg-dev >/dev/null

work="$CACHE/$K8S_SOURCE_VERSION/build"
rm -rf "$work"
mkdir -p "$work" "$bin.partial"
start=$(date +%s)
step() { echo "cluster/build.sh: $* ($(( $(date +%s) - start )) s)" >&2; }
cd "$work"
apt-get source --download-only -qq "kubernetes=$K8S_SOURCE_VERSION" >/dev/null
dpkg-source -x --skip-debianization ./*.dsc src >/dev/null
mkdir -p gopath/src/k8s.io
ln -sfn "$work/src" gopath/src/k8s.io/kubernetes
cd gopath/src/k8s.io/kubernetes
# The vendored tree builds in GOPATH mode only (module mode wants to rewrite go.mod).
export GOPATH="$work/gopath" GOCACHE="$work/gocache" GO111MODULE=off CGO_ENABLED=0 GOPROXY=off GOFLAGS=
step "source unpacked"
# zz_generated.openapi.go is generated at build time upstream and is not in the tarball.
make gen_openapi >/dev/null
step "openapi generated"
ldflags="-s -w"
for pkg in k8s.io/kubernetes/vendor/k8s.io/component-base/version \
  k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
  ldflags="$ldflags -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=${K8S_VERSION%%.*}"
  minor="${K8S_VERSION#*.}"
  ldflags="$ldflags -X $pkg.gitMinor=${minor%%.*} -X $pkg.gitTreeState=clean"
  ldflags="$ldflags -X $pkg.gitCommit=debian-$K8S_SOURCE_VERSION"
done
for server in "${servers[@]}"; do
  go build -tags selinux,notest -ldflags "$ldflags" -o "$bin.partial/$server" "./cmd/$server"
  step "built $server"
done
rm -rf "$bin"
mv "$bin.partial" "$bin"
cd /
rm -rf "$work"  # 1.5 GB of Go cache and source; the binaries are what is kept
echo "$bin"
