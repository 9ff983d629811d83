#!/usr/bin/env bash
# Create one virtualenv per peer under bench/peers/.venvs/NAME (gitignored), so no peer's
# dependencies touch the project's .venv. Usage: bench/peers/setup.sh [NAME ...] (default: all).
# Idempotent: an existing venv is kept (delete .venvs/NAME to rebuild it). The peers' versions
# are the ones performance-anchors.md measured; the shared libraries are pinned to the versions
# the project's .venv runs, so only the serving stacks differ. `pip freeze` of each venv goes
# to .venvs/NAME/freeze.txt. Installing takes a few minutes per peer (Ray is the largest).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
COMMON="onnxruntime==1.31.1 numpy==2.4.6 pillow==13.0.0 python-multipart==0.0.34"
declare -A PACKAGES=(
  [fastapi]="fastapi==0.165.0 uvicorn[standard]==0.54.0"
  [litserve]="litserve==0.2.19"
  [bentoml]="bentoml==1.4.39"
  [mlserver]="mlserver==1.7.1 mlserver-sklearn==1.7.1 mlserver-xgboost==1.7.1 scikit-learn==1.9.1 xgboost==3.2.0 uvloop==0.21.0"  # MLServer 1.7.1 does not start with uvloop 0.22+; its sklearn/xgboost runtimes load the models with the versions .venv fits them with
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
  "$venv/bin/pip" freeze --disable-pip-version-check > "$venv/freeze.txt"
  touch "$venv/.installed"
done
