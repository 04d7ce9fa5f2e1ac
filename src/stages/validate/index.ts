// The validate stage: the exported artifact (ctx.inputs.export) on the sparse runtime vs the dense model,
// as decoding runs (src/validate) on the pipeline's eval text, at targets.validate_batch_sizes. Writes
// validate.json ({ thresholds, passed, failures, text, tokens, window, seconds, results }); `results` is
// exactly what `polar validate --json` prints. A failed threshold does not fail the stage (the report is
// still written): `polar run` exits non-zero at the end when validation failed.
// Options (pipelines/*.yaml, stages.validate):
//   batch_sizes       default: targets.validate_batch_sizes
//   max_tokens        tokens of the eval text used (default 16384; 0: all)
//   window            protocol window (default 256, at most the model's positions)
//   max_ppl_increase  default: targets.ppl_increase_max
//   min_top1, max_kl  default: targets.top1_agreement_min, targets.kl_max (none)
import { join } from 'node:path';
import { writeFileAtomic } from '../../arrow/writer.ts';
import { openCorpus } from '../../corpus/index.ts';
import { PolarError } from '../../errors.ts';
import { optionReader } from '../../pipeline/options.ts';
import type { FingerprintContext, OptionsWhere, PipelineConfig, StageContext, StageResult } from '../../pipeline/types.ts';
import type { ValidateSection } from '../../report/types.ts';
import { DEFAULT_MAX_TOKENS, failures, validateArtifact, validateJson, validateWindow, validationText } from '../../validate/index.ts';

export const VALIDATE_FILE = 'validate.json';

export interface ValidateStageOptions {
  batch_sizes: number[];
  max_tokens: number;
  window: number;
  max_ppl_increase: number;
  min_top1: number | null;
  max_kl: number | null;
}

export const description = 'validate the artifact: sparse vs dense perplexity, top-1, KL, per-layer density and recall, decoding at each batch size';
export const inputs = ['export'] as const;
export const version = 1;

export function options(raw: Record<string, unknown>, where: OptionsWhere, pipeline: PipelineConfig): ValidateStageOptions {
  const r = optionReader(raw, where);
  const t = pipeline.targets;
  const o: ValidateStageOptions = {
    batch_sizes: r.intList('batch_sizes', t.validate_batch_sizes, 1),
    max_tokens: r.int('max_tokens', DEFAULT_MAX_TOKENS, 0),
    window: r.int('window', 256, 2),
    max_ppl_increase: r.num('max_ppl_increase', t.ppl_increase_max, 0),
    min_top1: r.has('min_top1') ? r.num('min_top1', undefined, 0, 1) : (r.raw('min_top1'), t.top1_agreement_min ?? null),
    max_kl: r.has('max_kl') ? r.num('max_kl', undefined, 0) : (r.raw('max_kl'), t.kl_max ?? null),
  };
  r.done();
  return o;
}

/** The eval text is an input that is not an option. */
export function fingerprint(ctx: FingerprintContext<ValidateStageOptions>): unknown {
  const c = openCorpus(ctx.pipeline.corpus.eval, { textField: ctx.pipeline.corpus.text_field });
  return { eval_text: c.sha256, text_field: ctx.pipeline.corpus.text_field };
}

export async function run(ctx: StageContext<ValidateStageOptions>): Promise<StageResult> {
  const o = ctx.options;
  const exp = ctx.inputs.export;
  if (!exp) throw new PolarError('bad-input', `stage ${ctx.stage}: expected the output of the export stage before it in the pipeline, received ${Object.keys(ctx.inputs).join(', ') || 'none'}`);
  const model = ctx.model();
  const window = Math.min(o.window, validateWindow(model.spec.maxPositions));
  const text = await validationText(ctx.pipeline.corpus.eval, model, o.max_tokens === 0 ? null : o.max_tokens, ctx.pipeline.corpus.text_field);
  const task = ctx.progress('tok');
  let base = 0;
  let lastB = -1;
  let perBatch = 0;
  const out = await validateArtifact({
    artifact: exp.dir,
    model,
    tokens: text.tokens,
    batchSizes: o.batch_sizes,
    window,
    onProgress: (b, p) => {
      if (b !== lastB) {
        if (lastB >= 0) base += perBatch;
        else task.start(p.total * o.batch_sizes.length);
        lastB = b;
        perBatch = p.total;
        task.note(`batch ${b}`);
      }
      task.set(base + p.done);
    },
  });
  if (ctx.signal.aborted) throw new PolarError('interrupted', `stage ${ctx.stage}: interrupted`);
  const thresholds = { maxPplIncrease: o.max_ppl_increase, minTop1: o.min_top1 ?? undefined, maxKl: o.max_kl ?? undefined };
  const failed = failures(out.results, thresholds);
  const section: ValidateSection = {
    thresholds: { max_ppl_increase: o.max_ppl_increase, min_top1: o.min_top1, max_kl: o.max_kl },
    passed: failed.length === 0,
    failures: failed,
    text: text.name,
    tokens: out.tokens,
    window,
    seconds: Math.round(out.seconds * 1000) / 1000,
    results: validateJson(out.results).results,
  };
  writeFileAtomic(join(ctx.dir, VALIDATE_FILE), JSON.stringify(section, null, 2) + '\n');
  const b1 = section.results[0];
  task.end(
    section.results.map((r) => `b=${r.batch_size}: ppl ${r.dense_ppl.toFixed(3)} -> ${r.sparse_ppl.toFixed(3)} (${(100 * r.ppl_increase).toFixed(2)}%)`).join(', ') +
      (section.passed ? ' - passed' : ` - FAILED: ${failed.join('; ')}`),
  );
  if (!section.passed) ctx.log(`validate: FAILED: ${failed.join('; ')}`);
  return {
    summary: {
      passed: section.passed,
      failures: failed,
      file: join(ctx.dir, VALIDATE_FILE),
      tokens: section.tokens,
      text: section.text,
      results: section.results.map((r) => ({ batch_size: r.batch_size, dense_ppl: r.dense_ppl, sparse_ppl: r.sparse_ppl, ppl_increase: r.ppl_increase, top1_agreement: r.top1_agreement, kl: r.kl })),
      ...(b1 ? { layers_b1: b1.layers } : {}),
    },
  };
}
