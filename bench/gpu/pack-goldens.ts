// Packs the shared models' golden logits for the Node-free CUDA golden test (kernels/tests/cuda_golden_test.cu),
// so that the GPU machine (no Node there, 64 MiB transfer including the checkout) can check the full-model
// logits of the CUDA backend against Hugging Face transformers.
//
// usage: node bin/run-ts.js bench/gpu/pack-goldens.ts <outdir> <modelDir>... [--goldens DIR] [--split-mb N]
//   <modelDir>      a Hugging Face model folder (data/models/tiny-opt, /work/shared/models/medium-opt, ...)
//   --goldens DIR   where goldens are looked up when <modelDir>/reference/golden.safetensors is missing:
//                   DIR/<name>/reference/golden.safetensors (e.g. --goldens /work/shared/models)
//   --split-mb N    copied weight files larger than N MiB are written as parts <file>.part0, .part1, ... of
//                   N MiB instead (so that they can travel in separate calls; bench/gpu/device_goldens.sh
//                   joins them on the GPU machine)
//
// For each model <name> (the folder's base name) it writes into <outdir>:
//   <name>.pack        the manifest below (plain text, one record per line, parsed with sscanf)
//   <name>.golden.bin  input_ids int32 [B, S], then logits fp32 [B, S, vocab] (from reference/golden.safetensors)
//   <name>.safetensors only for a model whose weight files are not tracked files of this repository: a copy
//                      of model.safetensors (<name>.<file name> for each shard of a sharded checkpoint)
// Weights tracked in this repository (data/models/...) are referenced in place, relative to the repo root:
// they travel with the checkout, so the packs of the bundled models hold only their goldens (~2 MB each).
//
// The model config and the weight descriptors are exactly what the runtime gives the native model
// (src/runtime/model.ts: nativeModelConfig(spec), and the {name, file, offset, nbytes, dtype, shape} of
// every loadModel() weight), so the C++ test builds the same polar_model_config / polar_weight_desc.
//
// Manifest (format version 1; '#' starts a comment line):
//   polar-golden-pack 1
//   model <name>
//   dtype <F16|BF16|F32>                       dtype of most weight bytes (LoadedModel.dtype)
//   config <key> <value>                       one per NativeModelConfig field (camelCase, as in model.ts)
//   file <base> <path> <bytes> <parts>         each distinct weight file; parts > 0: split into <path>.partI
//   weight <name> <base> <path> <offset> <nbytes> <dtype> <ndim> <d0> [<d1> ...]
//   golden <base> <path> <B> <S> <vocab>
// Paths: every path is preceded by its base, so a pack stays valid wherever the pack folder is put:
//   root  relative to the repository root (cuda_golden_test --root DIR; default: the current directory)
//   pack  relative to the folder that holds the .pack file
// Paths never contain white space (checked here).
import { chmodSync, copyFileSync, closeSync, existsSync, mkdirSync, openSync, readSync, realpathSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { basename, join, relative, resolve, sep } from 'node:path';
import { loadModel } from '../../src/model/index.ts';
import { readSafetensorsHeader, readTensorF32, readTensorInt } from '../../src/formats/safetensors.ts';
import { nativeModelConfig, type NativeWeightDesc } from '../../src/runtime/model.ts';
import { projectRoot } from '../../src/runtime/binding.ts';

const usage = 'usage: node bin/run-ts.js bench/gpu/pack-goldens.ts <outdir> <modelDir>... [--goldens DIR] [--split-mb N]';

function fail(msg: string): never {
  console.error(`pack-goldens: ${msg}`);
  process.exit(2);
}

const positional: string[] = [];
let goldensDir: string | null = null;
let splitMb = 0;
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (a === '--goldens') {
    goldensDir = argv[++i] ?? fail(`--goldens: expected a folder. ${usage}`);
  } else if (a === '--split-mb') {
    splitMb = Number(argv[++i]);
    if (!Number.isInteger(splitMb) || splitMb < 1) fail(`--split-mb: expected a positive integer (MiB), received ${argv[i]}`);
  } else if (a === '-h' || a === '--help') {
    console.log(usage);
    process.exit(0);
  } else if (a.startsWith('--')) {
    fail(`unknown option ${a}. ${usage}`);
  } else {
    positional.push(a);
  }
}
if (positional.length < 2) fail(usage);
const outDir = resolve(positional[0]);
const modelDirs = positional.slice(1);
mkdirSync(outDir, { recursive: true });

