// Router checkpoints of the train stage, one folder per layer under the stage's output folder:
//   layer-NNN/router.safetensors   best weights of the layer's routers (written atomically, at the end)
//   layer-NNN/metrics.jsonl        one line per router and epoch (rewritten atomically every epoch)
//   layer-NNN/state.safetensors    resumable state: current and best weights, AdamW moments, counters
//                                  (rewritten atomically every epoch, removed once router.safetensors exists)
// Tensor names follow what a PyTorch user expects: layers.{l}.mlp_router.fc1.weight [r, d],
// layers.{l}.mlp_router.fc2.weight [ffn, r], layers.{l}.attn_router.weight [H, d], layers.{l}.attn_router.bias [H].
// All written through writeSafetensors, the one safetensors writer.
import { existsSync, readdirSync, renameSync, rmSync, writeFileSync, openSync, fsyncSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { readSafetensorsHeader, readTensorF32, writeSafetensors, type TensorToWrite } from '../formats/safetensors.ts';
import { badInput } from '../errors.ts';

export const CHECKPOINT_FORMAT = 'polar-router-checkpoint';
export const CHECKPOINT_VERSION = 1;
export const STATE_FORMAT = 'polar-router-train-state';

export function layerDir(outDir: string, layer: number): string {
  return join(outDir, `layer-${String(layer).padStart(3, '0')}`);
}
export const checkpointFile = (outDir: string, layer: number) => join(layerDir(outDir, layer), 'router.safetensors');
export const stateFile = (outDir: string, layer: number) => join(layerDir(outDir, layer), 'state.safetensors');
export const metricsFile = (outDir: string, layer: number) => join(layerDir(outDir, layer), 'metrics.jsonl');

/** What router.safetensors' metadata holds (every value is a JSON string in the file). */
export interface CheckpointMeta {
  format: typeof CHECKPOINT_FORMAT;
  version: number;
  layer: number;
  family: string;
  hidden: number;
  ffn: number;
  heads: number;
  kvHeads: number;
  configSha256: string;
  weightsSha256: string;
  corpusSha256: string;
  schemaVersion: number;
  /** the unit calibration selects for attention: query heads, or KV groups of GQA models */
  selectionUnit: 'head' | 'kv-group';
  groupSize: number;
  /** MLP router rank r, or 0 when the layer has no MLP router */
  rank: number;
  headTopFraction: number;
  headTopK: number;
  backend: string;
  /** hash of everything that determines the result (options, data identity) */
  fingerprint: string;
  options: Record<string, unknown>;
  mlp: { bestEpoch: number; metrics: Record<string, unknown> } | null;
  attn: { bestEpoch: number; metrics: Record<string, unknown> } | null;
}

function metaToStrings(m: object): Record<string, string> {
  return Object.fromEntries(Object.entries(m).map(([k, v]) => [k, JSON.stringify(v)]));
}

function metaFromStrings(file: string, s: Record<string, string>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(s)) {
    try {
      out[k] = JSON.parse(v);
    } catch {
      throw badInput(file, `__metadata__.${k}`, 'a JSON value', v);
    }
  }
  return out;
}

export function writeCheckpoint(file: string, meta: CheckpointMeta, tensors: TensorToWrite[]): void {
  writeSafetensors(file, tensors, metaToStrings(meta));
}

export interface LoadedCheckpoint {
  file: string;
  meta: CheckpointMeta;
  tensors: Map<string, { shape: number[]; data: Float32Array }>;
}

/** Reads a router checkpoint (or only its metadata with `tensors: false`), refusing other formats/versions. */
export function readCheckpoint(file: string, opts: { tensors?: boolean } = {}): LoadedCheckpoint {
  const h = readSafetensorsHeader(file);
  const meta = metaFromStrings(file, h.metadata);
  if (meta.format !== CHECKPOINT_FORMAT) throw badInput(file, '__metadata__.format', `"${CHECKPOINT_FORMAT}"`, meta.format);
  if (meta.version !== CHECKPOINT_VERSION) throw badInput(file, '__metadata__.version', `${CHECKPOINT_VERSION} (this tool's version)`, meta.version);
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  if (opts.tensors !== false) for (const [name, info] of h.tensors) tensors.set(name, { shape: info.shape, data: readTensorF32(info) });
  return { file, meta: meta as unknown as CheckpointMeta, tensors };
}

