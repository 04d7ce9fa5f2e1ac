// The one manifest schema of a router artifact (DESIGN.md, "Formats"). An artifact is a folder:
//
//   manifest.json        this schema: what the artifact is, which model it belongs to, how it was made,
//                        the calibration tables the runtime uses, and the sha256 of every other file
//   routers.safetensors  router weights, fp32, names a PyTorch user expects:
//                          layers.{l}.mlp_router.fc1.weight [r, hidden]   (ReLU models)
//                          layers.{l}.mlp_router.fc2.weight [ffn, r]
//                          layers.{l}.attn_router.weight    [heads, hidden]
//                          layers.{l}.attn_router.bias      [heads]
//   calibration.json     the calibrate stage's full output (recall-vs-k curves, head sweeps) for reports
//
// Runtime semantics of the tables (src/runtime/sparse.ts):
// - MLP router scores = fc2 . (fc1 . x) with x the layer's pre-attention-norm output; per call the scores of
//   the call's tokens are summed (`mlp.score`: "logit" as is, "sigmoid" after a sigmoid) and the top k
//   neurons kept, k from `layers[l].mlp.k[i]` for the smallest calibrated batch size `batchSizes[i]` >= the
//   call's token count (dense above the largest: see mlpKFor in plan.ts).
// - Attention: each token keeps its own top `layers[l].attn.kept` units (heads, or KV groups for GQA
//   models: `attention.unit`), scored by the head router (one score per query head; a group's score is the
//   sum of its heads').
// - Layers without an entry for a part (and layer 0) run that part dense.
//
// Versioning: `version` changes when a reader of the previous version would misread the file. Readers
// refuse versions they do not know (reader.ts), naming both versions.
import { badInput } from '../errors.ts';
import { ArtifactError } from './errors.ts';

import { basename } from 'node:path';
import type { LoadedModel } from '../model/index.ts';

export const ARTIFACT_FORMAT = 'polar-sparsity-artifact';
export const ARTIFACT_VERSION = 1;
/** versions this tool reads */
export const READABLE_VERSIONS: readonly number[] = [1];
export const MANIFEST_FILE = 'manifest.json';
export const ROUTERS_FILE = 'routers.safetensors';
export const CALIBRATION_FILE = 'calibration.json';

export interface ModelIdentityDims {
  family: 'opt' | 'llama';
  /** sha256 of config.json and of the weights (src/model/identity.ts) */
  configSha256: string;
  weightsSha256: string;
  layers: number;
  hidden: number;
  ffn: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  vocab: number;
  /** informative: the folder name the artifact was made from */
  name?: string;
}

/** The identity and dims of a loaded model, as artifacts and calibration files record them. */
export function modelIdentityDims(model: LoadedModel): ModelIdentityDims & { name: string } {
  const { spec } = model;
  const id = model.identity();
  return {
    name: basename(model.dir),
    family: spec.family,
    configSha256: id.configSha256,
    weightsSha256: id.weightsSha256,
    layers: spec.layers,
    hidden: spec.hidden,
    ffn: spec.ffn,
    heads: spec.heads,
    kvHeads: spec.kvHeads,
    headDim: spec.headDim,
    vocab: spec.vocab,
  };
}

export interface TensorEntry {
  name: string;
  dtype: 'F32';
  shape: number[];
}

export interface FileEntry {
  sha256: string;
  bytes: number;
}

export interface MlpLayerTable {
  /** neurons kept per call, per batch size of `calibration.batchSizes` (non-decreasing) */
  k: number[];
  /** mean recall of the batch's true active-neuron union reached at k, on the calibration split */
  recall: number[];
  /** the same on the held-out check split (never used to choose k); null where it had too few rows */
  recallCheck: (number | null)[];
  /** mean fraction of neurons active in at least one token of the batch */
  unionDensity: number[];
  score: 'logit' | 'sigmoid';
}

export interface AttnLayerTable {
  /** units (heads, or KV groups) each token keeps */
  kept: number;
  /** units of the layer (heads or KV groups) */
  units: number;
}

export interface LayerEntry {
  layer: number;
  /** MLP sparse on this layer (absent: dense) */
  mlp?: MlpLayerTable;
  /** attention sparse on this layer (absent: dense) */
  attn?: AttnLayerTable;
}

export interface Manifest {
  format: typeof ARTIFACT_FORMAT;
  version: number;
  createdAt: string;
  tool: { name: string; version: string };
  model: ModelIdentityDims;
  /** the text the activations (and so the routers) came from */
  corpus: { sha256: string; tokens: number; name?: string };
  routers: {
    file: string;
    tensors: TensorEntry[];
    /** MLP router rank per layer (layers with an MLP router) */
    mlpRank: Record<string, number>;
    /** outputs of the head router: one score per query head */
    attnOutputs: number;
  };
  calibration: {
    batchSizes: number[];
    /** MLP: recall target the k were chosen for, granule k is rounded up to */
    mlpTarget: number | null;
    granule: number | null;
    attention: {
      unit: 'head' | 'kv-group';
      /** "fidelity": searched against a perplexity budget; "fixed": a fraction of the units */
      mode: 'fidelity' | 'fixed' | 'dense';
      maxPplIncrease: number | null;
      fraction: number | null;
      /** perplexities on the calibration tokens (dense, and with every sparse part on) */
      densePpl: number | null;
      sparsePpl: number | null;
      tokens: number;
      evalBatch: number | null;
    };
  };
  layers: LayerEntry[];
  /** sha256 and size of every file of the folder but manifest.json */
  files: Record<string, FileEntry>;
}

