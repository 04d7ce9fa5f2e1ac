#!/usr/bin/env bash
# GPU benchmark (npm run bench:gpu): the polar CUDA kernels (kernels/tests/cuda_bench.cu) and, in the same
# command on the same GPU, the Polar Sparsity reference kernels (bench_reference.py from a git-ignored copy
# of /work/shared/anchors/polar-sparsity in .anchors/), joined into one JSON object per point.
#
# usage: bash bench/gpu.sh [OUTDIR]         (default: $OUT, else bench/out)
# env:   POLAR_CUDA_BUILD  build folder (default build-cuda; configured and built here when missing)
#        POLAR_REF_DIR     reference copy (default .anchors/polar-sparsity); POLAR_SKIP_REF=1 skips it
#        POLAR_BENCH_ARGS  extra arguments of cuda_bench (e.g. "--only mlp --dtype bf16")
#        POLAR_L2_FLUSH    read (default) or write: how the L2 is flushed before each timed repetition, the same
#                          for both sides (cuda_bench --flush; bench/gpu/ref_bench.py); cuda_bench.cu says why
#        POLAR_TRITON_CACHE the reference's Triton cache with its autotuning choices (default .anchors/triton-cache;
#                          empty = autotune afresh). Reused across runs, it keeps the reference's choices fixed.
# Needs an NVIDIA GPU; the reference needs python3 with torch and triton; the dense baselines need
# libcublasLt (found below in the CUDA toolkit or the Python packages, or named by POLAR_CUBLASLT).
# Writes OUTDIR/polar.jsonl, polar.log, reference.jsonl, reference.log, joined.jsonl; prints joined.jsonl.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-${OUT:-$root/bench/out}}
build=${POLAR_CUDA_BUILD:-$root/build-cuda}
ref=${POLAR_REF_DIR:-$root/.anchors/polar-sparsity}
flush=${POLAR_L2_FLUSH:-read}
export POLAR_L2_FLUSH=$flush POLAR_TRITON_CACHE=${POLAR_TRITON_CACHE-$root/.anchors/triton-cache}
mkdir -p "$out"

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "bench:gpu: no NVIDIA GPU here (nvidia-smi failed); nothing to measure" >&2
  exit 1
fi
if [ ! -x "$build/ktests/cuda_bench" ]; then
  echo "bench:gpu: building $build" >&2
  cmake -S "$root/kernels" -B "$build" -DPOLAR_CUDA=ON -DCMAKE_BUILD_TYPE=Release >&2 &&
    cmake --build "$build" -j"$(nproc)" --target cuda_bench cuda_kernels_test >&2 || { echo "bench:gpu: build failed" >&2; exit 1; }
fi
. "$root/bench/gpu/cublaslt.sh"
echo "bench:gpu: cuBLASLt: ${POLAR_CUBLASLT:-not found (dense baselines will be missing)}" >&2

# shellcheck disable=SC2086
"$build/ktests/cuda_bench" --flush "$flush" ${POLAR_BENCH_ARGS:-} > "$out/polar.jsonl" 2> "$out/polar.log"
rc=$?
tail -n 200 "$out/polar.log" >&2
: > "$out/reference.jsonl"
if [ "${POLAR_SKIP_REF:-0}" != 1 ]; then
  if [ -f "$ref/bench_reference.py" ]; then
    # attention first (quick), then the MLP (its Triton autotuning takes minutes): a cut-off run keeps both
    # the attention numbers and every MLP point printed so far (the script flushes each line)
    { python3 "$root/bench/gpu/ref_bench.py" "$ref" attn gqa && python3 "$root/bench/gpu/ref_bench.py" "$ref" mlp; } \
      > "$out/reference.jsonl" 2> "$out/reference.log" ||
      echo "bench:gpu: the reference benchmark failed (see $out/reference.log)" >&2
  else
    echo "bench:gpu: no reference at $ref (cp -r /work/shared/anchors/polar-sparsity .anchors/)" >&2
  fi
fi
python3 "$root/bench/gpu/join.py" "$out/polar.jsonl" "$out/reference.jsonl" > "$out/joined.jsonl"
cat "$out/joined.jsonl"
exit $rc
