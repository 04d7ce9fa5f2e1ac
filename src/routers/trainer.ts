// Training of one layer's routers: the MLP router (ReLU models) and the head router, in one pass over the
// layer's activations per epoch (both routers see the same shuffled batches), evaluated on a validation
// split held out by sequence, with early stopping and best-epoch selection per router, and a resumable
// state written atomically after every epoch.
import { existsSync, mkdirSync } from 'node:fs';
import { createHash } from 'node:crypto';
import type { LayerActivations } from '../arrow/types.ts';
import { PolarError } from '../errors.ts';
import type { NativeOps } from '../runtime/ops.ts';
import { tf, type NamedTensorMap, type Scalar, type Tensor2D } from '../tfjs/tf.ts';
import { native } from '../runtime/binding.ts';
import { ThreadTuner } from './threads.ts';
import { NATIVE_BACKEND } from '../tfjs/native-backend.ts';
import {
  CHECKPOINT_FORMAT,
  CHECKPOINT_VERSION,
  checkpointFile,
  layerDir,
  metricsFile,
  readCheckpoint,
  readState,
  removeIfExists,
  stateFile,
  writeCheckpoint,
  writeState,
  writeTextAtomic,
  type CheckpointMeta,
  type RouterState,
  type TrainState,
} from './checkpoint.ts';
import { LayerData, headLabels, headTopK, layoutOf, unpackBitsJs, type RowLayout } from './data.ts';
import { weightedBce, negativeWeight } from './loss.ts';
import { EvalAccumulator, groupRecall, kForRecall, kGrid, type EvalResult } from './metrics.ts';
import { HeadRouter, MlpRouter, type RouterModel } from './model.ts';
import { AdamW } from './optimizer.ts';
import { Rng } from './rng.ts';

export interface TrainOptions {
  /** MLP router rank r (default min(1024, hidden)) */
  rank?: number;
  lr: number;
  weightDecay: number;
  batch: number;
  epochs: number;
  /** stop a router after this many epochs without an improvement of its selection metric > minDelta */
  patience: number;
  /** smallest change of the selection metric (MLP: F1, heads: recall) that counts as an improvement */
  minDelta: number;
  /** fraction of sequences held out for validation */
  valFraction: number;
  seed: number;
  /** fraction of heads labelled important per token */
  headTopFraction: number;
  /** which routers to train */
  routers: 'both' | 'mlp' | 'attn';
  /** memory for the shuffle buffer (MiB) */
  shuffleBufferMiB: number;
  /** rows per validation forward pass */
  evalBlock: number;
}

export const TRAIN_DEFAULTS: TrainOptions = {
  lr: 1e-4,
  weightDecay: 0.01,
  batch: 64,
  epochs: 20,
  patience: 3,
  minDelta: 1e-3,
  valFraction: 0.1,
  seed: 0,
  headTopFraction: 0.5,
  routers: 'both',
  shuffleBufferMiB: 256,
  evalBlock: 1024,
};

/** One line of metrics.jsonl. */
export interface EpochMetrics {
  layer: number;
  router: 'mlp' | 'attn';
  epoch: number;
  /** mean training loss of the epoch */
  loss: number;
  valLoss: number;
  precision: number;
  recall: number;
  f1: number;
  predDensity: number;
  trueDensity: number;
  /** mean per-token recall of the true positives by the router's top k: MLP on a k grid, attn for k = 1..H */
  topk: { k: number; recall: number; microRecall: number }[];
  /** MLP: smallest grid k with mean top-k recall >= 0.99 (and its fraction of ffn) */
  k99?: number | null;
  k99Fraction?: number | null;
  /** attn: mean recall of the true top heads by the router's top heads (as many as the true ones) */
  headRecall?: number;
  /** attn: fewest router-ranked heads that hold >= 90% of the true top heads (mean over tokens) */
  headK90?: number | null;
  /** attn, GQA: the same for KV groups */
  groupRecall?: number;
  /** the value best-epoch selection uses (MLP: f1; attn: headRecall) */
  score: number;
  best: boolean;
  trainRows: number;
  valRows: number;
  samplesPerSec: number;
  /** wall time of the epoch: training and validation */
  seconds: number;
  /** of which validation */
  evalSeconds: number;
  /** native threads in use at the end of the epoch (tuned between 1 and the maximum), null without native ops */
  threads: number | null;
  backend: string;
}

