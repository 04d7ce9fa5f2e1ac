#!/usr/bin/env bash
# One call on the lent GPU machine: kernel tests, compute-sanitizer memcheck (quick grid), then the benchmark
# (bench/gpu.sh). Results go to $OUT (at most 8 files come back): device.txt and the three JSONL files as they
# are, the four logs in logs.tgz, and the reference's Triton autotuning choices in triton-autotune.tgz (unpack
# it into .anchors/triton-cache and carry that folder: the next run reuses the same choices; see bench/gpu.sh).
# Built binaries are carried in build-cuda/ktests.
# usage: OUT=dir bash bench/gpu/device_run.sh [--no-tests] [--no-sanitizer] [--no-bench]
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${OUT:-$root/bench/out}
mkdir -p "$out"
kt=$root/build-cuda/ktests
tests=1; san=1; bench=1
for a in "$@"; do
  case $a in --no-tests) tests=0 ;; --no-sanitizer) san=0 ;; --no-bench) bench=0 ;; esac
done
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv | tee "$out/device.txt"
if command -v cuobjdump >/dev/null; then
  { echo "HGMMA in sel_gemm wgmma kernels:"; cuobjdump -sass "$kt/cuda_bench" | grep -c HGMMA; } >> "$out/device.txt" 2>&1
fi
. "$root/bench/gpu/cublaslt.sh"
echo "cuBLASLt: ${POLAR_CUBLASLT:-none}" | tee -a "$out/device.txt"
if [ $tests = 1 ]; then
  t0=$SECONDS; "$kt/cuda_kernels_test" > "$out/test.log" 2>&1; echo "tests rc=$? in $((SECONDS-t0)) s"
  grep -E "^FAIL" "$out/test.log" | head -20; tail -1 "$out/test.log"
fi
if [ $san = 1 ]; then
  t0=$SECONDS
  compute-sanitizer --tool memcheck --leak-check full --error-exitcode 3 "$kt/cuda_kernels_test" --quick > "$out/sanitizer.log" 2>&1
  echo "sanitizer rc=$? in $((SECONDS-t0)) s"; grep -E "ERROR SUMMARY|^FAIL|passed" "$out/sanitizer.log" | tail -3
fi
if [ $bench = 1 ]; then
  t0=$SECONDS; bash "$root/bench/gpu.sh" "$out" > /dev/null; echo "bench rc=$? in $((SECONDS-t0)) s"
  tail -1 "$out/joined.jsonl"
fi
cache=${POLAR_TRITON_CACHE-$root/.anchors/triton-cache}
if [ -n "$cache" ] && [ -d "$cache" ]; then
  (cd "$cache" && find . -name '*.autotune.json' | tar -czf "$out/triton-autotune.tgz" -T -)
  echo "reference autotuning choices: $(tar -tzf "$out/triton-autotune.tgz" | grep -c autotune.json) in triton-autotune.tgz"
fi
logs=$(cd "$out" && ls test.log sanitizer.log polar.log reference.log 2>/dev/null)
[ -n "$logs" ] && tar -czf "$out/logs.tgz" -C "$out" $logs && (cd "$out" && rm -f $logs)
