#!/usr/bin/env bash
# On the GPU machine (no Node there): full-model logits of the CPU and CUDA backends against the Hugging Face
# goldens, for every pack in the given folders (kernels/tests/cuda_golden_test.cu; packs written here by
# bench/gpu/pack-goldens.ts). Writes $OUT/goldens.log (the test's output) and $OUT/goldens-device.txt.
#
# usage: OUT=dir bash bench/gpu/device_goldens.sh PACKDIR...      (run from anywhere; paths are resolved)
# env:   POLAR_CUDA_BUILD  build folder holding ktests/cuda_golden_test (default build-cuda; built there when
#                          missing). A carried binary that cannot run here (SIGILL: its CPU library is compiled
#                          with -march=native of the machine that built it; or a libc/libstdc++ older than the
#                          builder's: it needs GLIBC_2.34 and GLIBCXX_3.4.30) is rebuilt here in build-golden.
#
# Packs split with --split-mb (weights copied from outside the repo, too big for one transfer) are joined
# here first: <file>.part0.. -> <file>, once every part named by the pack's "file" record is present.
#
# Making the packs here (the transfer to the GPU machine is 64 MiB in all, the checkout ~42 MB of it; the
# binary is ~13 MB, each golden 2.1 MB, medium-opt's weights 28 MB, so medium-opt needs two more calls on a
# machine that stays warm between them):
#   node bin/run-ts.js bench/gpu/pack-goldens.ts .gpu/packs data/models/{tiny-opt,tiny-llama,small-opt,small-llama} \
#     --goldens /work/shared/models
#   node bin/run-ts.js bench/gpu/pack-goldens.ts .gpu/packs-medium /work/shared/models/medium-opt --split-mb 16
#   flock /tmp/polar-build.lock cmake --build build-cuda -j2 --target cuda_golden_test
# Calls (carry = the paths to name):
#   1. carry build-cuda/ktests/cuda_golden_test .gpu/packs:  OUT=$OUT bash bench/gpu/device_goldens.sh .gpu/packs
#   2. carry .gpu/packs-medium/medium-opt.safetensors.part0:  ls -la .gpu/packs-medium
#   3. carry .gpu/packs-medium/medium-opt.safetensors.part1 .gpu/packs-medium/medium-opt.pack
#      .gpu/packs-medium/medium-opt.golden.bin:  OUT=$OUT bash bench/gpu/device_goldens.sh .gpu/packs .gpu/packs-medium
#   (ignored files carried by an earlier call stay on a warm machine; a cold one reports the missing part)
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${OUT:-$root/bench/out}
build=${POLAR_CUDA_BUILD:-$root/build-cuda}
mkdir -p "$out"
if [ $# -lt 1 ]; then
  echo "usage: OUT=dir bash bench/gpu/device_goldens.sh PACKDIR..." >&2
  exit 2
fi

packs=()
for arg in "$@"; do
  d=$(cd "$arg" 2>/dev/null && pwd) || { echo "device_goldens: no folder $arg" >&2; exit 2; }
  for p in "$d"/*.pack; do
    [ -f "$p" ] || continue
    packs+=("$p")
    # join split weight files: "file pack <path> <bytes> <parts>" with parts > 0
    while read -r rel bytes parts; do
      f="$d/$rel"
      [ -f "$f" ] && [ "$(stat -c %s "$f")" = "$bytes" ] && continue
      missing=0
      for ((i = 0; i < parts; i++)); do [ -f "$f.part$i" ] || { echo "device_goldens: $f.part$i is missing (carry it)"; missing=1; }; done
      [ $missing = 1 ] && continue
      for ((i = 0; i < parts; i++)); do cat "$f.part$i"; done > "$f.tmp" && mv "$f.tmp" "$f"
      echo "device_goldens: joined $parts parts into $f ($(stat -c %s "$f") bytes, expected $bytes)"
    done < <(awk '$1 == "file" && $2 == "pack" && $5 > 0 { print $3, $4, $5 }' "$p")
  done
done
if [ ${#packs[@]} = 0 ]; then
  echo "device_goldens: no *.pack in $*" >&2
  exit 2
fi

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
  grep -m1 "model name" /proc/cpuinfo
  echo "avx512f: $(grep -c -m1 avx512f /proc/cpuinfo)"
} > "$out/goldens-device.txt"
cat "$out/goldens-device.txt"

bin=$build/ktests/cuda_golden_test
if [ ! -x "$bin" ]; then
  echo "device_goldens: no $bin; building it" >&2
  cmake -S "$root/kernels" -B "$build" -DPOLAR_CUDA=ON -DCMAKE_BUILD_TYPE=Release >&2 &&
    cmake --build "$build" -j"$(nproc)" --target cuda_golden_test >&2 || { echo "device_goldens: build failed" >&2; exit 1; }
fi
t0=$SECONDS
"$bin" --root "$root" --require-cuda "${packs[@]}" > "$out/goldens.log" 2>&1
rc=$?
if [ $rc = 132 ] || { ! grep -qE "^[0-9]+ passed, [0-9]+ failed" "$out/goldens.log" &&
                      grep -qE "GLIBC|error while loading shared libraries" "$out/goldens.log"; }; then
  # SIGILL: the CPU library was compiled with -march=native on another CPU; or an older libc/libstdc++ here
  sed -n 1,5p "$out/goldens.log" >&2
  echo "device_goldens: $bin cannot run on this machine (rc=$rc); rebuilding it here in $root/build-golden" >&2
  bin=$root/build-golden/ktests/cuda_golden_test
  cmake -S "$root/kernels" -B "$root/build-golden" -DPOLAR_CUDA=ON -DCMAKE_BUILD_TYPE=Release >&2 &&
    cmake --build "$root/build-golden" -j"$(nproc)" --target cuda_golden_test >&2 || { echo "device_goldens: build failed" >&2; exit 1; }
  "$bin" --root "$root" --require-cuda "${packs[@]}" > "$out/goldens.log" 2>&1
  rc=$?
fi
cat "$out/goldens.log"
echo "device_goldens: rc=$rc in $((SECONDS - t0)) s; log in $out/goldens.log"
exit $rc
