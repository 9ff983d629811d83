#!/usr/bin/env bash
# Create one virtualenv per peer under bench/peers/.venvs/NAME (gitignored), so no peer's
# dependencies touch the project's .venv. Usage: bench/peers/setup.sh [NAME ...] (default: all).
# Idempotent: an existing venv is kept. Versions are the ones performance-anchors.md measured.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
COMMON="onnxruntime==1.31.1 numpy pillow python-multipart"
declare -A PACKAGES=(
  [fastapi]="fastapi uvicorn[standard]"
  [litserve]="litserve==0.2.19"
  [bentoml]="bentoml==1.4.39"
  [mlserver]="mlserver==1.7.1 uvloop<0.22"
  [rayserve]="ray[serve]==2.60.0"
)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(fastapi litserve bentoml mlserver rayserve)
for name in "${names[@]}"; do
  [ -n "${PACKAGES[$name]:-}" ] || { echo "unknown peer: $name" >&2; exit 2; }
  venv=.venvs/$name
  if [ -x "$venv/bin/python" ] && [ -e "$venv/.installed" ]; then
    echo "$name: $venv exists"; continue
  fi
  echo "$name: creating $venv"
  "$PYTHON" -m venv "$venv"
  # shellcheck disable=SC2086  # word splitting of the package lists is intended
  "$venv/bin/pip" install --quiet --disable-pip-version-check $COMMON ${PACKAGES[$name]}
  touch "$venv/.installed"
done