const repoReal = realpathSync(projectRoot);

function noSpace(p: string): string {
  if (/\s/.test(p)) fail(`path "${p}": expected no white space (the manifest is split at spaces)`);
  return p;
}

/** root-relative path of a file tracked by git in this repository, or null */
function trackedInRepo(file: string): string | null {
  const real = realpathSync(file);
  if (!real.startsWith(repoReal + sep)) return null;
  const rel = relative(repoReal, real);
  const r = spawnSync('git', ['ls-files', '--error-unmatch', '--', rel], { cwd: repoReal, encoding: 'utf8' });
  return r.status === 0 ? rel.split(sep).join('/') : null;
}

function writeParts(src: string, dest: string, partBytes: number): number {
  const size = statSync(src).size;
  const fd = openSync(src, 'r');
  const buf = Buffer.alloc(Math.min(partBytes, 16 << 20));
  let parts = 0;
  try {
    for (let off = 0; off < size; parts++) {
      const end = Math.min(size, off + partBytes);
      const out = openSync(`${dest}.part${parts}`, 'w');
      try {
        while (off < end) {
          const n = readSync(fd, buf, 0, Math.min(buf.length, end - off), off);
          if (n <= 0) fail(`${src}: file shrank while copying`);
          writeSync(out, buf, 0, n);
          off += n;
        }
      } finally {
        closeSync(out);
      }
    }
  } finally {
    closeSync(fd);
  }
  for (let i = parts; existsSync(`${dest}.part${i}`); i++) rmSync(`${dest}.part${i}`); // stale parts of an older run
  return parts;
}

const summary: { model: string; packBytes: number; files: Record<string, number> }[] = [];

