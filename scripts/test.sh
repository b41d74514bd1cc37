#!/usr/bin/env bash
# One command for a fresh machine: set up, compile every CUDA source with nvcc
# (sm_80 and sm_90), then run the test suite, then the CPU core and ORT op tests again
# under ASan + UBSan. GPU tests skip with their reason where there is no GPU. Fails
# when anything fails, and when pytest finds no tests.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
. .venv/bin/activate

if command -v nvcc >/dev/null 2>&1; then
  echo "== compiling the CUDA sources with nvcc ($(nvcc --version | tail -n 1))"
  mkdir -p build
  cmake -S . -B build/nvcc-check -DFFTCONV_BUILD_CUDA=ON -DFFTCONV_BUILD_ORT=OFF \
        -DCMAKE_CUDA_ARCHITECTURES="80;90" > build/nvcc-check.log
  grep -E "fftconv-rt" build/nvcc-check.log || true
  cmake --build build/nvcc-check -j "$(nproc)"
else
  echo "== nvcc not found: CUDA sources not compiled" >&2
  [ -z "$(ls csrc/cuda/*.cu 2>/dev/null)" ] || { echo "csrc/cuda has CUDA sources and no nvcc to compile them" >&2; exit 1; }
fi

echo "== running the tests"
set +e
python -m pytest -ra -q tests "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
[ "$status" -eq 0 ] || exit "$status"

# The CPU core and the ONNX Runtime library under AddressSanitizer and UndefinedBehaviorSanitizer:
# the core and ORT op tests again, against an instrumented build. Python is not instrumented, so the
# ASan runtime (and libstdc++, for its exception interceptor) are preloaded; leaks are Python's own.
echo "== the core and the ORT library under ASan + UBSan"
cmake -S . -B build/asan -DFFTCONV_SANITIZE=ON -DFFTCONV_BUILD_CUDA=OFF > build/asan.log
cmake --build build/asan -j "$(nproc)" >> build/asan.log
LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)" \
  ASAN_OPTIONS=detect_leaks=0:halt_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  FFTCONV_RT_LIB_DIR="$PWD/build/asan/lib" python -m pytest -q -p no:cacheprovider tests/test_core_cpu.py tests/test_ort_op.py
