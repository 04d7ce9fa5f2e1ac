// The calibrate stage's engine (also behind `polar calibrate`): from a model, its collected activations and
// its trained routers, the numbers the sparse runtime uses, written to <out>/calibration.json
// (src/artifact/calibration.ts):
//   1. MLP (ReLU models): per layer and batch size, the smallest k (granule multiple, <= ffn) whose top-k of
//      the summed router scores recalls >= target of the batch's true active-neuron union on held-out
//      tokens (src/calibrate/mlp.ts);
//   2. attention: per layer, the units (heads / KV groups) each token keeps, from a perplexity budget
//      measured by decoding calibration text with the routers (src/calibrate/heads.ts, fidelity.ts), or a
//      fixed fraction; the MLP recall target is searched among candidates at the same time.
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { ActivationSet } from '../../arrow/types.ts';
import { CALIBRATION_FORMAT, CALIBRATION_VERSION, writeCalibration, type CalibrationFile, type CalibrationHeadLayer, type CalibrationMlpLayer } from '../../artifact/calibration.ts';
import { mlpKFor } from '../../artifact/plan.ts';
import { modelIdentityDims } from '../../artifact/schema.ts';
import { packageVersion } from '../../artifact/writer.ts';
import { heldOutRows } from '../../calibrate/data.ts';
import { decodeEvaluator, prefillEvaluator, type LayerRouters } from '../../calibrate/fidelity.ts';
import { fixedHeads, searchHeadBudgets, type EvalConfig, type HeadSearchResult } from '../../calibrate/heads.ts';
import { layerTable, measureLayer, resolveMlpOptions, routerLogits, sampleCurve, type MlpCalibrationOptions, type MlpLayerCurves } from '../../calibrate/mlp.ts';
import { openCorpus, planSequences } from '../../corpus/index.ts';
import { badArg, badInput, PolarError } from '../../errors.ts';
import { loadModel, type LoadedModel } from '../../model/index.ts';
import type { ProgressTask } from '../../progress/index.ts';
import { listCheckpoints, readCheckpoint, type LoadedCheckpoint } from '../../routers/checkpoint.ts';
import { openRuntimeModel } from '../../runtime/index.ts';
import { nativeOps } from '../../runtime/ops.ts';

export const CALIBRATION_JSON = 'calibration.json';

export interface HeadCalibrationOptions {
  /** "fidelity" (default): search against the perplexity budget; "fixed": `fraction` of the units; "dense" */
  mode: 'fidelity' | 'fixed' | 'dense';
  /** fixed mode: share of units kept per sparse layer */
  fraction: number;
  /** sparse perplexity at most (1 + this) x dense on the calibration tokens */
  maxPplIncrease: number;
  /**
   * MLP recall target candidates searched with the heads (default: the MLP target and the stricter ones of
   * 0.995, 0.999: the target is a floor unless lower candidates are listed explicitly)
   */
  mlpTargets: number[] | null;
  minUnits: number;
  /** calibration text: a corpus source (src/corpus: default:train, a file) */
  corpus: string;
  textField: string;
  /** tokens of the corpus to skip first (default: the collected token count, so that the text follows it) */
  skipTokens: number | null;
  /** calibration tokens */
  tokens: number;
  window: number;
  /** windows decoded together: fidelity is judged at this batch size (MLP k of this batch size) */
  evalBatch: number;
  /** a layer's sweep stops once its perplexity increase exceeds this multiple of the budget */
  sweepStop: number;
  /** reference decode step of the work model that ranks feasible configurations: batch and context length */
  workBatch: number;
  workContext: number;
}

export const HEAD_DEFAULTS: HeadCalibrationOptions = {
  mode: 'fidelity',
  fraction: 0.5,
  maxPplIncrease: 0.01,
  mlpTargets: null,
  minUnits: 1,
  corpus: 'default:train',
  textField: 'text',
  skipTokens: null,
  tokens: 4096,
  window: 256,
  evalBatch: 1,
  sweepStop: 4,
  workBatch: 16,
  workContext: 1024,
};

export interface CalibrateOptions {
  model: string | LoadedModel;
  /** collect's folder, or an ActivationSet (tests) */
  activations: string | ActivationSet;
  /** the train stage's folder (layer-NNN/router.safetensors) */
  routers: string;
  out: string;
  mlp?: Partial<MlpCalibrationOptions> & { maxRows?: number; checkFraction?: number };
  heads?: Partial<HeadCalibrationOptions>;
  log?: (line: string) => void;
  progress?: ProgressTask;
  shouldStop?: () => boolean;
}