for (const dirArg of modelDirs) {
  const m = loadModel(dirArg);
  const name = basename(m.dir);
  noSpace(name);
  let goldenFile = join(m.dir, 'reference', 'golden.safetensors');
  if (!existsSync(goldenFile)) {
    if (!goldensDir) fail(`${goldenFile}: no golden here; pass --goldens DIR (DIR/${name}/reference/golden.safetensors)`);
    goldenFile = join(resolve(goldensDir), name, 'reference', 'golden.safetensors');
    if (!existsSync(goldenFile)) fail(`${goldenFile}: no such file (golden of ${name})`);
  }

  // exactly the descriptors openRuntimeModel / openCudaModel pass to the addon
  const weights: NativeWeightDesc[] = m.weights.map((w) => ({ name: w.name, file: w.file, offset: w.offset, nbytes: w.nbytes, dtype: w.dtype, shape: w.shape }));
  const cfg = nativeModelConfig(m.spec);

  const written: Record<string, number> = {};
  const filePaths = new Map<string, { base: 'root' | 'pack'; path: string; bytes: number; parts: number }>();
  const distinct = [...new Set(weights.map((w) => w.file))];
  for (const f of distinct) {
    const bytes = statSync(f).size;
    const rel = trackedInRepo(f);
    if (rel) {
      filePaths.set(f, { base: 'root', path: noSpace(rel), bytes, parts: 0 });
      continue;
    }
    const destName = noSpace(distinct.length === 1 ? `${name}.safetensors` : `${name}.${basename(f)}`);
    const dest = join(outDir, destName);
    let parts = 0;
    if (splitMb > 0 && bytes > splitMb * 1048576) {
      parts = writeParts(f, dest, splitMb * 1048576);
      if (existsSync(dest)) rmSync(dest);
      for (let i = 0; i < parts; i++) written[`${destName}.part${i}`] = statSync(`${dest}.part${i}`).size;
    } else {
      if (existsSync(dest)) rmSync(dest, { force: true });
      copyFileSync(f, dest);
      chmodSync(dest, 0o644); // the source may be read-only (shared models); a later run overwrites the copy
      for (let i = 0; existsSync(`${dest}.part${i}`); i++) rmSync(`${dest}.part${i}`);
      written[destName] = bytes;
    }
    filePaths.set(f, { base: 'pack', path: destName, bytes, parts });
  }

  // golden: input_ids int32 [B, S], logits fp32 [B, S, vocab]
  const h = readSafetensorsHeader(goldenFile);
  const idsInfo = h.tensors.get('input_ids');
  const logitsInfo = h.tensors.get('logits');
  if (!idsInfo || !logitsInfo) fail(`${goldenFile}: expected tensors "input_ids" and "logits"`);
  if (idsInfo.shape.length !== 2) fail(`${goldenFile}: input_ids: expected shape [B, S], received [${idsInfo.shape.join(', ')}]`);
  const [B, S] = idsInfo.shape;
  const ls = logitsInfo.shape;
  if (ls.length !== 3 || ls[0] !== B || ls[1] !== S || ls[2] !== cfg.vocab) {
    fail(`${goldenFile}: logits: expected shape [${B}, ${S}, ${cfg.vocab}], received [${ls.join(', ')}]`);
  }
  const ids = readTensorInt(idsInfo);
  for (const t of ids) if (!Number.isInteger(t) || t < 0 || t >= cfg.vocab) fail(`${goldenFile}: input_ids: expected token ids in 0..${cfg.vocab - 1}, received ${t}`);
  const logits = readTensorF32(logitsInfo);
  const goldenName = `${name}.golden.bin`;
  const ids32 = Int32Array.from(ids);
  const bin = Buffer.concat([Buffer.from(ids32.buffer, ids32.byteOffset, ids32.byteLength), Buffer.from(logits.buffer, logits.byteOffset, logits.byteLength)]);
  writeFileSync(join(outDir, goldenName), bin);
  written[goldenName] = bin.length;

  const lines: string[] = [
    '# polar golden pack, written by bench/gpu/pack-goldens.ts, read by kernels/tests/cuda_golden_test.cu',
    `# source: ${m.dir}; golden: ${goldenFile}`,
    '# paths: "root <p>" = relative to the repository root (cuda_golden_test --root DIR), "pack <p>" = relative to this file\'s folder',
    'polar-golden-pack 1',
    `model ${name}`,
    `dtype ${m.dtype}`,
  ];
  for (const [k, v] of Object.entries(cfg)) lines.push(`config ${k} ${String(v)}`);
  for (const f of filePaths.values()) lines.push(`file ${f.base} ${f.path} ${f.bytes} ${f.parts}`);
  for (const w of weights) {
    const f = filePaths.get(w.file)!;
    if (w.shape.length > 4) fail(`${w.file}: weight ${w.name}: expected at most 4 dimensions, received [${w.shape.join(', ')}]`);
    lines.push(`weight ${noSpace(w.name)} ${f.base} ${f.path} ${w.offset} ${w.nbytes} ${w.dtype} ${w.shape.length} ${w.shape.join(' ')}`);
  }
  lines.push(`golden pack ${goldenName} ${B} ${S} ${cfg.vocab}`);
  const packText = lines.join('\n') + '\n';
  writeFileSync(join(outDir, `${name}.pack`), packText);
  written[`${name}.pack`] = Buffer.byteLength(packText);

  const packBytes = Object.values(written).reduce((a, b) => a + b, 0);
  summary.push({ model: name, packBytes, files: written });
  console.log(JSON.stringify({ model: name, dir: m.dir, golden: goldenFile, weights: [...filePaths.values()].map((f) => `${f.base}:${f.path}${f.parts ? ` (${f.parts} parts)` : ''}`), bytes: packBytes, files: written }));
}
const total = summary.reduce((a, s) => a + s.packBytes, 0);
console.log(JSON.stringify({ outDir, models: summary.length, bytes: total }));