export interface LayerResult {
  layer: number;
  file: string;
  skipped: boolean;
  mlp: { bestEpoch: number; metrics: Record<string, unknown> } | null;
  attn: { bestEpoch: number; metrics: Record<string, unknown> } | null;
  epochs: number;
  seconds: number;
}

export interface TrainContext {
  outDir: string;
  backend: string;
  ops: NativeOps | null;
  log: (line: string) => void;
  /** checked between batches; when it returns true training stops with an 'interrupted' error */
  shouldStop?: () => boolean;
}

interface RouterRun {
  name: 'mlp' | 'attn';
  model: RouterModel & { flopsPerSample(train: boolean): number };
  opt: AdamW;
  posWeight: number;
  negWeight: number;
  state: Omit<RouterState, 'current' | 'm' | 'v' | 'shapes'>;
  lossSum: number;
  lossRows: number;
}

function fingerprintOf(layer: LayerActivations, o: TrainOptions, rank: number): string {
  const m = layer.meta;
  const data = { layer: layer.layer, rows: layer.rows, configSha256: m.configSha256, weightsSha256: m.weightsSha256, corpusSha256: m.corpusSha256, tokenStart: m.tokenStart, tokenEnd: m.tokenEnd, schemaVersion: m.schemaVersion };
  const opts = { ...o, rank };
  return createHash('sha256').update(JSON.stringify({ v: CHECKPOINT_VERSION, data, opts })).digest('hex').slice(0, 32);
}

function bceSum(ops: NativeOps | null, z: Float32Array, y: Float32Array, pw: number, nw: number): number {
  if (ops) return ops.bceLogits(z, y, pw, nw, 0, null);
  let s = 0;
  for (let i = 0; i < z.length; i++) {
    const v = z[i];
    const sp = Math.max(v, 0) + Math.log1p(Math.exp(-Math.abs(v)));
    s += pw * y[i] * (sp - v) + nw * (1 - y[i]) * sp;
  }
  return s;
}

export function resolveRank(hidden: number, rank?: number): number {
  return rank ?? Math.min(1024, hidden);
}

