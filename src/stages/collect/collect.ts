// The collect engine (used by `polar collect` and by the pipeline's collect stage): runs the dense model
// over a corpus and writes, per layer and token, the router input, the MLP activity and the head-output
// norms as Arrow shards (src/arrow: one layer x one token range per file).
//
// Robustness: the token stream is cut into shard ranges of whole sequences, fixed by the options. Each
// range's files are written as <name>.tmp and renamed, and only then is the range recorded in
// <out>/manifest.json (itself written atomically). A rerun with the same inputs (same key) skips the
// recorded ranges and redoes the rest; batches never straddle ranges, so the bytes are those of an
// uninterrupted run. A complete run with the same key does no work.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { badInput, PolarError } from '../../errors.ts';
import { loadModel, type LoadedModel } from '../../model/index.ts';
import { sha256File } from '../../model/identity.ts';
import { openRuntimeModel } from '../../runtime/index.ts';
import type { RuntimeModel, ForwardOutput } from '../../runtime/types.ts';
import { openCorpus, planSequences, planSha256 } from '../../corpus/index.ts';
import { SCHEMA_VERSION, type FullShardMeta } from '../../arrow/schema.ts';
import { ShardWriter, writeFileAtomic } from '../../arrow/writer.ts';
import { COLLECT_MANIFEST, readShardMeta } from '../../arrow/reader.ts';
import { hashOf, sha256Hex } from '../../pipeline/hash.ts';
import { toolVersion } from '../../pipeline/version.ts';
import { formatBytes, formatCount, silentProgress, type ProgressTask } from '../../progress/index.ts';

export const MANIFEST_FORMAT = 'polar-collect';
export const MANIFEST_VERSION = 1;

/** Defaults chosen for a 2-core CPU machine: 200k tokens of small-opt take a minute or two. */
export const COLLECT_DEFAULTS = {
  corpus: 'default:train',
  tokens: 200_000,
  seqLen: 256,
  batch: 8,
  /** tokens per shard range at most; fewer when one range of all recorded layers would exceed shardMemory */
  shardTokens: 32_768,
  /** bytes that one shard range of all recorded layers may take in memory before it is written */
  shardMemory: 512 * 2 ** 20,
  routerDtype: 'f16' as const,
  textField: 'text',
};

export interface CollectOptions {
  modelDir: string;
  out: string;
  /** corpus source: "default:train" (default), "default:eval" or a .txt/.jsonl/.arrow/.parquet file */
  text?: string;
  textField?: string;
  tokens?: number;
  seqLen?: number;
  /** sequences per forward call */
  batch?: number;
  /** layers to record (default: all) */
  layers?: number[];
  routerDtype?: 'f16' | 'f32';
  /** default: 'bits' for ReLU models, 'none' for gated ones */
  mlpActivity?: 'bits' | 'f16' | 'none';
  /**
   * tokens per shard, rounded down to whole sequences (at least one sequence). Default: 32768, or fewer
   * so that one range of every recorded layer stays under 512 MiB in memory (large models).
   */
  shardTokens?: number;
  /** CPU threads of the native runtime (default: the runtime's default) */
  threads?: number;
  /**
   * What to do when <out> holds a collection made with other inputs: 'error' (default; the CLI's
   * behaviour without --force) or 'restart' (delete this engine's files there and start over).
   */
  onMismatch?: 'error' | 'restart';
  progress?: ProgressTask;
  log?: (msg: string) => void;
  /** tests: stop (throw) after this many shard ranges were written in this call */
  stopAfterShards?: number;
}

export interface CollectSettings {
  corpus: string;
  text_field: string;
  tokens: number;
  seq_len: number;
  batch: number;
  layers: number[];
  router_input_dtype: 'f16' | 'f32';
  mlp_activity: 'bits' | 'f16' | 'none';
  shard_tokens: number;
}

export interface ManifestFile {
  layer: number;
  file: string;
  bytes: number;
  sha256: string;
}

export interface ManifestShard {
  index: number;
  token_start: number;
  token_end: number;
  seq_start: number;
  seq_end: number;
  files: ManifestFile[];
}

/** <out>/manifest.json: what was asked, what is done. Deterministic (no times), so reruns reproduce it. */
export interface CollectManifest {
  format: typeof MANIFEST_FORMAT;
  version: number;
  key: string;
  tool_version: string;
  schema_version: number;
  model: { config_sha256: string; weights_sha256: string; tokenizer_sha256: string; family: string; layers: number; hidden: number; ffn: number; heads: number; kv_heads: number };
  corpus: { name: string; format: string; sha256: string; bytes: number; tokens_sha256: string };
  settings: CollectSettings;
  tokens: number;
  sequences: number;
  shard_count: number;
  shards: ManifestShard[];
  complete: boolean;
  bytes: number;
  bytes_per_token: number;
}

