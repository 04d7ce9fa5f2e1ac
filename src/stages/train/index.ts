// The train stage: from the collected activations of a model, train per layer the MLP router (ReLU models)
// and the head router, writing one checkpoint folder per layer (src/routers/checkpoint.ts) plus, at the end,
// train.json (summary) and metrics.jsonl (every layer's epochs) in the output folder.
//
// Layers are independent units: with jobs > 1 they are trained in parallel worker processes (worker.ts), one
// layer at a time per worker, each with cores / jobs native threads; a cluster scheduler can run the same
// unit (`polar train --layers L`) elsewhere. Finished layers are skipped and an unfinished one resumes from
// its last completed epoch.
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { fork, type ChildProcess } from 'node:child_process';
import { join, resolve } from 'node:path';
import type { ActivationSet, LayerActivations } from '../../arrow/types.ts';
import { openActivations } from '../../arrow/reader.ts';
import { PolarError, badArg, badInput } from '../../errors.ts';
import { modelIdentity } from '../../model/identity.ts';
import { nativeOps } from '../../runtime/ops.ts';
import { projectRoot } from '../../runtime/binding.ts';
import { BACKEND_CHOICES, selectBackend, type SelectedBackend } from '../../tfjs/backends.ts';
import { layerDir, metricsFile, writeTextAtomic } from '../../routers/checkpoint.ts';
import { TRAIN_DEFAULTS, trainLayer, type LayerResult, type TrainOptions } from '../../routers/trainer.ts';
import { optionReader } from '../../pipeline/options.ts';
import type { FingerprintContext, OptionsWhere, StageContext, StageResult } from '../../pipeline/types.ts';

export interface TrainRunOptions extends Partial<TrainOptions> {
  /** folder of activation shards (collect's output), or an ActivationSet (tests, benchmarks) */
  activations: string | ActivationSet;
  out: string;
  /** layers to train (default: every collected layer but 0, which stays dense) */
  layers?: number[];
  /** force a TensorFlow.js backend (see src/tfjs/backends.ts) */
  backend?: string;
  /** parallel worker processes (needs a folder of activations) */
  jobs?: number;
  /** discard earlier results in `out` */
  fresh?: boolean;
  /** model folder: the shards must come from this model */
  model?: string;
  log?: (line: string) => void;
  shouldStop?: () => boolean;
}

export interface TrainSummary {
  format: 'polar-train-summary';
  version: 1;
  backend: string;
  layers: { layer: number; file: string; mlp: LayerResult['mlp']; attn: LayerResult['attn'] }[];
}

export const TRAIN_SUMMARY = 'train.json';

/** Opens collect's shards through the project's Arrow reader (which names the file of any bad shard). */
export function openActivationDir(dir: string, modelDir?: string): ActivationSet {
  return openActivations(dir, modelDir ? { expect: modelIdentity(resolve(modelDir)) } : {});
}

/** Shards must agree with each other and with the model they claim to come from. */
function checkIdentity(set: ActivationSet, layers: number[], modelDir?: string): void {
  const first = set.layer(layers[0]);
  const where = (l: LayerActivations) => `${set.dir} (layer ${l.layer})`;
  for (const l of layers) {
    const la = set.layer(l);
    const m = la.meta;
    for (const k of ['schemaVersion', 'configSha256', 'weightsSha256', 'hidden', 'heads', 'kvHeads', 'family'] as const) {
      if (m[k] !== first.meta[k]) throw badInput(where(la), k, `${JSON.stringify(first.meta[k])} like layer ${first.layer}`, m[k]);
    }
  }
  if (modelDir) {
    const id = modelIdentity(resolve(modelDir));
    for (const k of ['configSha256', 'weightsSha256'] as const) {
      if (first.meta[k] !== id[k]) {
        throw badInput(where(first), k, `${id[k]} (the model in ${modelDir})`, `${first.meta[k]} (activations of another model)`, true);
      }
    }
  }
}

