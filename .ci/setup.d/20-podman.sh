#!/usr/bin/env bash
# Container engine for the image tests (issue 5): podman + buildah with runc, podman-compose,
# and mmdebstrap to make a local Python base image without a registry. Idempotent.
set -euo pipefail

need=()
for cmd in podman buildah runc iptables mmdebstrap podman-compose; do
  command -v "$cmd" >/dev/null 2>&1 || need+=("$cmd")
done
if [ "${#need[@]}" -gt 0 ]; then
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
    podman buildah runc conmon netavark aardvark-dns slirp4netns uidmap \
    iptables mmdebstrap podman-compose ca-certificates >/dev/null
fi

# This machine has cgroup v1 without systemd: cgroupfs manager and runc (crun refuses hybrid
# mode), and netavark (the podman package also ships a CNI config). The hard open-files and
# process limit is 20000, below podman's default ulimits.
mkdir -p /etc/containers
conf=$(cat <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=20000:20000"]
log_driver = "k8s-file"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"

[network]
network_backend = "netavark"
CONF
)
if [ "$(cat /etc/containers/containers.conf 2>/dev/null)" != "$conf" ]; then
  printf '%s\n' "$conf" > /etc/containers/containers.conf
fi
podman --version