export interface CollectResult {
  out: string;
  manifest: CollectManifest;
  /** true when the collection was already complete (no work done) */
  cached: boolean;
  /** tokens that were already collected when this call started */
  resumedTokens: number;
  /** tokens collected by this call */
  newTokens: number;
  seconds: number;
  tokensPerSecond: number;
  files: string[];
}

export function shardFileName(layer: number, shard: number): string {
  return `layer${String(layer).padStart(3, '0')}-${String(shard).padStart(5, '0')}.arrow`;
}
const SHARD_RE = /^layer\d{3}-\d{5}\.arrow(\.tmp)?$/;

function readManifest(file: string): CollectManifest | null {
  if (!existsSync(file)) return null;
  let m: CollectManifest;
  try {
    m = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw badInput(file, '(file)', 'valid JSON (a polar collect manifest)', (e as Error).message, true);
  }
  if (m?.format !== MANIFEST_FORMAT) throw badInput(file, 'format', `"${MANIFEST_FORMAT}"`, m?.format);
  if (m.version !== MANIFEST_VERSION) throw badInput(file, 'version', `${MANIFEST_VERSION}`, m.version);
  return m;
}

function describeMismatch(old: CollectManifest, now: Omit<CollectManifest, 'shards' | 'complete' | 'bytes' | 'bytes_per_token'>): string {
  const diffs: string[] = [];
  const cmp = (name: string, a: unknown, b: unknown) => {
    if (JSON.stringify(a) !== JSON.stringify(b)) diffs.push(`${name}: ${JSON.stringify(a)} -> ${JSON.stringify(b)}`);
  };
  for (const k of Object.keys(now.settings) as (keyof CollectSettings)[]) cmp(k, old.settings?.[k], now.settings[k]);
  cmp('model config', old.model?.config_sha256, now.model.config_sha256);
  cmp('model weights', old.model?.weights_sha256, now.model.weights_sha256);
  cmp('tokenizer', old.model?.tokenizer_sha256, now.model.tokenizer_sha256);
  cmp('corpus', old.corpus?.sha256, now.corpus.sha256);
  cmp('tool version', old.tool_version, now.tool_version);
  return diffs.length ? diffs.join('; ') : 'inputs differ';
}

function checkInt(name: string, v: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isSafeInteger(v) || v < min || v > max) throw badInput('collect', name, `an integer in [${min}, ${max}]`, v);
  return v;
}

/** Resolves options against the model and defaults (throws on bad values, naming the option). */
export function resolveSettings(o: CollectOptions, model: LoadedModel): CollectSettings {
  const spec = model.spec;
  const seqLen = checkInt('seq-len', o.seqLen ?? COLLECT_DEFAULTS.seqLen, 2, spec.maxPositions);
  const layers = o.layers ?? Array.from({ length: spec.layers }, (_, l) => l);
  if (!layers.length) throw badInput('collect', 'layers', 'at least one layer', layers);
  const seen = new Set<number>();
  for (const l of layers) {
    if (!Number.isInteger(l) || l < 0 || l >= spec.layers) throw badInput('collect', 'layers', `layer indices in 0..${spec.layers - 1}`, layers);
    if (seen.has(l)) throw badInput('collect', 'layers', 'distinct layer indices', layers);
    seen.add(l);
  }
  const mlp = o.mlpActivity ?? (spec.gated ? 'none' : 'bits');
  if (!['bits', 'f16', 'none'].includes(mlp)) throw badInput('collect', 'mlp-activity', '"bits", "f16" or "none"', mlp);
  if (mlp === 'bits' && spec.gated) {
    throw badInput('collect', 'mlp-activity', `"f16" or "none" for ${spec.architecture} (a gated ${spec.activation} MLP has no on/off activity to bit-pack)`, mlp);
  }
  const rd = o.routerDtype ?? COLLECT_DEFAULTS.routerDtype;
  if (rd !== 'f16' && rd !== 'f32') throw badInput('collect', 'router-dtype', '"f16" or "f32"', rd);
  const perToken = layers.length * (8 + spec.hidden * (rd === 'f16' ? 2 : 4) + (mlp === 'bits' ? Math.ceil(spec.ffn / 8) : mlp === 'f16' ? 2 * spec.ffn : 0) + 4 * spec.heads);
  const shardTokens =
    o.shardTokens !== undefined ? checkInt('shard-tokens', o.shardTokens, 1) : Math.min(COLLECT_DEFAULTS.shardTokens, Math.floor(COLLECT_DEFAULTS.shardMemory / perToken));
  return {
    corpus: o.text ?? COLLECT_DEFAULTS.corpus,
    text_field: o.textField ?? COLLECT_DEFAULTS.textField,
    tokens: checkInt('tokens', o.tokens ?? COLLECT_DEFAULTS.tokens, 1),
    seq_len: seqLen,
    batch: checkInt('batch', o.batch ?? COLLECT_DEFAULTS.batch, 1, 4096),
    layers: [...layers].sort((a, b) => a - b),
    router_input_dtype: rd,
    mlp_activity: mlp,
    // whole sequences per shard
    shard_tokens: Math.max(1, Math.floor(shardTokens / seqLen)) * seqLen,
  };
}

