// The calibrate stage: MLP top-k per layer and batch size, and heads kept per layer, from the collected
// activations and the trained routers; writes calibration.json (src/artifact/calibration.ts) in its folder.
// Options (pipelines/*.yaml, stages.calibrate; `polar calibrate --help` has the same, in kebab-case):
//   target, batch_sizes          default: pipeline targets.mlp_recall, targets.batch_sizes
//   granule (0: auto), draws, score (auto|logit|sigmoid), max_rows, check_fraction, seed
//   heads (fidelity|fixed|dense), head_fraction, max_ppl_increase (default targets.ppl_increase_max),
//   mlp_targets, min_units, tokens, window, eval_batch, skip_tokens, sweep_stop, work_batch, work_context
// The calibration text is the pipeline's training corpus after the collected tokens.
import { openCorpus } from '../../corpus/index.ts';
import { badInput, PolarError } from '../../errors.ts';
import { optionReader } from '../../pipeline/options.ts';
import type { FingerprintContext, OptionsWhere, PipelineConfig, StageContext, StageResult } from '../../pipeline/types.ts';
import { MLP_DEFAULTS } from '../../calibrate/mlp.ts';
import { calibrate, HEAD_DEFAULTS } from './calibrate.ts';

export { calibrate, calibrationWindows, HEAD_DEFAULTS, CALIBRATION_JSON, type CalibrateOptions, type CalibrateResult, type HeadCalibrationOptions } from './calibrate.ts';

export interface CalibrateStageOptions {
  target: number;
  batch_sizes: number[];
  granule: number;
  draws: number;
  score: 'auto' | 'logit' | 'sigmoid';
  max_rows: number;
  check_fraction: number;
  seed: number;
  heads: 'fidelity' | 'fixed' | 'dense';
  head_fraction: number;
  max_ppl_increase: number;
  mlp_targets: number[] | null;
  min_units: number;
  tokens: number;
  window: number;
  eval_batch: number;
  skip_tokens: number | null;
  sweep_stop: number;
  work_batch: number;
  work_context: number;
}

export const description = 'calibrate MLP top-k per layer and batch size (recall target) and heads kept per layer (perplexity budget)';
export const inputs = ['collect', 'train'] as const;
export const version = 1;

export function options(raw: Record<string, unknown>, where: OptionsWhere, pipeline: PipelineConfig): CalibrateStageOptions {
  const r = optionReader(raw, where);
  const t = pipeline.targets;
  const o: CalibrateStageOptions = {
    target: r.num('target', t.mlp_recall, 0, 1),
    batch_sizes: r.intList('batch_sizes', t.batch_sizes, 1),
    granule: r.int('granule', 0, 0),
    draws: r.int('draws', MLP_DEFAULTS.draws, 1),
    score: r.oneOf('score', ['auto', 'logit', 'sigmoid'] as const, 'auto'),
    max_rows: r.int('max_rows', 8192, 2),
    check_fraction: r.num('check_fraction', 0.5, 0, 1),
    seed: r.int('seed', 0, 0),
    heads: r.oneOf('heads', ['fidelity', 'fixed', 'dense'] as const, HEAD_DEFAULTS.mode),
    head_fraction: r.num('head_fraction', HEAD_DEFAULTS.fraction, 0, 1),
    max_ppl_increase: r.num('max_ppl_increase', t.ppl_increase_max, 0),
    mlp_targets: r.has('mlp_targets') ? r.numList('mlp_targets', undefined, 0, 1) : (r.raw('mlp_targets'), null),
    min_units: r.int('min_units', HEAD_DEFAULTS.minUnits, 0),
    tokens: r.int('tokens', HEAD_DEFAULTS.tokens, 2),
    window: r.int('window', HEAD_DEFAULTS.window, 2),
    eval_batch: r.int('eval_batch', HEAD_DEFAULTS.evalBatch, 1),
    skip_tokens: r.optInt('skip_tokens', 0) ?? null,
    sweep_stop: r.num('sweep_stop', HEAD_DEFAULTS.sweepStop, 0),
    work_batch: r.int('work_batch', HEAD_DEFAULTS.workBatch, 1),
    work_context: r.int('work_context', HEAD_DEFAULTS.workContext, 1),
  };
  r.done();
  for (let i = 1; i < o.batch_sizes.length; i++) {
    if (o.batch_sizes[i] <= o.batch_sizes[i - 1]) throw badInput(where.file, `${where.field}.batch_sizes`, 'increasing batch sizes', o.batch_sizes);
  }
  if (!(o.target > 0)) throw badInput(where.file, `${where.field}.target`, 'a recall in (0, 1]', o.target);
  if (!(o.head_fraction > 0)) throw badInput(where.file, `${where.field}.head_fraction`, 'a number in (0, 1]', o.head_fraction);
  if (!(o.check_fraction > 0 && o.check_fraction < 1)) throw badInput(where.file, `${where.field}.check_fraction`, 'a number in (0, 1)', o.check_fraction);
  return o;
}

