#!/usr/bin/env bash
# One command for a fresh machine: set up, then run the demo (export a small
# Hyena-style model, run it in ONNX Runtime through the FFTConv op, validate
# it against PyTorch with Polygraphy, print the report). Extra arguments go to
# `fftconv-rt demo` (for example --quick, --lengths 1024,8192).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
. .venv/bin/activate
fftconv-rt info
fftconv-rt demo --out out/demo "$@"