function checkIdentity(where: string, theirs: { configSha256: string; weightsSha256: string }, model: LoadedModel): void {
  const id = model.identity();
  for (const k of ['configSha256', 'weightsSha256'] as const) {
    if (theirs[k] !== id[k]) throw badInput(where, k, `${id[k]} (the model in ${model.dir})`, `${theirs[k]} (made from another model)`, true);
  }
}

async function openActivationSet(a: string | ActivationSet, model: LoadedModel): Promise<{ set: ActivationSet; tokens: number; corpusSha256: string }> {
  if (typeof a !== 'string') {
    const first = a.layer(a.layers[0]);
    return { set: a, tokens: first.rows, corpusSha256: first.meta.corpusSha256 };
  }
  const { openActivations } = await import('../../arrow/reader.ts');
  const dir = openActivations(a, { expect: model.identity() });
  return { set: dir, tokens: dir.tokens, corpusSha256: dir.meta.corpusSha256 };
}

function resolveHeads(o: Partial<HeadCalibrationOptions> | undefined): HeadCalibrationOptions {
  const h: HeadCalibrationOptions = { ...HEAD_DEFAULTS, ...Object.fromEntries(Object.entries(o ?? {}).filter(([, v]) => v !== undefined)) };
  if (!['fidelity', 'fixed', 'dense'].includes(h.mode)) throw badArg('heads mode', 'one of fidelity, fixed, dense', h.mode);
  if (!(h.fraction > 0 && h.fraction <= 1)) throw badArg('head fraction', 'a number in (0, 1]', h.fraction);
  if (!(h.maxPplIncrease >= 0)) throw badArg('max perplexity increase', 'a number >= 0', h.maxPplIncrease);
  for (const [n, v, min] of [['calibration tokens', h.tokens, 2], ['window', h.window, 2], ['eval batch', h.evalBatch, 1], ['work batch', h.workBatch, 1], ['work context', h.workContext, 1]] as const) {
    if (!Number.isInteger(v) || v < min) throw badArg(n, `an integer >= ${min}`, v);
  }
  if (h.mlpTargets) for (const t of h.mlpTargets) if (!(t > 0 && t <= 1)) throw badArg('MLP targets', 'recalls in (0, 1]', h.mlpTargets);
  if (h.skipTokens !== null && (!Number.isInteger(h.skipTokens) || h.skipTokens < 0)) throw badArg('skip tokens', 'an integer >= 0', h.skipTokens);
  return h;
}

/** Calibration windows: `tokens` tokens of the corpus after `skip`, cut as collect cuts sequences. */
export async function calibrationWindows(model: LoadedModel, source: string, textField: string, skip: number, tokens: number, window: number) {
  const corpus = openCorpus(source, { textField });
  const plan = await planSequences(corpus, model.tokenizer(), model.spec, { tokens: skip + tokens, seqLen: window });
  const out: Int32Array[] = [];
  let at = 0;
  for (const s of plan.sequences) {
    if (at >= skip && s.length >= 2) out.push(s);
    at += s.length;
  }
  if (!out.length) throw badInput(corpus.name, '(text)', `more than ${skip} tokens (calibration text follows the ${skip} collected tokens)`, `${plan.tokens} tokens`, true);
  return { windows: out, corpus };
}

export interface CalibrateResult {
  calibration: CalibrationFile;
  file: string;
  seconds: { mlp: number; heads: number; total: number };
}

