#!/usr/bin/env bash
# On the GPU machine, from the repository root, with the CUDA build carried in
# build-gpu/: every test marked cuda, compute-sanitizer (memcheck, racecheck, initcheck) and the
# GPU benchmark; logs and results go to $OUT (default out/gpu).
set -uo pipefail
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/python FFTCONV_RT_LIB_DIR=$PWD/build-gpu/lib
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python -c "import torch, ml_dtypes; print('torch', torch.__version__)" || exit 1
status=0
python -m pytest -q -m cuda tests -p no:cacheprovider 2>&1 | tail -n 25 | tee "$OUT/tests.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
for tool in memcheck racecheck initcheck; do
  compute-sanitizer --tool "$tool" --error-exitcode 9 python scripts/cuda_sanitizer_case.py > "$OUT/sanitizer-$tool.txt" 2>&1
  echo "compute-sanitizer $tool: exit $?  $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer-$tool.txt" | tail -n 1)"
done
python -m fftconv_rt.cli bench --gpu ${BENCH_ARGS:-} --out "$OUT/bench.jsonl" 2>&1 | tee "$OUT/bench.txt"
exit $status