/** Runs (or resumes, or skips) a collection. */
export async function collect(o: CollectOptions): Promise<CollectResult> {
  const t0 = performance.now();
  const log = o.log ?? (() => {});
  const progress = o.progress ?? silentProgress.task('collect', 'tok');
  const out = resolve(o.out);
  const model = loadModel(o.modelDir);
  const spec = model.spec;
  const settings = resolveSettings(o, model);
  const identity = model.identity();
  const tokenizerSha = sha256File(join(model.dir, 'tokenizer.json'));
  const corpus = openCorpus(settings.corpus, { textField: settings.text_field });
  // the corpus source is named by its content, not its path
  settings.corpus = corpus.format === 'default' ? corpus.name : `file:${corpus.format}`;

  const plan = await planSequences(corpus, model.tokenizer(), spec, { tokens: settings.tokens, seqLen: settings.seq_len });
  if (plan.exhausted) {
    log(`polar: collect: the corpus ${corpus.name} has only ${plan.tokens} tokens for --tokens ${settings.tokens}: collecting ${plan.tokens}`);
  }
  const head = {
    format: MANIFEST_FORMAT,
    version: MANIFEST_VERSION,
    key: '',
    tool_version: toolVersion(),
    schema_version: SCHEMA_VERSION,
    model: {
      config_sha256: identity.configSha256,
      weights_sha256: identity.weightsSha256,
      tokenizer_sha256: tokenizerSha,
      family: spec.family,
      layers: spec.layers,
      hidden: spec.hidden,
      ffn: spec.ffn,
      heads: spec.heads,
      kv_heads: spec.kvHeads,
    },
    corpus: { name: corpus.format === 'default' ? corpus.name : corpus.name, format: corpus.format, sha256: corpus.sha256, bytes: corpus.bytes, tokens_sha256: planSha256(plan) },
    settings,
    tokens: plan.tokens,
    sequences: plan.sequences.length,
    shard_count: 0,
  } satisfies Omit<CollectManifest, 'shards' | 'complete' | 'bytes' | 'bytes_per_token'>;
  // the key: everything that decides the bytes of the shards (not the paths)
  head.key = hashOf({ ...head, key: undefined, corpus: { ...head.corpus, name: undefined } });

  // shard ranges: whole sequences, fixed by the options
  const seqsPerShard = settings.shard_tokens / settings.seq_len;
  const ranges: { index: number; seqStart: number; seqEnd: number; tokenStart: number; tokenEnd: number }[] = [];
  {
    let tok = 0;
    for (let s = 0, i = 0; s < plan.sequences.length; s += seqsPerShard, i++) {
      const e = Math.min(plan.sequences.length, s + seqsPerShard);
      let n = 0;
      for (let q = s; q < e; q++) n += plan.sequences[q].length;
      ranges.push({ index: i, seqStart: s, seqEnd: e, tokenStart: tok, tokenEnd: tok + n });
      tok += n;
    }
  }
  head.shard_count = ranges.length;

  // what is there already
  mkdirSync(out, { recursive: true });
  const manifestFile = join(out, COLLECT_MANIFEST);
  let manifest: CollectManifest = { ...head, shards: [], complete: false, bytes: 0, bytes_per_token: 0 };
  const old = readManifest(manifestFile);
  const ours = () => readdirSync(out).filter((f) => SHARD_RE.test(f));
  if (old && old.key !== head.key) {
    if ((o.onMismatch ?? 'error') === 'error') {
      throw new PolarError(
        'bad-input',
        `${manifestFile}: holds a collection made with other inputs (${describeMismatch(old, head)}); use another --out folder, or --force to delete its shards and start over`,
        { file: manifestFile },
      );
    }
    log(`polar: collect: ${out} holds a collection made with other inputs (${describeMismatch(old, head)}): starting over`);
  } else if (!old && ours().some((f) => f.endsWith('.arrow'))) {
    if ((o.onMismatch ?? 'error') === 'error') {
      const f = join(out, ours().find((x) => x.endsWith('.arrow'))!);
      throw new PolarError('bad-input', `${f}: activation shard without ${manifestFile} (not written by this collection); use another --out folder, or --force to delete the shards and start over`, { file: f });
    }
  } else if (old) {
    manifest = { ...head, shards: [], complete: false, bytes: 0, bytes_per_token: 0 };
    // keep the recorded ranges whose files are intact; a damaged one is an error naming the file
    for (const s of old.shards) {
      for (const f of s.files) {
        const p = join(out, f.file);
        if (!existsSync(p)) throw new PolarError('bad-input', `${p}: shard recorded in ${manifestFile} is missing; delete the folder or rerun with --force to start over`, { file: p });
        const size = statSync(p).size;
        if (size !== f.bytes) {
          throw badInput(p, 'size', `${f.bytes} bytes (as recorded in ${manifestFile})`, `${size} bytes: the shard is truncated or was replaced; delete it and its manifest entry, or rerun with --force`, true);
        }
      }
      manifest.shards.push(s);
    }
  }
  if (old && old.key !== head.key) {
    for (const f of ours()) rmSync(join(out, f), { force: true });
    rmSync(manifestFile, { force: true });
  } else if (!old && (o.onMismatch ?? 'error') === 'restart') {
    for (const f of ours()) rmSync(join(out, f), { force: true });
  }
  // leftovers of a killed run
  for (const f of readdirSync(out)) if (f.endsWith('.tmp') && (SHARD_RE.test(f) || f === `${COLLECT_MANIFEST}.tmp`)) rmSync(join(out, f), { force: true });

  const done = new Set(manifest.shards.map((s) => s.index));
  if (manifest.shards.length === ranges.length && old?.complete) {
    // verify the cheap way that the files are polar shards of this collection
    for (const s of manifest.shards) for (const f of s.files) readShardMeta(join(out, f.file));
    manifest = old;
    progress.end(`complete already (${formatCount(plan.tokens)} tokens in ${out}); nothing to do`);
    return finish(o, out, manifest, true, plan.tokens, 0, t0);
  }
  const resumedTokens = manifest.shards.reduce((a, s) => a + s.token_end - s.token_start, 0);
  if (resumedTokens) log(`polar: collect: resuming after ${manifest.shards.length} complete shard range(s), ${resumedTokens} tokens`);

  const todo = ranges.filter((r) => !done.has(r.index));
  progress.start(plan.tokens, resumedTokens);
  progress.note(`${settings.layers.length} layers, ${spec.family} ${spec.hidden}d`);
  let newTokens = 0;
  if (todo.length) {
    const rt = openRuntimeModel(model, { backend: 'cpu', ...(o.threads ? { threads: o.threads } : {}) });
    try {
      newTokens = await runRanges(o, rt, model, settings, plan.sequences, todo, out, manifest, manifestFile, head, progress);
    } finally {
      rt.dispose();
    }
  }
  manifest.shards.sort((a, b) => a.index - b.index);
  manifest.complete = manifest.shards.length === ranges.length;
  manifest.bytes = manifest.shards.reduce((a, s) => a + s.files.reduce((b, f) => b + f.bytes, 0), 0);
  manifest.bytes_per_token = plan.tokens ? manifest.bytes / plan.tokens : 0;
  writeFileAtomic(manifestFile, JSON.stringify(manifest, null, 1) + '\n');
  const res = finish(o, out, manifest, false, resumedTokens, newTokens, t0);
  progress.end(
    `${formatCount(newTokens)} tokens in ${res.seconds.toFixed(1)} s (${formatCount(res.tokensPerSecond)} tok/s); ${formatBytes(manifest.bytes)}, ${manifest.bytes_per_token.toFixed(0)} B/token`,
  );
  return res;
}