// ---- validation ----------------------------------------------------------------------------------------

type Obj = Record<string, unknown>;

function obj(file: string, field: string, v: unknown): Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw badInput(file, field, 'an object', v);
  return v as Obj;
}
function str(file: string, field: string, v: unknown): string {
  if (typeof v !== 'string' || !v.length) throw badInput(file, field, 'a non-empty string', v);
  return v;
}
function int(file: string, field: string, v: unknown, min = 0): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw badInput(file, field, `an integer >= ${min}`, v);
  return v;
}
function num(file: string, field: string, v: unknown, nullable = false): number | null {
  if (nullable && v === null) return null;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw badInput(file, field, nullable ? 'a number or null' : 'a number', v);
  return v;
}
function sha(file: string, field: string, v: unknown): string {
  if (typeof v !== 'string' || !/^[0-9a-f]{64}$/.test(v)) throw badInput(file, field, 'a sha256 (64 hex digits)', v);
  return v;
}
function arr(file: string, field: string, v: unknown, len?: number): unknown[] {
  if (!Array.isArray(v) || (len !== undefined && v.length !== len)) throw badInput(file, field, len !== undefined ? `an array of ${len} values` : 'an array', v);
  return v;
}
function oneOf<T extends string>(file: string, field: string, v: unknown, options: readonly T[]): T {
  if (!options.includes(v as T)) throw badInput(file, field, `one of ${options.map((o) => JSON.stringify(o)).join(', ')}`, v);
  return v as T;
}

/**
 * Checks format and version first (so that a future version is refused as such, not as a schema error),
 * then every field a reader relies on. Returns the manifest typed.
 */
