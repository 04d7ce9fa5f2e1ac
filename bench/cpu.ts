// npm run bench:cpu — CPU speed in one run, JSON lines on stdout:
//  1. GEMM GFLOP/s of the native kernels (kernels/tests/cpu_gemm_bench.cc) beside numpy/OpenBLAS
//     (bench/gemm_numpy.py) on the same shapes, measured back to back, with the ratio;
//  2. prefill and decode tokens/s at batch 1 and 16 for small-opt and small-llama.
// Options: --skip-gemm, --skip-model, --reps N
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { cpus } from 'node:os';
import { loadModel } from '../src/model/index.ts';
import { openRuntimeModel } from '../src/runtime/index.ts';
import { projectRoot } from '../src/runtime/binding.ts';

const args = process.argv.slice(2);
const reps = Number(args[args.indexOf('--reps') + 1] ?? 3) || 3;
const emit = (o: Record<string, unknown>) => process.stdout.write(JSON.stringify(o) + '\n');
const machine = { cpu: cpus()[0]?.model, cores: cpus().length };

interface GemmRow { op: string; m: number; n: number; k: number; wdtype?: string; ms: number; gflops: number }

function jsonLines(out: string): GemmRow[] {
  return out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
}

function gemm(): void {
  const build = join(projectRoot, 'build');
  const r = spawnSync('cmake', ['--build', build, '--target', 'cpu_gemm_bench', '-j', '2'], { encoding: 'utf8' });
  if (r.status !== 0) {
    emit({ bench: 'gemm', error: `could not build cpu_gemm_bench: ${r.stderr || r.stdout}` });
    return;
  }
  const exe = join(build, 'ktests', 'cpu_gemm_bench');
  const best = new Map<string, GemmRow>();
  const bestNp = new Map<string, GemmRow>();
  const key = (x: GemmRow) => `${x.op}|${x.m}|${x.n}|${x.k}|${x.wdtype ?? 'f32'}`;
  const shapeKey = (x: GemmRow) => `${x.m}|${x.n}|${x.k}`;
  let numpy = true;
  for (let i = 0; i < reps; i++) {
    // alternate the two so that both see the same machine state
    const ours = spawnSync(exe, [], { encoding: 'utf8' });
    for (const row of jsonLines(ours.stdout)) if (!best.has(key(row)) || best.get(key(row))!.gflops < row.gflops) best.set(key(row), row);
    if (numpy) {
      const np = spawnSync('python3', [join(projectRoot, 'bench', 'gemm_numpy.py')], { encoding: 'utf8' });
      if (np.status !== 0) {
        numpy = false;
        emit({ bench: 'gemm', note: `numpy comparison skipped: ${(np.stderr || 'python3/numpy not available').split('\n').slice(-2).join(' ')}` });
      } else {
        for (const row of jsonLines(np.stdout)) if (!bestNp.has(shapeKey(row)) || bestNp.get(shapeKey(row))!.gflops < row.gflops) bestNp.set(shapeKey(row), row);
      }
    }
  }
  for (const row of best.values()) {
    const np = bestNp.get(shapeKey(row));
    emit({ bench: 'gemm', ...row, numpy_gflops: np?.gflops ?? null, ratio_vs_numpy: np ? Math.round((row.gflops / np.gflops) * 1000) / 1000 : null, ...machine });
  }
}

async function decode(dir: string): Promise<void> {
  const model = loadModel(dir);
  const rt = openRuntimeModel(model, { backend: 'cpu' });
  const prompt = 128;
  const steps = 64;
  for (const batch of [1, 16]) {
    const s = rt.session({ maxSeqs: batch, maxLen: prompt + steps });
    const rows = Array.from({ length: batch }, (_, slot) => ({ slot, tokens: Int32Array.from({ length: prompt }, (_, i) => 4 + ((i * 31 + slot * 7) % (model.spec.vocab - 4))) }));
    let t = performance.now();
    await s.forward(rows, { logits: 'last' });
    const prefillS = (performance.now() - t) / 1000;
    t = performance.now();
    for (let i = 0; i < steps; i++) {
      await s.forward(rows.map((r) => ({ slot: r.slot, tokens: Int32Array.of(5 + i) })), { logits: 'all' });
    }
    const decodeS = (performance.now() - t) / 1000;
    emit({
      bench: 'model',
      model: dir.split('/').pop(),
      batch,
      prompt_tokens: prompt,
      decode_steps: steps,
      prefill_tokens_per_s: Math.round((batch * prompt) / prefillS),
      decode_tokens_per_s: Math.round((batch * steps) / decodeS),
      decode_ms_per_step: Math.round((decodeS / steps) * 1e5) / 100,
      ...machine,
    });
    s.dispose();
  }
  rt.dispose();
}

if (!args.includes('--skip-gemm')) gemm();
if (!args.includes('--skip-model')) {
  for (const m of ['small-opt', 'small-llama']) {
    const dir = join(projectRoot, 'data', 'models', m);
    if (existsSync(dir)) await decode(dir);
  }
}
