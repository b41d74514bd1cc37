#!/usr/bin/env bash
# Sets up fftconv-rt on a fresh machine: a virtual environment in .venv with
# the CPU build of PyTorch, then the package itself (pip builds the native
# libraries with CMake; the ONNX Runtime headers come from Debian's
# libonnxruntime-dev, downloaded into the build folder). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first and pinned: this version is the local CPU wheel; an unpinned torch
# would pull a multi-GB CUDA build.
echo "== installing torch (CPU)"
python -m pip install -q "torch==2.13.0"
echo "== building and installing fftconv-rt (CMake: CPU core + ONNX Runtime library)"
python -m pip install -q ".[all]"
echo "== set-up done: $(python -c 'import fftconv_rt; print("fftconv-rt", fftconv_rt.__version__)')"