/** Trains (or resumes, or skips when finished) the routers of one layer. */
export async function trainLayer(layer: LayerActivations, opts: TrainOptions, ctx: TrainContext): Promise<LayerResult> {
  const t0 = performance.now();
  const l = layer.layer;
  const meta = layer.meta;
  const L: RowLayout = layoutOf(layer);
  const where = `layer ${l} activations`;
  const wantMlp = opts.routers !== 'attn' && L.ffn > 0;
  const wantAttn = opts.routers !== 'mlp';
  const rank = resolveRank(L.hidden, opts.rank);
  const fp = fingerprintOf(layer, opts, wantMlp ? rank : 0);
  const dir = layerDir(ctx.outDir, l);
  const ckFile = checkpointFile(ctx.outDir, l);
  const stFile = stateFile(ctx.outDir, l);
  mkdirSync(dir, { recursive: true });

  if (existsSync(ckFile)) {
    const ck = readCheckpoint(ckFile, { tensors: false });
    if (ck.meta.fingerprint === fp) {
      ctx.log(`layer ${l}: done already (${ckFile})`);
      removeIfExists(stFile);
      return { layer: l, file: ckFile, skipped: true, mlp: ck.meta.mlp, attn: ck.meta.attn, epochs: 0, seconds: 0 };
    }
    throw new PolarError(
      'bad-input',
      `${ckFile}: fingerprint: expected ${fp} (these options and activations), received ${ck.meta.fingerprint} (trained with other options or data); remove the folder or pass --fresh`,
      { file: ckFile, field: 'fingerprint' },
    );
  }

  const data = await LayerData.open(layer, L, { seed: opts.seed, valFraction: opts.valFraction }, opts.shuffleBufferMiB * 1024 * 1024, where);
  const stats = data.stats;
  if (stats.train < 1 || stats.val < 1) {
    throw new PolarError(
      'bad-input',
      `${where}: expected training and validation rows (split by sequence with --val-fraction ${opts.valFraction}), received ${stats.train} training and ${stats.val} validation rows (too few sequences?)`,
    );
  }

  const kHeads = headTopK(L.heads, opts.headTopFraction);
  const runs: RouterRun[] = [];
  const freshState = () => ({ step: 0, bestEpoch: -1, bestScore: -Infinity, refScore: -Infinity, badEpochs: 0, stopped: false, bestMetrics: null, best: [] as Float32Array[] });
  if (wantMlp) {
    const meanLabel = stats.trainPositives / (stats.train * L.ffn);
    const w = negativeWeight(meanLabel);
    const model = new MlpRouter(L.hidden, rank, L.ffn, Rng.for('init', opts.seed, l, 'mlp'));
    runs.push({ name: 'mlp', model, opt: new AdamW({ lr: opts.lr, weightDecay: opts.weightDecay }), posWeight: 1 - w, negWeight: w, state: freshState(), lossSum: 0, lossRows: 0 });
  }
  if (wantAttn) {
    const w = negativeWeight(kHeads / L.heads);
    const model = new HeadRouter(L.hidden, L.heads, Rng.for('init', opts.seed, l, 'attn'));
    runs.push({ name: 'attn', model, opt: new AdamW({ lr: opts.lr, weightDecay: opts.weightDecay }), posWeight: 1 - w, negWeight: w, state: freshState(), lossSum: 0, lossRows: 0 });
  }
  if (!runs.length) throw new PolarError('bad-input', `${where}: nothing to train (--routers ${opts.routers} and MLP activity "${meta.mlpActivity}")`);

  let startEpoch = 0;
  let history: EpochMetrics[] = [];
  if (existsSync(stFile)) {
    const st = readState(stFile);
    if (st.fingerprint === fp) {
      for (const r of runs) {
        const s = st.routers[r.name];
        if (!s) continue;
        r.model.load(s.current);
        r.opt.restore(r.model.variables(), s.current.map((_, i) => ({ m: s.m[i], v: s.v[i] })), s.step);
        r.state = { step: s.step, bestEpoch: s.bestEpoch, bestScore: s.bestScore ?? -Infinity, refScore: s.refScore ?? -Infinity, badEpochs: s.badEpochs, stopped: s.stopped, bestMetrics: s.bestMetrics, best: s.best };
      }
      startEpoch = st.epochs;
      history = st.history as unknown as EpochMetrics[];
      ctx.log(`layer ${l}: resuming after epoch ${startEpoch} (${stFile})`);
    } else {
      ctx.log(`layer ${l}: ignoring ${stFile} (written for other options or data)`);
    }
  }

  const mlpLabels = wantMlp ? new Float32Array(opts.batch * L.ffn) : null;
  const attnLabels = new Float32Array(Math.max(opts.batch, opts.evalBlock) * L.heads);
  const ks = wantMlp ? kGrid(L.ffn) : new Int32Array(0);
  const headKs = Int32Array.from({ length: L.heads }, (_, i) => i + 1);
  const groupSize = L.heads / Math.max(1, meta.kvHeads);
  const gqa = meta.kvHeads > 0 && meta.kvHeads < L.heads && Number.isInteger(groupSize);
  const kGroups = gqa ? headTopK(meta.kvHeads, opts.headTopFraction) : 0;

  const unpack = (bits: Uint8Array, rows: number, out: Float32Array) => {
    if (ctx.ops) ctx.ops.unpackBits(bits, rows, L.ffn, L.bitStride, out);
    else unpackBitsJs(bits, rows, L.ffn, L.bitStride, out);
    return out;
  };

  // One step of every active router on the same batch: the losses are summed so that one backward pass
  // serves all of them (their parameters are disjoint, so each gets exactly its own loss's gradient);
  // each router keeps its own AdamW state.
  const step = (active: RouterRun[], x: Tensor2D, ys: Tensor2D[], rows: number) => {
    const losses: Scalar[] = [];
    const vars = active.flatMap((r) => r.model.variables());
    const { value, grads } = tf.variableGrads(() => {
      let total: Scalar | null = null;
      active.forEach((r, i) => {
        const loss = weightedBce(r.model.logits(x), ys[i], r.posWeight, r.negWeight);
        losses.push(tf.keep(loss));
        total = total ? (tf.add(total, loss) as Scalar) : loss;
      });
      return total!;
    }, vars);
    for (const r of active) {
      const mine: NamedTensorMap = {};
      for (const v of r.model.variables()) mine[v.name] = grads[v.name];
      r.opt.applyGradients(mine);
    }
    const values = losses.map((t) => (t.dataSync() as Float32Array)[0]);
    value.dispose(); // (the loss itself when one router is active)
    tf.dispose(losses);
    tf.dispose(grads);
    active.forEach((r, i) => {
      const loss = values[i];
      if (!Number.isFinite(loss)) throw new PolarError('native', `layer ${l}: ${r.name} router: the training loss became ${loss} at step ${r.opt.step}`);
      r.lossSum += loss * rows;
      r.lossRows += rows;
    });
  };
  // the thread count only matters where the training math is native (polar-native)
  const tuned = !!ctx.ops && ctx.backend === NATIVE_BACKEND;
  const maxThreads = tuned ? native().buildInfo().threads : 1;
  const tuner = tuned ? new ThreadTuner((n) => native().setThreads(n), maxThreads) : null;

  let epoch = startEpoch;
  for (; epoch < opts.epochs; epoch++) {
    const active = runs.filter((r) => !r.state.stopped);
    if (!active.length) break;
    const te = performance.now();
    for (const r of active) {
      r.lossSum = 0;
      r.lossRows = 0;
    }
    let trainRows = 0;
    for await (const b of data.train(epoch, l, opts.batch)) {
      if (ctx.shouldStop?.()) throw new PolarError('interrupted', `layer ${l}: interrupted in epoch ${epoch + 1}; the next run resumes after epoch ${epoch}`);
      const rows = b.rows;
      const ts = performance.now();
      const x = tf.tensor2d(b.x.subarray(0, rows * L.hidden), [rows, L.hidden]);
      const ys = active.map((r) =>
        r.name === 'mlp'
          ? tf.tensor2d(unpack(b.bits!, rows, mlpLabels!).subarray(0, rows * L.ffn), [rows, L.ffn])
          : tf.tensor2d(headLabels(b.headNorm, rows, L.heads, kHeads, attnLabels).subarray(0, rows * L.heads), [rows, L.heads]),
      );
      step(active, x, ys, rows);
      tf.dispose(ys);
      tuner?.step(performance.now() - ts);
      x.dispose();
      trainRows += rows;
    }
    const trainSec = (performance.now() - te) / 1000;

    // ---- validation
    const evals = new Map<string, { acc: EvalAccumulator; loss: number; group: [number, number] }>();
    for (const r of active) {
      const cols = r.name === 'mlp' ? L.ffn : L.heads;
      evals.set(r.name, { acc: new EvalAccumulator(cols, r.name === 'mlp' ? ks : headKs, ctx.ops), loss: 0, group: [0, 0] });
    }
    const valF = new Float32Array(wantMlp ? opts.evalBlock * L.ffn : 0);
    for await (const b of data.val(opts.evalBlock)) {
      const rows = b.rows;
      const x = tf.tensor2d(b.x.subarray(0, rows * L.hidden), [rows, L.hidden]);
      for (const r of active) {
        const e = evals.get(r.name)!;
        const z = r.model.logits(x);
        const Z = z.dataSync() as Float32Array;
        if (r.name === 'mlp') {
          e.acc.add(Z, rows, { bits: b.bits!, stride: L.bitStride });
          e.loss += bceSum(ctx.ops, Z, unpack(b.bits!, rows, valF).subarray(0, rows * L.ffn), r.posWeight, r.negWeight);
        } else {
          const y = headLabels(b.headNorm, rows, L.heads, kHeads, attnLabels).subarray(0, rows * L.heads);
          e.acc.add(Z, rows, { f32: y });
          e.loss += bceSum(ctx.ops, Z, y, r.posWeight, r.negWeight);
          if (gqa) {
            const [s, n] = groupRecall(Z, b.headNorm, rows, L.heads, groupSize, kGroups);
            e.group[0] += s;
            e.group[1] += n;
          }
        }
        z.dispose();
      }
      x.dispose();
    }
    const seconds = (performance.now() - te) / 1000;

    for (const r of active) {
      const e = evals.get(r.name)!;
      const res: EvalResult = e.acc.result();
      const cols = r.name === 'mlp' ? L.ffn : L.heads;
      const m: EpochMetrics = {
        layer: l,
        router: r.name,
        epoch: epoch + 1,
        loss: r.lossRows ? r.lossSum / r.lossRows : NaN,
        valLoss: res.rows ? e.loss / (res.rows * cols) : NaN,
        precision: res.precision,
        recall: res.recall,
        f1: res.f1,
        predDensity: res.predDensity,
        trueDensity: res.trueDensity,
        topk: res.topk,
        score: 0,
        best: false,
        trainRows,
        valRows: res.rows,
        samplesPerSec: trainSec > 0 ? trainRows / trainSec : 0,
        seconds,
        evalSeconds: seconds - trainSec,
        threads: tuner?.current ?? null,
        backend: ctx.backend,
      };
      if (r.name === 'mlp') {
        m.k99 = kForRecall(res.topk, 0.99);
        m.k99Fraction = m.k99 === null ? null : m.k99 / L.ffn;
        m.score = res.f1;
      } else {
        m.headRecall = res.topk[kHeads - 1]?.recall ?? 0;
        m.headK90 = kForRecall(res.topk, 0.9);
        if (gqa) m.groupRecall = e.group[1] ? e.group[0] / e.group[1] : 0;
        m.score = m.headRecall;
      }
      const s = r.state;
      if (m.score > s.bestScore) {
        s.bestScore = m.score;
        s.bestEpoch = epoch + 1;
        s.best = r.model.snapshot();
        m.best = true;
        s.bestMetrics = summary(m);
      }
      // patience counts epochs since the last improvement larger than minDelta
      if (m.score > s.refScore + opts.minDelta) {
        s.refScore = m.score;
        s.badEpochs = 0;
      } else if (++s.badEpochs >= opts.patience) {
        s.stopped = true;
      }
      s.step = r.opt.step;
      history.push(m);
      const extra = r.name === 'mlp' ? `k99 ${m.k99 ?? '>ffn'}/${L.ffn}` : `head recall ${m.headRecall!.toFixed(4)} k90 ${m.headK90 ?? '>H'}/${L.heads}${gqa ? ` group recall ${m.groupRecall!.toFixed(4)}` : ''}`;
      ctx.log(
        `layer ${l} ${r.name.padEnd(4)} epoch ${epoch + 1}/${opts.epochs}: loss ${m.loss.toFixed(4)} val ${m.valLoss.toFixed(4)} ` +
          `P ${m.precision.toFixed(3)} R ${m.recall.toFixed(3)} F1 ${m.f1.toFixed(3)} ${extra} ` +
          `density ${m.predDensity.toFixed(3)}/${m.trueDensity.toFixed(3)} ${Math.round(m.samplesPerSec)} samples/s${m.best ? ' *' : ''}${s.stopped ? ' (stopping)' : ''}`,
      );
    }

    // ---- resumable state, then metrics (state first: a crash in between only loses a rewrite)
    const state: TrainState = { fingerprint: fp, epochs: epoch + 1, routers: {}, history: history as unknown as Record<string, unknown>[] };
    for (const r of runs) {
      const vars = r.model.variables();
      const mom = r.opt.moments(vars);
      state.routers[r.name] = {
        ...r.state,
        best: r.state.best.length ? r.state.best : r.model.snapshot(),
        current: r.model.snapshot(),
        m: mom.map((x) => x.m),
        v: mom.map((x) => x.v),
        shapes: vars.map((v) => v.shape.slice()),
      };
    }
    writeState(stFile, state);
    writeTextAtomic(metricsFile(ctx.outDir, l), history.map((h) => JSON.stringify(h)).join('\n') + '\n');
  }

  if (tuner && tuner.current !== maxThreads) native().setThreads(maxThreads);

  // ---- final checkpoint: best epoch of each router
  const tensors = [];
  for (const r of runs) {
    const best = r.state.best.length ? r.state.best : r.model.snapshot();
    const vars = r.model.variables();
    const names = r.model.names();
    for (let i = 0; i < vars.length; i++) tensors.push({ name: `layers.${l}.${names[i]}`, dtype: 'F32' as const, shape: vars[i].shape.slice(), data: best[i] });
  }
  const byName = (n: string) => runs.find((r) => r.name === n);
  const mlpRun = byName('mlp'), attnRun = byName('attn');
  const ckMeta: CheckpointMeta = {
    format: CHECKPOINT_FORMAT,
    version: CHECKPOINT_VERSION,
    layer: l,
    family: meta.family,
    hidden: L.hidden,
    ffn: meta.ffn,
    heads: L.heads,
    kvHeads: meta.kvHeads,
    configSha256: meta.configSha256,
    weightsSha256: meta.weightsSha256,
    corpusSha256: meta.corpusSha256,
    schemaVersion: meta.schemaVersion,
    selectionUnit: gqa ? 'kv-group' : 'head',
    groupSize: gqa ? groupSize : 1,
    rank: mlpRun ? rank : 0,
    headTopFraction: opts.headTopFraction,
    headTopK: kHeads,
    backend: ctx.backend,
    fingerprint: fp,
    options: { ...opts, rank: mlpRun ? rank : null },
    mlp: mlpRun ? { bestEpoch: mlpRun.state.bestEpoch, metrics: mlpRun.state.bestMetrics ?? {} } : null,
    attn: attnRun ? { bestEpoch: attnRun.state.bestEpoch, metrics: attnRun.state.bestMetrics ?? {} } : null,
  };
  writeCheckpoint(ckFile, ckMeta, tensors);
  removeIfExists(stFile);
  for (const r of runs) {
    r.model.dispose();
    r.opt.dispose();
  }
  const seconds = (performance.now() - t0) / 1000;
  ctx.log(`layer ${l}: wrote ${ckFile} (${seconds.toFixed(1)} s, backend ${ctx.backend})`);
  return { layer: l, file: ckFile, skipped: false, mlp: ckMeta.mlp, attn: ckMeta.attn, epochs: epoch, seconds };
}

/** Deterministic subset of an epoch's metrics for the checkpoint (no timings). */
function summary(m: EpochMetrics): Record<string, unknown> {
  const { samplesPerSec: _s, seconds: _t, evalSeconds: _e, backend: _b, best: _x, threads: _n, topk, ...rest } = m;
  return { ...rest, topk };
}