function resolveOptions(o: TrainRunOptions): TrainOptions {
  const t: TrainOptions = { ...TRAIN_DEFAULTS };
  for (const k of Object.keys(TRAIN_DEFAULTS) as (keyof TrainOptions)[]) if (o[k] !== undefined) (t as unknown as Record<string, unknown>)[k] = o[k];
  if (o.rank !== undefined) t.rank = o.rank;
  const pos = (name: string, v: number, int = true) => {
    if (!(v > 0) || (int && !Number.isInteger(v))) throw badArg(name, int ? 'a positive integer' : 'a positive number', v);
  };
  pos('batch', t.batch);
  pos('epochs', t.epochs);
  pos('patience', t.patience);
  if (!(t.minDelta >= 0)) throw badArg('minDelta', 'a number >= 0', t.minDelta);
  pos('lr', t.lr, false);
  pos('evalBlock', t.evalBlock);
  pos('shuffleBufferMiB', t.shuffleBufferMiB, false);
  if (t.rank !== undefined) pos('rank', t.rank);
  if (!(t.weightDecay >= 0)) throw badArg('weightDecay', 'a number >= 0', t.weightDecay);
  if (!(t.valFraction > 0 && t.valFraction < 1)) throw badArg('valFraction', 'a number in (0, 1)', t.valFraction);
  if (!(t.headTopFraction > 0 && t.headTopFraction <= 1)) throw badArg('headTopFraction', 'a number in (0, 1]', t.headTopFraction);
  if (!Number.isInteger(t.seed) || t.seed < 0) throw badArg('seed', 'an integer >= 0', t.seed);
  if (!['both', 'mlp', 'attn'].includes(t.routers)) throw badArg('routers', 'one of both, mlp, attn', t.routers);
  return t;
}

/** Trains the routers of the selected layers; returns the summary also written to out/train.json. */
export async function trainRouters(o: TrainRunOptions): Promise<TrainSummary> {
  const log = o.log ?? ((s: string) => process.stderr.write(`${s}\n`));
  const opts = resolveOptions(o);
  const out = resolve(o.out);
  const set = typeof o.activations === 'string' ? openActivationDir(o.activations, o.model) : o.activations;
  const layers = (o.layers ?? set.layers.filter((l) => l !== 0)).slice().sort((a, b) => a - b);
  if (!layers.length) throw badArg('--layers', `a non-empty subset of the collected layers (${set.layers.join(', ')})`, o.layers ?? []);
  for (const l of layers) if (!set.layers.includes(l)) throw badArg('--layers', `layers among those collected in ${set.dir} (${set.layers.join(', ')})`, l);
  checkIdentity(set, layers, o.model);
  const jobs = o.jobs ?? 1;
  if (!Number.isInteger(jobs) || jobs < 1) throw badArg('--jobs', 'a positive integer', jobs);
  if (jobs > 1 && typeof o.activations !== 'string') throw badArg('--jobs', '1 for in-memory activations (workers read the shards from a folder)', jobs);

  if (o.fresh) for (const l of layers) rmSync(layerDir(out, l), { recursive: true, force: true });
  mkdirSync(out, { recursive: true });

  // The parent selects the backend too: a forced backend that cannot load fails before any work, and the
  // choice (with why the preferred ones did not load) is printed once.
  const sel = await selectBackend(o.backend);
  for (const s of sel.skipped) log(`train: backend ${s.name} not used: ${s.reason}`);
  log(`train: TensorFlow.js backend ${sel.name} (tf '${sel.tfName}'), ${layers.length} layer(s), ${jobs} job(s)`);

  let results: LayerResult[];
  if (jobs === 1 || layers.length === 1) {
    results = [];
    const ops = sel.name === 'polar-native' ? nativeOps() : null;
    // outside polar-native the native ops still speed up label unpacking and evaluation when they load
    const evalOps = ops ?? nativeOps();
    for (const l of layers) {
      results.push(await trainLayer(set.layer(l), opts, { outDir: out, backend: sel.name, ops: evalOps, log, shouldStop: o.shouldStop }));
    }
  } else {
    results = await runWorkers(o.activations as string, out, layers, opts, sel, Math.min(jobs, layers.length), log, o.shouldStop);
  }
  results.sort((a, b) => a.layer - b.layer);

  const summary: TrainSummary = {
    format: 'polar-train-summary',
    version: 1,
    backend: sel.name,
    layers: results.map((r) => ({ layer: r.layer, file: join(`layer-${String(r.layer).padStart(3, '0')}`, 'router.safetensors'), mlp: r.mlp, attn: r.attn })),
  };
  writeTextAtomic(join(out, TRAIN_SUMMARY), JSON.stringify(summary, null, 2) + '\n');
  const lines: string[] = [];
  for (const l of layers) {
    const f = metricsFile(out, l);
    if (existsSync(f)) lines.push(...readFileSync(f, 'utf8').split('\n').filter(Boolean));
  }
  writeTextAtomic(join(out, 'metrics.jsonl'), lines.length ? lines.join('\n') + '\n' : '');
  return summary;
}

