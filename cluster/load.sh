#!/usr/bin/env bash
# Copy podman images into the local test cluster's container runtime, so pods can run them
# with imagePullPolicy IfNotPresent or Never (there is no registry here).
#
#   cluster/load.sh localhost/classifier:1 [IMAGE ...]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=cluster/versions.sh
. "$here/versions.sh"
[ $# -gt 0 ] || { echo "usage: cluster/load.sh IMAGE [IMAGE ...]" >&2; exit 2; }
sock="$RUN/containerd/containerd.sock"
[ -S "$sock" ] || { echo "cluster/load.sh: no cluster is up (no $sock); run make cluster" >&2; exit 1; }
start=$(date +%s)
# One archive for all of them: layers the images share (a base and its derived test images)
# are written and imported once.
podman save -q --multi-image-archive --format docker-archive "$@" |
  ctr --address "$sock" -n k8s.io images import - >/dev/null
echo "cluster: loaded $* ($(($(date +%s) - start)) s)" >&2
