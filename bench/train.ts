// `npm run bench:train`: one router training step (forward, backward, AdamW) per TensorFlow.js backend that
// loads, on small-opt's router shapes and an OPT-6.7B-shaped MLP router, with synthetic data. Reports
// ms/step, samples/s and GFLOP/s (the router's useful FLOPs: forward 2·B·(d·r + r·f), backward twice that
// minus the input gradient), and the speedup of each backend over plain wasm and cpu. JSON on stdout
// (or --out FILE); progress on stderr.
//   node bin/run-ts.js bench/train.ts [--backends polar-native,wasm,cpu] [--shapes small-opt-mlp,...]
//                                     [--min-seconds 2] [--out bench.json]
// For scale: PyTorch on an H100 takes 1.49 ms for the OPT-6.7B step (the issue's figure).
import { writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { tf, type Tensor2D } from '../src/tfjs/tf.ts';
import { BACKEND_CHOICES, selectBackend, type BackendChoice } from '../src/tfjs/backends.ts';
import { HeadRouter, MlpRouter } from '../src/routers/model.ts';
import { AdamW } from '../src/routers/optimizer.ts';
import { weightedBce } from '../src/routers/loss.ts';
import { Rng } from '../src/routers/rng.ts';
import { native } from '../src/runtime/binding.ts';

interface Shape {
  name: string;
  kind: 'mlp' | 'attn';
  d: number;
  r: number;
  f: number;
  batch: number;
}

const SHAPES: Shape[] = [
  { name: 'small-opt-mlp', kind: 'mlp', d: 256, r: 256, f: 1024, batch: 64 },
  { name: 'small-opt-attn', kind: 'attn', d: 256, r: 0, f: 4, batch: 64 },
  { name: 'opt-6.7b-mlp', kind: 'mlp', d: 4096, r: 1024, f: 16384, batch: 64 },
];

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const minSeconds = Number(arg('--min-seconds') ?? 2);
const wantBackends = (arg('--backends')?.split(',') ?? [...BACKEND_CHOICES]) as BackendChoice[];
const wantShapes = arg('--shapes')?.split(',') ?? SHAPES.map((s) => s.name);
const log = (s: string) => process.stderr.write(`${s}\n`);
const loadStart = loadavg();

interface Result {
  backend: string;
  shape: string;
  dims: string;
  batch: number;
  steps: number;
  msPerStep: number;
  samplesPerSec: number;
  gflops: number;
  flopsPerStep: number;
  /** spread of the timed chunks (min..max ms/step) */
  msRange: [number, number];
  /** native threads (polar-native only) */
  threads?: number | null;
}

function benchShape(backend: string, s: Shape): Result {
  const rng = new Rng(7);
  const model = s.kind === 'mlp' ? new MlpRouter(s.d, s.r, s.f, rng) : new HeadRouter(s.d, s.f, rng);
  const opt = new AdamW();
  const x = tf.tensor2d(rng.uniform(new Float32Array(s.batch * s.d), 1), [s.batch, s.d]);
  const yv = new Float32Array(s.batch * s.f);
  for (let i = 0; i < yv.length; i++) yv[i] = rng.float() < (s.kind === 'mlp' ? 0.1 : 0.5) ? 1 : 0;
  const y = tf.tensor2d(yv, [s.batch, s.f]);
  const step = () => {
    const { value, grads } = tf.variableGrads(() => weightedBce(model.logits(x as Tensor2D), y as Tensor2D, 0.9, 0.1), model.variables());
    opt.applyGradients(grads);
    value.dataSync();
    value.dispose();
    tf.dispose(grads);
  };
  const flops = model.flopsPerSample(true) * s.batch;
  // warm up, and size the timed chunks from the first step
  let t = performance.now();
  step();
  const first = (performance.now() - t) / 1000;
  const warm = Math.min(3, Math.max(0, Math.floor(1 / Math.max(first, 1e-6)) - 1));
  for (let i = 0; i < warm; i++) step();
  const chunks = first > minSeconds / 2 ? 1 : 5;
  const perChunk = Math.max(1, Math.round(minSeconds / chunks / Math.max(first, 1e-5)));
  const times: number[] = [];
  for (let c = 0; c < chunks; c++) {
    t = performance.now();
    for (let i = 0; i < perChunk; i++) step();
    times.push((performance.now() - t) / perChunk);
  }
  x.dispose();
  y.dispose();
  model.dispose();
  opt.dispose();
  const sorted = times.slice().sort((a, b) => a - b);
  const ms = sorted[Math.floor(sorted.length / 2)];
  return {
    backend,
    shape: s.name,
    dims: s.kind === 'mlp' ? `${s.d}->${s.r}->${s.f}` : `${s.d}->${s.f}`,
    batch: s.batch,
    steps: chunks * perChunk,
    msPerStep: ms,
    samplesPerSec: (s.batch * 1000) / ms,
    gflops: flops / ms / 1e6,
    flopsPerStep: flops,
    msRange: [sorted[0], sorted[sorted.length - 1]],
  };
}

const results: Result[] = [];
const skipped: { backend: string; reason: string }[] = [];
for (const b of wantBackends) {
  try {
    await selectBackend(b);
  } catch (e) {
    skipped.push({ backend: b, reason: (e as Error).message });
    log(`${b}: not available: ${(e as Error).message.split('\n')[0].slice(0, 200)}`);
    continue;
  }
  // polar-native: at the machine's thread count and at one thread (what the trainer's tuner picks
  // between; on a machine busy with other work one thread can win)
  const maxThreads = b === 'polar-native' ? native().buildInfo().threads : 1;
  const threadCounts = b === 'polar-native' && maxThreads > 1 ? [maxThreads, 1] : [0];
  for (const th of threadCounts) {
    if (th) native().setThreads(th);
    const label = th && th !== maxThreads ? `${b}@${th}t` : b;
    for (const s of SHAPES.filter((x) => wantShapes.includes(x.name))) {
      const r = benchShape(label, s);
      r.threads = th || null;
      results.push(r);
      log(`${label.padEnd(16)} ${s.name.padEnd(15)} ${r.dims.padEnd(17)} B=${s.batch}: ${r.msPerStep.toFixed(3)} ms/step  ${Math.round(r.samplesPerSec)} samples/s  ${r.gflops.toFixed(1)} GFLOP/s  (${r.steps} steps)`);
    }
  }
  if (b === 'polar-native') native().setThreads(maxThreads);
}

const speedups: Record<string, Record<string, number>> = {};
for (const r of results) {
  for (const base of ['wasm', 'cpu']) {
    const b = results.find((q) => q.backend === base && q.shape === r.shape);
    if (b && r.backend !== 'wasm' && r.backend !== 'cpu') ((speedups[r.shape] ??= {})[`${r.backend}/${base}`] = b.msPerStep / r.msPerStep);
  }
}
let build: unknown = null;
try {
  build = native().buildInfo();
} catch {
  build = null;
}
const out = {
  bench: 'train-step',
  date: new Date().toISOString(),
  machine: { cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length, nativeBuild: build, polarThreads: process.env.POLAR_THREADS ?? null },
  note: 'one training step = forward + backward + AdamW on synthetic data; GFLOP/s counts the router GEMMs only; reference: PyTorch on an H100 takes 1.49 ms for opt-6.7b-mlp',
  /** 1/5/15-minute load averages when the run started and ended (the machine is shared: read timings with them) */
  loadAverage: { start: loadStart, end: loadavg() },
  results,
  speedups,
  skipped,
};
const json = JSON.stringify(out, null, 2);
const file = arg('--out');
if (file) writeFileSync(file, json + '\n');
process.stdout.write(json + '\n');
for (const [shape, s] of Object.entries(speedups)) log(`${shape}: ${Object.entries(s).map(([k, v]) => `${k} ${v.toFixed(1)}x`).join(', ')}`);