export function checkManifest(file: string, j: unknown): Manifest {
  const m = obj(file, '(manifest)', j);
  if (m.format !== ARTIFACT_FORMAT) {
    throw new ArtifactError('format', badInput(file, 'format', `"${ARTIFACT_FORMAT}" (a polar router artifact)`, m.format).message, file, 'format');
  }
  if (typeof m.version !== 'number' || !READABLE_VERSIONS.includes(m.version)) {
    const tool = (m.tool as Obj | undefined)?.version;
    const newer = typeof m.version === 'number' && m.version > Math.max(...READABLE_VERSIONS);
    throw new ArtifactError(
      'version',
      `${file}: version: expected ${READABLE_VERSIONS.join(' or ')} (the artifact versions this polar reads), received ${JSON.stringify(m.version)}` +
        (typeof tool === 'string' ? ` (written by polar ${tool})` : '') +
        (newer ? '; upgrade polar to read it' : ''),
      file,
      'version',
    );
  }
  str(file, 'createdAt', m.createdAt);
  const tool = obj(file, 'tool', m.tool);
  str(file, 'tool.name', tool.name);
  str(file, 'tool.version', tool.version);

  const md = obj(file, 'model', m.model);
  oneOf(file, 'model.family', md.family, ['opt', 'llama'] as const);
  sha(file, 'model.configSha256', md.configSha256);
  sha(file, 'model.weightsSha256', md.weightsSha256);
  const L = int(file, 'model.layers', md.layers, 1);
  const hidden = int(file, 'model.hidden', md.hidden, 1);
  const ffn = int(file, 'model.ffn', md.ffn, 1);
  const heads = int(file, 'model.heads', md.heads, 1);
  const kvHeads = int(file, 'model.kvHeads', md.kvHeads, 1);
  int(file, 'model.headDim', md.headDim, 1);
  int(file, 'model.vocab', md.vocab, 1);
  if (heads % kvHeads) throw badInput(file, 'model.kvHeads', `a divisor of model.heads (${heads})`, kvHeads);

  const corpus = obj(file, 'corpus', m.corpus);
  str(file, 'corpus.sha256', corpus.sha256);
  int(file, 'corpus.tokens', corpus.tokens);

  const routers = obj(file, 'routers', m.routers);
  str(file, 'routers.file', routers.file);
  const tensors = arr(file, 'routers.tensors', routers.tensors);
  const names = new Set<string>();
  tensors.forEach((t, i) => {
    const at = `routers.tensors[${i}]`;
    const o = obj(file, at, t);
    const name = str(file, `${at}.name`, o.name);
    if (names.has(name)) throw badInput(file, `${at}.name`, 'each tensor once', name);
    names.add(name);
    oneOf(file, `${at}.dtype`, o.dtype, ['F32'] as const);
    arr(file, `${at}.shape`, o.shape).forEach((d, k) => int(file, `${at}.shape[${k}]`, d, 1));
  });
  const ranks = obj(file, 'routers.mlpRank', routers.mlpRank);
  for (const [k, v] of Object.entries(ranks)) int(file, `routers.mlpRank.${k}`, v, 1);
  int(file, 'routers.attnOutputs', routers.attnOutputs, 1);

  const cal = obj(file, 'calibration', m.calibration);
  const bs = arr(file, 'calibration.batchSizes', cal.batchSizes).map((b, i) => int(file, `calibration.batchSizes[${i}]`, b, 1));
  for (let i = 1; i < bs.length; i++) if (bs[i] <= bs[i - 1]) throw badInput(file, 'calibration.batchSizes', 'increasing batch sizes', bs);
  const mlpTarget = num(file, 'calibration.mlpTarget', cal.mlpTarget, true);
  if (mlpTarget !== null && !(mlpTarget > 0 && mlpTarget <= 1)) throw badInput(file, 'calibration.mlpTarget', 'a number in (0, 1] or null', mlpTarget);
  if (cal.granule !== null) int(file, 'calibration.granule', cal.granule, 1);
  const att = obj(file, 'calibration.attention', cal.attention);
  const unit = oneOf(file, 'calibration.attention.unit', att.unit, ['head', 'kv-group'] as const);
  oneOf(file, 'calibration.attention.mode', att.mode, ['fidelity', 'fixed', 'dense'] as const);
  num(file, 'calibration.attention.maxPplIncrease', att.maxPplIncrease, true);
  num(file, 'calibration.attention.fraction', att.fraction, true);
  num(file, 'calibration.attention.densePpl', att.densePpl, true);
  num(file, 'calibration.attention.sparsePpl', att.sparsePpl, true);
  int(file, 'calibration.attention.tokens', att.tokens);
  if (att.evalBatch !== null) int(file, 'calibration.attention.evalBatch', att.evalBatch, 1);

  const seen = new Set<number>();
  arr(file, 'layers', m.layers).forEach((e, i) => {
    const at = `layers[${i}]`;
    const o = obj(file, at, e);
    const l = int(file, `${at}.layer`, o.layer);
    if (l >= L) throw badInput(file, `${at}.layer`, `a layer in 0..${L - 1}`, l);
    if (seen.has(l)) throw badInput(file, `${at}.layer`, 'each layer once', l);
    seen.add(l);
    if (l === 0 && (o.mlp !== undefined || o.attn !== undefined)) throw badInput(file, `${at}`, 'layer 0 dense (no mlp or attn table)', o);
    if (o.mlp !== undefined) {
      const t = obj(file, `${at}.mlp`, o.mlp);
      const k = arr(file, `${at}.mlp.k`, t.k, bs.length).map((v, j) => int(file, `${at}.mlp.k[${j}]`, v));
      k.forEach((v, j) => {
        if (v > ffn) throw badInput(file, `${at}.mlp.k[${j}]`, `at most ffn (${ffn})`, v);
        if (j && v < k[j - 1]) throw badInput(file, `${at}.mlp.k`, 'values non-decreasing in batch size', k);
      });
      for (const f of ['recall', 'recallCheck', 'unionDensity'] as const) {
        arr(file, `${at}.mlp.${f}`, t[f], bs.length).forEach((v, j) => num(file, `${at}.mlp.${f}[${j}]`, v, f === 'recallCheck'));
      }
      oneOf(file, `${at}.mlp.score`, t.score, ['logit', 'sigmoid'] as const);
      if (!names.has(`layers.${l}.mlp_router.fc1.weight`) || !names.has(`layers.${l}.mlp_router.fc2.weight`)) {
        throw badInput(file, `${at}.mlp`, `the tensors layers.${l}.mlp_router.fc1.weight and .fc2.weight in routers.tensors`, 'missing', true);
      }
    }
    if (o.attn !== undefined) {
      const t = obj(file, `${at}.attn`, o.attn);
      const units = int(file, `${at}.attn.units`, t.units, 1);
      const want = unit === 'kv-group' ? kvHeads : heads;
      if (units !== want) throw badInput(file, `${at}.attn.units`, `${want} (${unit === 'kv-group' ? 'KV groups' : 'heads'} of the model)`, units);
      const kept = int(file, `${at}.attn.kept`, t.kept);
      if (kept > units) throw badInput(file, `${at}.attn.kept`, `at most ${units}`, kept);
      if (!names.has(`layers.${l}.attn_router.weight`)) {
        throw badInput(file, `${at}.attn`, `the tensor layers.${l}.attn_router.weight in routers.tensors`, 'missing', true);
      }
    }
  });

  const files = obj(file, 'files', m.files);
  for (const [name, v] of Object.entries(files)) {
    if (name.includes('/') || name.includes('\\') || name === MANIFEST_FILE || name.startsWith('.')) throw badInput(file, `files.${name}`, 'a plain file name of the folder', name);
    const o = obj(file, `files.${name}`, v);
    sha(file, `files.${name}.sha256`, o.sha256);
    int(file, `files.${name}.bytes`, o.bytes);
  }
  if (!(String(routers.file) in files)) throw badInput(file, 'files', `an entry for ${routers.file}`, Object.keys(files));
  return m as unknown as Manifest;
}