function finish(o: CollectOptions, out: string, manifest: CollectManifest, cached: boolean, resumedTokens: number, newTokens: number, t0: number): CollectResult {
  const seconds = (performance.now() - t0) / 1000;
  return {
    out,
    manifest,
    cached,
    resumedTokens,
    newTokens,
    seconds,
    tokensPerSecond: seconds > 0 ? newTokens / seconds : 0,
    files: manifest.shards.flatMap((s) => s.files.map((f) => join(out, f.file))),
  };
}

type Range = { index: number; seqStart: number; seqEnd: number; tokenStart: number; tokenEnd: number };

async function runRanges(
  o: CollectOptions,
  rt: RuntimeModel,
  model: LoadedModel,
  settings: CollectSettings,
  seqs: Int32Array[],
  todo: Range[],
  out: string,
  manifest: CollectManifest,
  manifestFile: string,
  head: { key: string; model: CollectManifest['model']; corpus: CollectManifest['corpus']; tool_version: string },
  progress: ProgressTask,
): Promise<number> {
  const spec = model.spec;
  const B = settings.batch;
  const session = rt.session({ maxSeqs: B, maxLen: settings.seq_len });
  const capture = { attnIn: true, headNorm: true, mlpAct: settings.mlp_activity !== 'none', layers: settings.layers };
  // every batch of every range, in order; batches never straddle ranges
  const work: { range: Range; s0: number; s1: number; last: boolean }[] = [];
  for (const r of todo) {
    for (let s = r.seqStart; s < r.seqEnd; s += B) work.push({ range: r, s0: s, s1: Math.min(r.seqEnd, s + B), last: s + B >= r.seqEnd });
  }
  const forward = (w: (typeof work)[number]): Promise<ForwardOutput> => {
    session.reset();
    const inputs = [];
    for (let s = w.s0; s < w.s1; s++) inputs.push({ slot: s - w.s0, tokens: seqs[s] });
    return session.forward(inputs, { logits: 'none', capture });
  };
  const metaFor = (layer: number, r: Range): FullShardMeta => ({
    schemaVersion: SCHEMA_VERSION,
    producer: `polar ${head.tool_version}`,
    configSha256: head.model.config_sha256,
    weightsSha256: head.model.weights_sha256,
    family: spec.family,
    modelLayers: spec.layers,
    layer,
    hidden: spec.hidden,
    ffn: spec.ffn,
    heads: spec.heads,
    kvHeads: spec.kvHeads,
    headDim: spec.headDim,
    mlpActivity: settings.mlp_activity,
    routerInputDtype: settings.router_input_dtype,
    headNormDtype: 'f32',
    corpusSha256: head.corpus.sha256,
    tokenStart: r.tokenStart,
    tokenEnd: r.tokenEnd,
  });
  let writers: Map<number, ShardWriter> | null = null;
  let written = 0;
  let newTokens = 0;
  let pending: Promise<ForwardOutput> | null = work.length ? forward(work[0]) : null;
  try {
    for (let i = 0; i < work.length; i++) {
      const w = work[i];
      const res = await pending!;
      // start the next forward before converting this one: the native work runs off the JS thread
      pending = i + 1 < work.length ? forward(work[i + 1]) : null;
      if (!writers) writers = new Map(settings.layers.map((l) => [l, new ShardWriter(metaFor(l, w.range))]));
      const T = res.tokens;
      const seqId = new Int32Array(T);
      const position = new Int32Array(T);
      for (let s = w.s0, t = 0; s < w.s1; s++) {
        for (let p = 0; p < seqs[s].length; p++, t++) {
          seqId[t] = s;
          position[t] = p;
        }
      }
      for (const c of res.captures) {
        writers.get(c.layer)!.append({ rows: T, seqId, position, routerInput: c.attnIn!, mlpAct: c.mlpAct ?? null, headNorm: c.headNorm! });
      }
      newTokens += T;
      progress.advance(T);
      if (w.last) {
        const r = w.range;
        const files: ManifestFile[] = [];
        for (const l of settings.layers) {
          const bytes = writers.get(l)!.encode();
          const name = shardFileName(l, r.index);
          writeFileAtomic(join(out, name), bytes);
          files.push({ layer: l, file: name, bytes: bytes.length, sha256: sha256Hex(bytes) });
        }
        writers = null;
        manifest.shards.push({ index: r.index, token_start: r.tokenStart, token_end: r.tokenEnd, seq_start: r.seqStart, seq_end: r.seqEnd, files });
        manifest.shards.sort((a, b) => a.index - b.index);
        manifest.bytes = manifest.shards.reduce((a, s) => a + s.files.reduce((b, f) => b + f.bytes, 0), 0);
        writeFileAtomic(manifestFile, JSON.stringify(manifest, null, 1) + '\n');
        written++;
        if (o.stopAfterShards !== undefined && written >= o.stopAfterShards) {
          throw new PolarError('interrupted', `collect: stopped after ${written} shard range(s) (stopAfterShards)`);
        }
      }
    }
  } finally {
    if (pending) await pending.catch(() => {});
    session.dispose();
  }
  return newTokens;
}