// ---- worker pool ---------------------------------------------------------------------------------------

export interface WorkerJob {
  type: 'layer';
  activations: string;
  out: string;
  layer: number;
  opts: TrainOptions;
  backend: string;
}
export type WorkerReply =
  | { type: 'log'; line: string }
  | { type: 'done'; result: LayerResult }
  | { type: 'error'; message: string; kind: string; exitCode: number };

async function runWorkers(
  activations: string,
  out: string,
  layers: number[],
  opts: TrainOptions,
  sel: SelectedBackend,
  jobs: number,
  log: (s: string) => void,
  shouldStop?: () => boolean,
): Promise<LayerResult[]> {
  const threads = Math.max(1, Math.floor(availableParallelism() / jobs));
  const queue = layers.slice();
  const results: LayerResult[] = [];
  const children: ChildProcess[] = [];
  let failure: PolarError | null = null;
  const stopTimer = shouldStop
    ? setInterval(() => {
        if (shouldStop() && !failure) {
          failure = new PolarError('interrupted', 'train: interrupted; the next run resumes each layer after its last completed epoch');
          for (const c of children) c.kill('SIGTERM');
        }
      }, 200)
    : null;
  const runOne = (): Promise<void> =>
    new Promise((resolveWorker) => {
      const child = fork(join(projectRoot, 'bin', 'run-ts.js'), [join(projectRoot, 'src', 'stages', 'train', 'worker.ts')], {
        env: { ...process.env, POLAR_THREADS: String(threads) },
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      children.push(child);
      let current: number | null = null;
      const next = () => {
        const l = failure ? undefined : queue.shift();
        if (l === undefined) {
          current = null;
          child.send({ type: 'exit' });
          return;
        }
        current = l;
        const job: WorkerJob = { type: 'layer', activations, out, layer: l, opts, backend: sel.name };
        child.send(job);
      };
      child.on('message', (m: WorkerReply) => {
        if (m.type === 'log') log(m.line);
        else if (m.type === 'done') {
          results.push(m.result);
          next();
        } else if (m.type === 'error') {
          failure ??= new PolarError(m.kind as never, m.message, { exitCode: m.exitCode });
          child.send({ type: 'exit' });
        }
      });
      child.on('exit', (code, signal) => {
        if (current !== null && !failure) failure = new PolarError('native', `train: the worker training layer ${current} exited (${signal ?? `code ${code}`}) before finishing it`);
        resolveWorker();
      });
      next();
    });
  try {
    await Promise.all(Array.from({ length: jobs }, () => runOne()));
  } finally {
    if (stopTimer) clearInterval(stopTimer);
  }
  if (failure) throw failure;
  return results;
}

// ---- pipeline stage (src/pipeline/types.ts) -------------------------------------------------------------

/** The stage's YAML options (snake_case, as in pipelines/*.yaml), resolved. */
export interface TrainStageOptions {
  layers: number[] | null;
  backend: string | null;
  jobs: number;
  rank: number | null;
  lr: number;
  weight_decay: number;
  batch: number;
  epochs: number;
  patience: number;
  min_delta: number;
  val_fraction: number;
  seed: number;
  head_top_fraction: number;
  routers: 'both' | 'mlp' | 'attn';
  shuffle_buffer_mib: number;
  eval_block: number;
}

export const description = 'train per layer the MLP router (ReLU models) and the head router with TensorFlow.js';
export const inputs = ['collect'] as const;
/** bump when a change makes earlier checkpoints stale */
export const version = 1;

export function options(raw: Record<string, unknown>, where: OptionsWhere): TrainStageOptions {
  const r = optionReader(raw, where);
  const d = TRAIN_DEFAULTS;
  const o: TrainStageOptions = {
    layers: r.optIntList('layers', 0) ?? null,
    backend: r.optOneOf('backend', BACKEND_CHOICES) ?? null,
    jobs: r.int('jobs', 1, 1, 256),
    rank: r.optInt('rank', 1) ?? null,
    lr: r.num('lr', d.lr, 0),
    weight_decay: r.num('weight_decay', d.weightDecay, 0),
    batch: r.int('batch', d.batch, 1),
    epochs: r.int('epochs', d.epochs, 1),
    patience: r.int('patience', d.patience, 1),
    min_delta: r.num('min_delta', d.minDelta, 0, 1),
    val_fraction: r.num('val_fraction', d.valFraction, 0, 1),
    seed: r.int('seed', d.seed, 0),
    head_top_fraction: r.num('head_top_fraction', d.headTopFraction, 0, 1),
    routers: r.oneOf('routers', ['both', 'mlp', 'attn'] as const, d.routers),
    shuffle_buffer_mib: r.num('shuffle_buffer_mib', d.shuffleBufferMiB, 1),
    eval_block: r.int('eval_block', d.evalBlock, 1),
  };
  r.done();
  if (!(o.lr > 0)) throw badInput(where.file, `${where.field}.lr`, 'a number > 0', o.lr);
  if (!(o.val_fraction > 0 && o.val_fraction < 1)) throw badInput(where.file, `${where.field}.val_fraction`, 'a number in (0, 1)', o.val_fraction);
  if (!(o.head_top_fraction > 0)) throw badInput(where.file, `${where.field}.head_top_fraction`, 'a number in (0, 1]', o.head_top_fraction);
  return o;
}

/** The backend decides the last bits of the weights: the one that would be used is part of the key. */
export async function fingerprint(ctx: FingerprintContext<TrainStageOptions>): Promise<unknown> {
  const sel = await selectBackend(ctx.options.backend ?? undefined);
  return { backend: sel.name };
}

export async function run(ctx: StageContext<TrainStageOptions>): Promise<StageResult> {
  const o = ctx.options;
  const collect = ctx.inputs.collect;
  if (!collect) throw new PolarError('bad-input', `stage ${ctx.stage}: expected the output of a collect stage before it in the pipeline, received none`);
  const task = ctx.progress('layers');
  const model = ctx.model();
  const set = openActivations(collect.dir, { expect: model.identity() });
  const layers = o.layers ?? set.layers.filter((l) => l !== 0);
  task.start(layers.length);
  const summary = await trainRouters({
    activations: collect.dir,
    out: ctx.dir,
    layers,
    backend: o.backend ?? undefined,
    jobs: o.jobs,
    rank: o.rank ?? undefined,
    lr: o.lr,
    weightDecay: o.weight_decay,
    batch: o.batch,
    epochs: o.epochs,
    patience: o.patience,
    minDelta: o.min_delta,
    valFraction: o.val_fraction,
    seed: o.seed,
    headTopFraction: o.head_top_fraction,
    routers: o.routers,
    shuffleBufferMiB: o.shuffle_buffer_mib,
    evalBlock: o.eval_block,
    model: model.dir,
    log: (line) => {
      if (/: wrote |: done already/.test(line)) task.advance(1);
      ctx.log(line);
    },
    shouldStop: () => ctx.signal.aborted,
  });
  task.end(`${summary.layers.length} layer(s) on ${summary.backend}`);
  return { summary: summary as unknown as Record<string, unknown> };
}