/** The calibration text (the training corpus, after the collected tokens) is an input that is not an option. */
export function fingerprint(ctx: FingerprintContext<CalibrateStageOptions>): unknown {
  const c = openCorpus(ctx.pipeline.corpus.train, { textField: ctx.pipeline.corpus.text_field });
  return { calibration_text: c.sha256, text_field: ctx.pipeline.corpus.text_field };
}

export async function run(ctx: StageContext<CalibrateStageOptions>): Promise<StageResult> {
  const o = ctx.options;
  const collect = ctx.inputs.collect, train = ctx.inputs.train;
  if (!collect || !train) throw new PolarError('bad-input', `stage ${ctx.stage}: expected the outputs of the collect and train stages before it in the pipeline, received ${Object.keys(ctx.inputs).join(', ') || 'none'}`);
  const task = ctx.progress('layers');
  const res = await calibrate({
    model: ctx.model(),
    activations: collect.dir,
    routers: train.dir,
    out: ctx.dir,
    mlp: {
      target: o.target,
      batchSizes: o.batch_sizes,
      granule: o.granule,
      draws: o.draws,
      score: o.score,
      seed: o.seed,
      maxRows: o.max_rows,
      checkFraction: o.check_fraction,
    },
    heads: {
      mode: o.heads,
      fraction: o.head_fraction,
      maxPplIncrease: o.max_ppl_increase,
      mlpTargets: o.mlp_targets,
      minUnits: o.min_units,
      corpus: ctx.pipeline.corpus.train,
      textField: ctx.pipeline.corpus.text_field,
      skipTokens: o.skip_tokens,
      tokens: o.tokens,
      window: o.window,
      evalBatch: o.eval_batch,
      sweepStop: o.sweep_stop,
      workBatch: o.work_batch,
      workContext: o.work_context,
    },
    log: ctx.log,
    progress: task,
    shouldStop: () => ctx.signal.aborted,
  });
  const c = res.calibration;
  task.end(`heads kept ${c.heads.layers.map((l) => `${l.kept}/${l.units}`).join(' ')}${c.mlp ? `, MLP target ${c.mlp.target}` : ''}`);
  return {
    summary: {
      calibration: res.file,
      mlp_target: c.mlp?.target ?? null,
      batch_sizes: c.mlp?.batchSizes ?? [],
      mlp_k: c.mlp ? Object.fromEntries(c.mlp.layers.map((l) => [String(l.layer), l.k])) : {},
      heads_kept: Object.fromEntries(c.heads.layers.map((l) => [String(l.layer), l.kept])),
      units: c.heads.units,
      dense_ppl: c.heads.densePpl,
      sparse_ppl: c.heads.sparsePpl,
      work_skipped: c.work,
      evaluations: c.heads.evaluations,
      seconds: res.seconds,
    },
  };
}
