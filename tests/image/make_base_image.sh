#!/bin/sh
# Make a local stand-in for python:3.11-slim from Debian bookworm packages, with no container
# registry (there is none here). Reused when the tag exists; see ../shared/docs/containers-here.md.
set -eu
TAG=${TAG:-localhost/python:3.11-slim}
if podman image exists "$TAG"; then
  exit 0
fi
MIRROR=${MIRROR:-$(sed -n 's|^URIs: *\(https\{0,1\}://[^/]*\)/debian/*$|\1|p' \
  /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)}
MIRROR=${MIRROR:-http://deb.debian.org}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mmdebstrap --mode=root --variant=minbase --quiet \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --include=python3,python3-venv,ca-certificates \
  --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --customize-hook='rm -f "$1"/etc/hostname; : > "$1"/etc/resolv.conf' \
  --skip=output/dev \
  bookworm "$WORK/base.tar" \
  "deb $MIRROR/debian bookworm main" \
  "deb $MIRROR/debian bookworm-updates main" \
  "deb $MIRROR/debian-security bookworm-security main"
podman import --quiet \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' \
  --message "mmdebstrap bookworm minbase + python3 python3-venv ca-certificates" \
  "$WORK/base.tar" "$TAG" >/dev/null