export async function calibrate(o: CalibrateOptions): Promise<CalibrateResult> {
  const t0 = performance.now();
  const log = o.log ?? ((s: string) => process.stderr.write(`${s}\n`));
  const stop = () => {
    if (o.shouldStop?.()) throw new PolarError('interrupted', 'calibrate: interrupted (rerun to start the calibration again)');
  };
  const model = typeof o.model === 'string' ? loadModel(o.model) : o.model;
  const spec = model.spec;
  const out = resolve(o.out);
  mkdirSync(out, { recursive: true });
  const acts = await openActivationSet(o.activations, model);

  // routers
  const routerDir = resolve(o.routers);
  const cks = listCheckpoints(routerDir);
  if (!cks.length) throw new PolarError('not-found', `${routerDir}: router checkpoints (layer-NNN/router.safetensors) not found (run the train stage first)`);
  const checkpoints = new Map<number, LoadedCheckpoint>();
  for (const c of cks) {
    const ck = readCheckpoint(c.file);
    checkIdentity(c.file, ck.meta, model);
    if (c.layer < 1 || c.layer >= spec.layers) throw badInput(c.file, 'layer', `a layer in 1..${spec.layers - 1}`, c.layer);
    checkpoints.set(c.layer, ck);
  }
  const layers = [...checkpoints.keys()].sort((a, b) => a - b);
  const first = checkpoints.get(layers[0])!.meta;
  const split = { seed: Number(first.options.seed ?? 0), valFraction: Number(first.options.valFraction ?? 0.1) };
  const routers = new Map<number, LayerRouters>();
  const t = (ck: LoadedCheckpoint, name: string) => ck.tensors.get(`layers.${ck.meta.layer}.${name}`);
  for (const [l, ck] of checkpoints) {
    const r: LayerRouters = {};
    const fc1 = t(ck, 'mlp_router.fc1.weight'), fc2 = t(ck, 'mlp_router.fc2.weight');
    if (fc1 && fc2) r.mlp = { rank: fc1.shape[0], fc1: fc1.data, fc2: fc2.data, score: 'logit' };
    const w = t(ck, 'attn_router.weight'), b = t(ck, 'attn_router.bias');
    if (w) r.attn = { units: w.shape[0], weight: w.data, bias: b?.data ?? null };
    routers.set(l, r);
  }

  // ---- 1. MLP ------------------------------------------------------------------------------------------
  const mlpLayers = layers.filter((l) => routers.get(l)!.mlp);
  const reluModel = !spec.gated && spec.activation === 'relu';
  let mopts: MlpCalibrationOptions | null = null;
  const curves = new Map<number, MlpLayerCurves>();
  const rowsInfo = new Map<number, CalibrationMlpLayer['rows']>();
  if (reluModel && mlpLayers.length) {
    mopts = resolveMlpOptions(o.mlp ?? {}, spec.ffn);
    const ops = nativeOps();
    o.progress?.start(mlpLayers.length);
    for (const l of mlpLayers) {
      stop();
      const la = acts.set.layer(l);
      const where = `${'dir' in acts.set ? acts.set.dir : 'activations'} (layer ${l})`;
      const split2 = await heldOutRows(la, { ...split, maxRows: o.mlp?.maxRows, checkFraction: o.mlp?.checkFraction }, where);
      const r = routers.get(l)!.mlp!;
      const calibLogits = routerLogits(split2.calib, r, ops);
      const checkLogits = split2.check.rows ? routerLogits(split2.check, r, ops) : new Float32Array(0);
      const c = measureLayer(l, { set: split2.calib, logits: calibLogits }, split2.check.rows ? { set: split2.check, logits: checkLogits } : null, mopts);
      curves.set(l, c);
      routers.get(l)!.mlp!.score = c.score;
      rowsInfo.set(l, { calib: split2.calib.rows, check: split2.check.rows, calibSeqs: split2.calibSeqs, checkSeqs: split2.checkSeqs });
      const tab = layerTable(c, mopts.target, mopts.granule, spec.ffn);
      log(`calibrate: layer ${l} MLP (${c.score}, ${split2.calib.rows}+${split2.check.rows} held-out rows): k = ${tab.k.map((k, i) => `${mopts!.batchSizes[i]}:${k}`).join(' ')}`);
      o.progress?.advance(1);
    }
  }
  const tables = new Map<number, Map<number, number[]>>(); // target -> layer -> k per batch size
  const kTableAt = (target: number, l: number): number[] => {
    let m = tables.get(target);
    if (!m) tables.set(target, (m = new Map()));
    let k = m.get(l);
    if (!k) m.set(l, (k = layerTable(curves.get(l)!, target, mopts!.granule, spec.ffn).k));
    return k;
  };
  const mlpK = (target: number, l: number, tokens: number) => mlpKFor(mopts!.batchSizes, kTableAt(target, l), spec.ffn, tokens);

  const mlpSeconds = (performance.now() - t0) / 1000;

  // ---- 2. attention ------------------------------------------------------------------------------------
  const h = resolveHeads(o.heads);
  const units = spec.kvHeads;
  const unit: 'head' | 'kv-group' = spec.kvHeads < spec.heads ? 'kv-group' : 'head';
  const attnLayers = layers.filter((l) => routers.get(l)!.attn);
  const space = { layers: spec.layers, sparseLayers: attnLayers, units, minUnits: Math.min(h.minUnits, units) };
  const mlpOn = mopts !== null;
  const primary = mlpOn ? mopts!.target : null;
  const candidates: (number | null)[] = mlpOn ? [...new Set([primary!, ...(h.mlpTargets ?? [0.995, 0.999].filter((t) => t > primary!))])] : [null];
  const window = Math.min(h.window, spec.maxPositions);
  const skip = h.skipTokens ?? acts.tokens;
  const workBatch = h.workBatch;
  const workContext = Math.min(h.workContext, spec.maxPositions);
  // decode-step bytes at (workBatch, workContext): KV of the kept groups + MLP weights of the kept neurons
  const work = (cfg: EvalConfig): number => {
    let bytes = 0;
    for (let l = 0; l < spec.layers; l++) {
      bytes += workBatch * workContext * 2 * spec.headDim * cfg.heads[l];
      const k = cfg.mlp !== null && l >= 1 && curves.has(l) ? mlpK(cfg.mlp, l, workBatch) : spec.ffn;
      bytes += (spec.gated ? 3 : 2) * spec.hidden * k;
    }
    return 2 * bytes; // fp16
  };

  let search: HeadSearchResult | null = null;
  let heads = new Array<number>(spec.layers).fill(units);
  let chosenMlp: number | null = primary;
  let densePpl: number | null = null, sparsePpl: number | null = null, budgetPpl: number | null = null;
  let evaluations = 0;
  let textInfo = { corpus: h.corpus, sha256: '', skipTokens: skip };
  let calTokens = 0;
  const tHeads = performance.now();
  if (h.mode !== 'dense' || mlpOn) {
    const { windows, corpus } = await calibrationWindows(model, h.corpus, h.textField, skip, h.tokens, window);
    textInfo = { corpus: corpus.name, sha256: corpus.sha256, skipTokens: skip };
    const rt = openRuntimeModel(model);
    const ev = decodeEvaluator({ rt, windows, batch: h.evalBatch, routers, mlpK, shouldStop: o.shouldStop });
    const pev = prefillEvaluator({ rt, windows, routers, mlpK, shouldStop: o.shouldStop });
    calTokens = ev.tokens;
    try {
      if (h.mode === 'fidelity' && attnLayers.length) {
        log(`calibrate: head search on ${ev.tokens} tokens (${windows.length} windows of <= ${window}, decoded ${h.evalBatch} at a time), MLP targets ${candidates.map((c) => c ?? 'dense').join(', ')}`);
        search = await searchHeadBudgets(ev.evaluate, space, {
          maxPplIncrease: h.maxPplIncrease,
          mlpTargets: candidates,
          work,
          sweepEvaluate: pev.evaluate,
          sweepStop: h.sweepStop,
          log,
          shouldStop: o.shouldStop,
        });
        heads = search.chosen.heads;
        chosenMlp = search.chosen.mlp;
        densePpl = search.densePpl;
        sparsePpl = search.chosen.ppl;
        budgetPpl = search.budgetPpl;
        evaluations = search.evaluations + search.sweepEvaluations;
        if (mlpOn && chosenMlp === null) {
          log(`calibrate: WARNING: no MLP recall target among ${candidates.join(', ')} meets the +${(100 * h.maxPplIncrease).toFixed(2)}% perplexity budget: the MLP stays dense (try --mlp-targets with stricter targets, or a larger --max-ppl-increase)`);
        }
      } else {
        if (h.mode === 'fixed') heads = fixedHeads(space, h.fraction);
        densePpl = await ev.evaluate({ heads: new Array(spec.layers).fill(units), mlp: null });
        sparsePpl = await ev.evaluate({ heads, mlp: chosenMlp });
        budgetPpl = densePpl * (1 + h.maxPplIncrease);
        evaluations = 2;
        log(`calibrate: ${h.mode} heads: dense ppl ${densePpl.toFixed(4)}, sparse ${sparsePpl.toFixed(4)} (${(100 * (sparsePpl / densePpl - 1)).toFixed(2)}%)`);
        if (sparsePpl > budgetPpl) {
          log(`calibrate: WARNING: ${h.mode} heads: sparse perplexity is ${(100 * (sparsePpl / densePpl - 1)).toFixed(2)}% above dense, over the +${(100 * h.maxPplIncrease).toFixed(2)}% budget (--heads fidelity searches for budgets that meet it)`);
        }
      }
    } finally {
      ev.dispose();
      pev.dispose();
      rt.dispose();
    }
  }
  const headSeconds = (performance.now() - tHeads) / 1000;
  stop();

  // ---- 3. calibration.json -----------------------------------------------------------------------------
  const mlpSection: CalibrationFile['mlp'] =
    mopts && chosenMlp !== null
      ? {
          target: chosenMlp,
          primaryTarget: mopts.target,
          granule: mopts.granule,
          batchSizes: mopts.batchSizes,
          draws: mopts.draws,
          scoreMode: mopts.score,
          checkFraction: o.mlp?.checkFraction ?? 0.5,
          layers: mlpLayers.map((l): CalibrationMlpLayer => {
            const c = curves.get(l)!;
            const tab = layerTable(c, chosenMlp!, mopts!.granule, spec.ffn);
            const sampled = c.calib.map((x) => sampleCurve(x.recall, mopts!.granule, spec.ffn));
            return {
              layer: l,
              score: c.score,
              k: tab.k,
              recall: tab.recall.map(round6),
              recallCheck: tab.recallCheck.map((v) => (Number.isFinite(v) ? round6(v) : null)),
              unionDensity: tab.unionDensity.map(round6),
              scoreComparison: c.scoreComparison,
              curve: { k: sampled[0].k, recall: sampled.map((s) => s.recall) },
              rows: rowsInfo.get(l)!,
            };
          }),
        }
      : null;
  const sweeps = new Map((search?.sweep ?? []).map((s) => [s.layer, s]));
  const headLayers: CalibrationHeadLayer[] = attnLayers.map((l) => {
    const s = sweeps.get(l);
    return { layer: l, kept: heads[l], units, sweep: s ? { ppl: s.ppl.map(round6), marginal: s.marginal.map(round6) } : null };
  });
  const allHeads = heads.reduce((a, v) => a + v, 0);
  const denseCfg: EvalConfig = { heads: new Array(spec.layers).fill(units), mlp: null };
  const finalCfg: EvalConfig = { heads, mlp: mlpSection ? chosenMlp : null };
  const file: CalibrationFile = {
    format: CALIBRATION_FORMAT,
    version: CALIBRATION_VERSION,
    tool: { name: 'polar', version: packageVersion() },
    model: modelIdentityDims(model),
    corpus: { sha256: acts.corpusSha256, tokens: acts.tokens },
    routers: { layers, fingerprints: Object.fromEntries([...checkpoints].map(([l, c]) => [String(l), c.meta.fingerprint])), split },
    mlp: mlpSection,
    heads: {
      unit,
      units,
      mode: h.mode,
      maxPplIncrease: h.maxPplIncrease,
      fraction: h.mode === 'fixed' ? h.fraction : null,
      minUnits: space.minUnits,
      evalBatch: h.evalBatch,
      window,
      tokens: calTokens,
      text: textInfo,
      densePpl,
      budgetPpl,
      sparsePpl,
      mlpTarget: mlpSection ? chosenMlp : null,
      layers: headLayers,
      candidates: (search?.candidates ?? []).map((c) => ({ ...c })),
      evaluations,
    },
    work: {
      attention: round6(1 - allHeads / (spec.layers * units)),
      mlp: mlpSection
        ? mlpSection.batchSizes.map((_, i) => round6(1 - (mlpSection.layers.reduce((a, l) => a + l.k[i], 0) + (spec.layers - mlpSection.layers.length) * spec.ffn) / (spec.layers * spec.ffn)))
        : [],
      reference: { batch: workBatch, context: workContext, denseBytes: work(denseCfg), sparseBytes: work(finalCfg) },
    },
  };
  writeCalibration(join(out, CALIBRATION_JSON), file);
  log(
    `calibrate: wrote ${join(out, CALIBRATION_JSON)} (${((performance.now() - t0) / 1000).toFixed(1)} s): heads kept ${headLayers.map((x) => `${x.layer}:${x.kept}/${x.units}`).join(' ')}` +
      (sparsePpl !== null && densePpl !== null ? `, ppl ${densePpl.toFixed(3)} -> ${sparsePpl.toFixed(3)} (${(100 * (sparsePpl / densePpl - 1)).toFixed(2)}%)` : '') +
      (mlpSection ? `, MLP target ${chosenMlp}` : '') +
      `; ${evaluations} perplexity evaluation(s) in ${headSeconds.toFixed(1)} s`,
  );
  return { calibration: file, file: join(out, CALIBRATION_JSON), seconds: { mlp: round6(mlpSeconds), heads: round6(headSeconds), total: round6((performance.now() - t0) / 1000) } };
}

function round6(v: number): number {
  return Math.round(v * 1e6) / 1e6;
}
