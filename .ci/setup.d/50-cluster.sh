#!/usr/bin/env bash
# A real one-node Kubernetes 1.20 for tests/k8s/test_live_cluster.py (cluster/up.sh): builds
# the server binaries from Debian's source package on a fresh machine (~9 min, cached in
# /var/cache/infership/k8s after that), starts the cluster on 127.0.0.1 and hands its
# kubeconfig to the tests. .ci/teardown.d/50-cluster.sh takes it down again.
set -euo pipefail
cd "$(dirname "$0")/../.."
kubeconfig=$(cluster/up.sh | tail -n 1)
echo "export KUBECONFIG=$kubeconfig" >>"${CI_ENV:-/dev/null}"
