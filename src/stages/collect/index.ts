// The collect stage: dense activations of the pipeline's model over its training corpus, as Arrow shards
// in ctx.dir (read them with openActivations(ctx.inputs.collect.dir) from src/arrow/reader.ts).
// Options (pipelines/*.yaml, stages.collect): tokens, seq_len, batch, layers, router_dtype, mlp_activity,
// shard_tokens — the same meaning and defaults as `polar collect --help`.
import { openCorpus } from '../../corpus/index.ts';
import { sha256File } from '../../model/identity.ts';
import { join } from 'node:path';
import { optionReader } from '../../pipeline/options.ts';
import type { FingerprintContext, OptionsWhere, PipelineConfig, StageContext, StageResult } from '../../pipeline/types.ts';
import { collect, COLLECT_DEFAULTS } from './collect.ts';

export { collect, COLLECT_DEFAULTS } from './collect.ts';

export interface CollectStageOptions {
  tokens: number;
  seq_len: number;
  batch: number;
  /** null: every layer */
  layers: number[] | null;
  router_dtype: 'f16' | 'f32';
  /** null: bits for ReLU models, none for gated ones */
  mlp_activity: 'bits' | 'f16' | 'none' | null;
  /** null: 32768 or fewer (see COLLECT_DEFAULTS.shardMemory) */
  shard_tokens: number | null;
}

export const description = 'run the dense model over the training corpus; record router inputs, MLP activity and head norms (Arrow shards)';
export const inputs: readonly string[] = [];

export function options(raw: Record<string, unknown>, where: OptionsWhere, _pipeline: PipelineConfig): CollectStageOptions {
  const r = optionReader(raw, where);
  const o: CollectStageOptions = {
    tokens: r.int('tokens', COLLECT_DEFAULTS.tokens, 1),
    seq_len: r.int('seq_len', COLLECT_DEFAULTS.seqLen, 2),
    batch: r.int('batch', COLLECT_DEFAULTS.batch, 1, 4096),
    layers: r.optIntList('layers', 0) ?? null,
    router_dtype: r.oneOf('router_dtype', ['f16', 'f32'] as const, COLLECT_DEFAULTS.routerDtype),
    mlp_activity: r.optOneOf('mlp_activity', ['bits', 'f16', 'none'] as const) ?? null,
    shard_tokens: r.optInt('shard_tokens', 1) ?? null,
  };
  r.done();
  return o;
}

/** The corpus and tokenizer are inputs that are not options. */
export function fingerprint(ctx: FingerprintContext<CollectStageOptions>): unknown {
  const c = openCorpus(ctx.pipeline.corpus.train, { textField: ctx.pipeline.corpus.text_field });
  return { corpus: c.sha256, corpus_format: c.format, text_field: ctx.pipeline.corpus.text_field, tokenizer: sha256File(join(ctx.model().dir, 'tokenizer.json')) };
}

export async function run(ctx: StageContext<CollectStageOptions>): Promise<StageResult> {
  const o = ctx.options;
  const res = await collect({
    modelDir: ctx.pipeline.model,
    out: ctx.dir,
    text: ctx.pipeline.corpus.train,
    textField: ctx.pipeline.corpus.text_field,
    tokens: o.tokens,
    seqLen: o.seq_len,
    batch: o.batch,
    layers: o.layers ?? undefined,
    routerDtype: o.router_dtype,
    mlpActivity: o.mlp_activity ?? undefined,
    shardTokens: o.shard_tokens ?? undefined,
    // the runner empties the folder when the key changes; anything else there is this key's partial work
    onMismatch: 'restart',
    progress: ctx.progress('tok'),
    log: ctx.log,
  });
  const m = res.manifest;
  return {
    summary: {
      activations_dir: res.out,
      tokens: m.tokens,
      sequences: m.sequences,
      layers: m.settings.layers,
      shards: res.files.length,
      bytes: m.bytes,
      bytes_per_token: m.bytes_per_token,
      corpus: m.corpus.name,
      corpus_sha256: m.corpus.sha256,
      seconds: res.seconds,
      tokens_per_second: res.tokensPerSecond,
    },
  };
}
