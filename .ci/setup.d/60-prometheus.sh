#!/usr/bin/env bash
# Debian's Prometheus (2.42 on bookworm) and its promtool, for
# tests/monitoring/test_prometheus_real.py: the test starts a prometheus of its own on a free
# loopback port with its own config and data folder, and never uses a system one. Idempotent.
set -euo pipefail

if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  # The package's postinst starts the service; a policy-rc.d answering 101 tells invoke-rc.d
  # and deb-systemd-invoke not to. Ours only while installing, and only if there was none.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends prometheus >/dev/null
fi

# A system prometheus (a machine where the service started anyway) would scrape nothing of ours
# but hold :9090 and disk: stop it, and keep it from starting at boot.
if [ -d /run/systemd/system ]; then
  systemctl disable --now prometheus.service >/dev/null 2>&1 || true
elif [ -x /etc/init.d/prometheus ]; then
  /etc/init.d/prometheus stop >/dev/null 2>&1 || true
  update-rc.d prometheus disable >/dev/null 2>&1 || true
fi

prometheus --version 2>&1 | head -n 1
promtool --version 2>&1 | head -n 1
