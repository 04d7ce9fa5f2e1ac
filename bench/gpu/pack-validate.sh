#!/usr/bin/env bash
# Packs what `polar validate` needs on the GPU machine, which has no Node.js and no node_modules, into
# .gpu/v.tar.xz (about 8 MB): an esbuild bundle of the CLI, the native addon with the CUDA backend built for
# any AVX2 x86-64 host (POLAR_MARCH=x86-64-v3, in build-gpuaddon/), and the artifact to validate.
# Node itself travels separately: /work/shared/gpu/pack-node.sh writes .gpu/node.xz (24 MB), which with the
# checkout (~42 MB) fills one transfer, so bench/gpu/device_validate.sh says how to run the two calls.
#
# usage (from the project root, after npm install and `polar run`):
#   bash bench/gpu/pack-validate.sh [ARTIFACT]     (default checkpoints/small-opt/artifact)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
artifact=${1:-checkpoints/small-opt/artifact}
[ -f "$artifact/manifest.json" ] || { echo "pack-validate: no artifact at $artifact (run npx polar run first)" >&2; exit 2; }
command -v nvcc >/dev/null || { echo "pack-validate: nvcc not found: the addon must be built with the CUDA backend" >&2; exit 2; }
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
# the install's own build script, into another folder, for any AVX2 host rather than -march=native
POLAR_BUILD_DIR=build-gpuaddon POLAR_CUDA=1 POLAR_MARCH=x86-64-v3 node scripts/build-native.mjs > /dev/null
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/v" .gpu/b
# the bundle sits two folders below the root, as src/cli/main.ts does, so that projectRoot resolves the same
printf "import { main } from '../../src/cli/main.ts';\nawait main(process.argv);\n" > .gpu/b/entry.ts
npx esbuild .gpu/b/entry.ts --bundle --platform=node --format=esm --target=node20 --outfile="$stage/v/polar.mjs" \
  --external:@tensorflow/tfjs-node --external:@tensorflow/tfjs-node-gpu --log-level=warning \
  --banner:js="import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);"
cp build-gpuaddon/polar_native.node "$stage/v/"
cp -r "$artifact" "$stage/v/artifact"
tar -cJf .gpu/v.tar.xz.tmp -C "$stage" v && mv .gpu/v.tar.xz.tmp .gpu/v.tar.xz
echo "pack-validate: .gpu/v.tar.xz ($(du -h .gpu/v.tar.xz | cut -f1)): bundle, addon, $artifact"
