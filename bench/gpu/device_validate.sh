#!/usr/bin/env bash
# On the GPU machine: `polar validate` of a packed artifact (bench/gpu/pack-validate.sh) with the CUDA backend and
# then the CPU backend, the same bundle and addon, on data/models/small-opt and the first 16384 tokens of
# data/fixtures/corpus/eval.txt at batch sizes 1 and 16. Writes $OUT/validate-{cuda,cpu}.{json,log}.
#
# Two calls of the device tool on a machine that stays warm between them (Node and the pack do not fit one
# transfer next to the checkout; an idle machine is given back after 30 s, so make the second call at once):
#   1. carry .gpu/node.xz .gpu/env.sh:                      . .gpu/env.sh && node --version
#   2. carry .gpu/v.tar.xz .gpu/env.sh bench/gpu/device_validate.sh:  bash bench/gpu/device_validate.sh
# (a cold second call reports that node is missing). The two JSON files' results[].dense_ppl / sparse_ppl are
# the numbers to compare.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
out=${OUT:-$root/bench/out}
mkdir -p "$out"
. .gpu/env.sh 2>/dev/null
node --version > /dev/null 2>&1 || { echo "device_validate: node is not unpacked here (call 1 above, on this machine)" >&2; exit 2; }
[ -f .gpu/v.tar.xz ] || { echo "device_validate: no .gpu/v.tar.xz (bench/gpu/pack-validate.sh, then carry it)" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tar -xJf .gpu/v.tar.xz -C "$tmp"
mkdir -p .gpu/b && cp "$tmp/v/polar.mjs" .gpu/b/polar.mjs
export POLAR_NATIVE=$tmp/v/polar_native.node
node .gpu/b/polar.mjs doctor 2>&1 | grep -E "native addon|CUDA backend|GPU "
rc=0
for be in cuda cpu; do
  t0=$SECONDS
  node .gpu/b/polar.mjs validate "$tmp/v/artifact" --model data/models/small-opt --text data/fixtures/corpus/eval.txt \
    --batch-sizes 1,16 --backend $be --json > "$out/validate-$be.json" 2> "$out/validate-$be.log"
  r=$?
  echo "validate --backend $be: rc=$r in $((SECONDS - t0)) s"
  tail -n 1 "$out/validate-$be.log"
  [ $r = 0 ] || rc=$r
done
exit $rc