/** Layers with a finished checkpoint under a train output folder. */
export function listCheckpoints(outDir: string): { layer: number; file: string }[] {
  if (!existsSync(outDir)) return [];
  return readdirSync(outDir)
    .map((d) => /^layer-(\d+)$/.exec(d))
    .filter((m): m is RegExpExecArray => !!m)
    .map((m) => ({ layer: Number(m[1]), file: join(outDir, m[0], 'router.safetensors') }))
    .filter((x) => existsSync(x.file))
    .sort((a, b) => a.layer - b.layer);
}

// ---- resumable state -----------------------------------------------------------------------------------

export interface RouterState {
  /** variables in the model's order: current values, AdamW moments, best values */
  current: Float32Array[];
  m: Float32Array[];
  v: Float32Array[];
  best: Float32Array[];
  shapes: number[][];
  step: number;
  bestEpoch: number;
  bestScore: number;
  /** score of the last improvement larger than minDelta (early stopping) */
  refScore: number;
  badEpochs: number;
  stopped: boolean;
  bestMetrics: Record<string, unknown> | null;
}

export interface TrainState {
  fingerprint: string;
  /** epochs completed */
  epochs: number;
  routers: Record<string, RouterState>;
  /** metrics.jsonl lines so far */
  history: Record<string, unknown>[];
}

export function writeState(file: string, s: TrainState): void {
  const tensors: TensorToWrite[] = [];
  const routers: Record<string, unknown> = {};
  for (const [name, r] of Object.entries(s.routers)) {
    const n = r.current.length;
    for (let i = 0; i < n; i++) {
      const shape = r.shapes[i];
      tensors.push({ name: `${name}.${i}.current`, dtype: 'F32', shape, data: r.current[i] });
      tensors.push({ name: `${name}.${i}.m`, dtype: 'F32', shape, data: r.m[i] });
      tensors.push({ name: `${name}.${i}.v`, dtype: 'F32', shape, data: r.v[i] });
      tensors.push({ name: `${name}.${i}.best`, dtype: 'F32', shape, data: r.best[i] });
    }
    routers[name] = {
      count: n,
      shapes: r.shapes,
      step: r.step,
      bestEpoch: r.bestEpoch,
      bestScore: r.bestScore,
      refScore: r.refScore,
      badEpochs: r.badEpochs,
      stopped: r.stopped,
      bestMetrics: r.bestMetrics,
    };
  }
  writeSafetensors(file, tensors, metaToStrings({ format: STATE_FORMAT, fingerprint: s.fingerprint, epochs: s.epochs, routers, history: s.history }));
}

export function readState(file: string): TrainState {
  const h = readSafetensorsHeader(file);
  const meta = metaFromStrings(file, h.metadata) as Record<string, any>;
  if (meta.format !== STATE_FORMAT) throw badInput(file, '__metadata__.format', `"${STATE_FORMAT}"`, meta.format);
  const routers: Record<string, RouterState> = {};
  for (const [name, r] of Object.entries(meta.routers as Record<string, any>)) {
    const get = (i: number, tag: string) => {
      const info = h.tensors.get(`${name}.${i}.${tag}`);
      if (!info) throw badInput(file, `tensor "${name}.${i}.${tag}"`, 'present', 'missing');
      return readTensorF32(info);
    };
    const idx = Array.from({ length: r.count as number }, (_, i) => i);
    routers[name] = {
      current: idx.map((i) => get(i, 'current')),
      m: idx.map((i) => get(i, 'm')),
      v: idx.map((i) => get(i, 'v')),
      best: idx.map((i) => get(i, 'best')),
      shapes: r.shapes,
      step: r.step,
      bestEpoch: r.bestEpoch,
      bestScore: r.bestScore ?? -Infinity,
      refScore: r.refScore ?? -Infinity,
      badEpochs: r.badEpochs,
      stopped: r.stopped,
      bestMetrics: r.bestMetrics,
    };
  }
  return { fingerprint: meta.fingerprint, epochs: meta.epochs, routers, history: meta.history };
}

/** Writes a text file atomically (temporary name, fsync, rename). */
export function writeTextAtomic(file: string, text: string): void {
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, text);
  const fd = openSync(tmp, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
}

export function removeIfExists(file: string): void {
  rmSync(file, { force: true });
}
