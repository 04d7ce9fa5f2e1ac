// The runtime over the native addon (CPU backend): openRuntimeModel(loaded model) -> RuntimeModel with
// sessions (KV caches) and a batched causal forward, dense or sparse (src/runtime/sparse.ts).
// Every argument is checked here, with the project's one message shape, before the addon sees it.
// Weights are never read into the JS heap: the addon maps the safetensors files (file, offset, length).
import { badArg, PolarError } from '../errors.ts';
import type { LoadedModel, ModelSpec } from '../model/index.ts';
import { native } from './binding.ts';
import { openCudaModel } from './cuda.ts';
import { buildSparseCall, checkSparsePlan, type SparseForwardOptions, type SparsePlan } from './sparse.ts';
import type { Backend, CaptureRequest, ForwardOptions, ForwardOutput, LayerCapture, RuntimeModel, RuntimeSession, StepInput } from './types.ts';

// ---- the addon's side of the API (declared on NativeBinding in binding.ts) ----

/** Opaque handle of a native object (model or session). */
export type NativeHandle = { readonly __polarNativeHandle: unique symbol };

export interface NativeModelConfig {
  family: 0 | 1;
  layers: number;
  hidden: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  ffn: number;
  vocab: number;
  maxPositions: number;
  embedDim: number;
  positionOffset: number;
  normBefore: 0 | 1;
  gated: 0 | 1;
  normEps: number;
  rope: 0 | 1 | 2;
  ropeTheta: number;
  ropeFactor: number;
  ropeLowFreqFactor: number;
  ropeHighFreqFactor: number;
  ropeOriginalMaxPositions: number;
}

export interface NativeWeightDesc {
  name: string;
  file: string;
  offset: number;
  nbytes: number;
  dtype: 'F32' | 'F16' | 'BF16';
  shape: number[];
}

export interface NativeCaptureRequest {
  attnIn?: Float32Array;
  mlpIn?: Float32Array;
  mlpAct?: Float32Array;
  headNorm?: Float32Array;
}

/** modes: 0 dense, 1 router, 2 explicit */
export interface NativeSparseLayerRequest {
  mlpMode: 0 | 1 | 2 | number;
  mlpFc1?: Float32Array;
  mlpFc2?: Float32Array;
  mlpRank?: number;
  mlpScore?: number;
  mlpK?: number;
  mlpIdx?: Int32Array;
  attnMode: 0 | 1 | 2 | number;
  attnW?: Float32Array;
  attnB?: Float32Array | null;
  attnUnits?: number;
  attnK?: number;
  attnMask?: Uint8Array;
  outMlpIdx?: Int32Array;
  outMlpN?: Int32Array;
  outHeads?: Uint8Array;
}

export interface NativeForwardRequest {
  slots: Int32Array;
  counts: Int32Array;
  tokens: Int32Array;
  /** 0 none, 1 all, 2 last */
  logitsMode: 0 | 1 | 2;
  logits: Float32Array | null;
  captures: (NativeCaptureRequest | null)[] | null;
  sparse: (NativeSparseLayerRequest | null)[] | null;
}

export function nativeModelConfig(spec: ModelSpec): NativeModelConfig {
  const r = spec.rope;
  return {
    family: spec.family === 'opt' ? 0 : 1,
    layers: spec.layers,
    hidden: spec.hidden,
    heads: spec.heads,
    kvHeads: spec.kvHeads,
    headDim: spec.headDim,
    ffn: spec.ffn,
    vocab: spec.vocab,
    maxPositions: spec.maxPositions,
    embedDim: spec.wordEmbedProjDim,
    positionOffset: spec.positionOffset,
    normBefore: spec.normBefore ? 1 : 0,
    gated: spec.gated ? 1 : 0,
    normEps: spec.normEps,
    rope: r ? (r.type === 'llama3' ? 2 : 1) : 0,
    ropeTheta: r?.theta ?? 0,
    ropeFactor: r?.factor ?? 1,
    ropeLowFreqFactor: r?.lowFreqFactor ?? 1,
    ropeHighFreqFactor: r?.highFreqFactor ?? 4,
    ropeOriginalMaxPositions: r?.originalMaxPositions ?? 0,
  };
}

// ---- the runtime ----

export interface OpenRuntimeOptions {
  backend?: Backend;
  /** CPU worker threads (process-wide; default: the machine's cores or POLAR_THREADS) */
  threads?: number;
  /** CUDA backend: device ordinal (default 0) */
  device?: number;
  /** CUDA backend: GPU dtype of fp32 checkpoints (fp16/bf16 checkpoints stay as stored; default 'f16') */
  cudaDtype?: 'f16' | 'bf16';
}

export const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);

/** A native call's failure as a PolarError naming what was being done (PolarErrors pass through). */
export function nativeError(e: unknown, what: string): PolarError {
  if (e instanceof PolarError) return e;
  const msg = e instanceof Error ? e.message : String(e);
  return new PolarError('native', `${what}: ${msg}`, { cause: e });
}

export function openRuntimeModel(model: LoadedModel, opts: OpenRuntimeOptions = {}): RuntimeModel {
  const backend = opts.backend ?? 'cpu';
  if (backend === 'cuda') return openCudaModel(model, opts);
  if (backend !== 'cpu') throw badArg('runtime backend', '"cpu" or "cuda"', backend);
  if (opts.threads !== undefined && (!isInt(opts.threads) || opts.threads < 1 || opts.threads > 1024)) {
    throw badArg('runtime threads', 'an integer in 1..1024', opts.threads);
  }
  const nb = native();
  if (opts.threads !== undefined) nb.setThreads(opts.threads);
  const weights: NativeWeightDesc[] = model.weights.map((w) => ({ name: w.name, file: w.file, offset: w.offset, nbytes: w.nbytes, dtype: w.dtype, shape: w.shape }));
  let handle: NativeHandle;
  try {
    handle = nb.modelCreate(nativeModelConfig(model.spec), weights);
  } catch (e) {
    throw nativeError(e, `${model.dir}: loading the model into the native runtime`);
  }
  return new CpuModel(model.spec, handle);
}

/** The addon functions a backend's models and sessions go through (CPU: model_glue.cc; CUDA: cuda_glue.cc). */
export interface NativeSessionOps {
  backend: Backend;
  modelFree(model: NativeHandle): void;
  sessionCreate(model: NativeHandle, maxSeqs: number, maxLen: number): NativeHandle;
  sessionFree(session: NativeHandle): void;
  sessionReset(session: NativeHandle, slot: number): void;
  sessionForward(session: NativeHandle, req: NativeForwardRequest): Promise<void>;
}

const cpuOps = (): NativeSessionOps => {
  const nb = native();
  return {
    backend: 'cpu',
    modelFree: (m) => nb.modelFree(m),
    sessionCreate: (m, a, b) => nb.sessionCreate(m, a, b),
    sessionFree: (s) => nb.sessionFree(s),
    sessionReset: (s, slot) => nb.sessionReset(s, slot),
    sessionForward: (s, req) => nb.sessionForward(s, req),
  };
};

/** A runtime model over native handles: the CPU backend, and the CUDA backend with its own ops (cuda.ts). */
export class CpuModel implements RuntimeModel {
  readonly backend: Backend;
  private handle: NativeHandle | null;
  private sessions = new Set<CpuSession>();
  private readonly ops: NativeSessionOps;

  constructor(readonly spec: ModelSpec, handle: NativeHandle, ops?: NativeSessionOps) {
    this.handle = handle;
    this.ops = ops ?? cpuOps();
    this.backend = this.ops.backend;
  }

  session(opts: { maxSeqs: number; maxLen: number }): RuntimeSession {
    if (!this.handle) throw new PolarError('bad-input', 'runtime model: expected a model that is not disposed, received a disposed one');
    if (!opts || typeof opts !== 'object') throw badArg('session options', 'an object { maxSeqs, maxLen }', opts);
    const { maxSeqs, maxLen } = opts;
    if (!isInt(maxSeqs) || maxSeqs < 1 || maxSeqs > 1 << 16) throw badArg('session maxSeqs', 'an integer in 1..65536', maxSeqs);
    const lenCap = this.spec.family === 'opt' ? this.spec.maxPositions : 1 << 20;
    if (!isInt(maxLen) || maxLen < 1 || maxLen > lenCap) {
      throw badArg('session maxLen', `an integer in 1..${lenCap}${this.spec.family === 'opt' ? ' (the model\'s learned positions)' : ''}`, maxLen);
    }
    let h: NativeHandle;
    try {
      h = this.ops.sessionCreate(this.handle, maxSeqs, maxLen);
    } catch (e) {
      throw nativeError(e, 'runtime session');
    }
    const s = new CpuSession(this.spec, h, maxSeqs, maxLen, () => this.sessions.delete(s), this.ops);
    this.sessions.add(s);
    return s;
  }

  /** the model's native handle (throws when disposed); for backend-specific queries such as cudaModelInfo */
  nativeHandle(): NativeHandle {
    if (!this.handle) throw new PolarError('bad-input', 'runtime model: expected a model that is not disposed, received a disposed one');
    return this.handle;
  }

  dispose(): void {
    for (const s of [...this.sessions]) s.dispose();
    if (this.handle) this.ops.modelFree(this.handle);
    this.handle = null;
  }
}

class CpuSession implements RuntimeSession {
  private handle: NativeHandle | null;
  private lengths: Int32Array;
  private busy = false;
  private plan: SparsePlan | null = null;

  constructor(
    private readonly spec: ModelSpec,
    handle: NativeHandle,
    readonly maxSeqs: number,
    readonly maxLen: number,
    private readonly onDispose: () => void,
    private readonly ops: NativeSessionOps = cpuOps(),
  ) {
    this.handle = handle;
    this.lengths = new Int32Array(maxSeqs);
  }

  private live(what: string): NativeHandle {
    if (!this.handle) throw new PolarError('bad-input', `${what}: expected a session that is not disposed, received a disposed one`);
    return this.handle;
  }

  private checkSlot(what: string, slot: unknown): number {
    if (!isInt(slot) || slot < 0 || slot >= this.maxSeqs) throw badArg(what, `an integer slot in 0..${this.maxSeqs - 1}`, slot);
    return slot;
  }

  length(slot: number): number {
    this.live('session.length');
    return this.lengths[this.checkSlot('session.length slot', slot)];
  }

  reset(slot?: number): void {
    const h = this.live('session.reset');
    if (slot !== undefined) this.checkSlot('session.reset slot', slot);
    if (this.busy) throw new PolarError('bad-input', 'session.reset: expected no forward running on this session (await it first), received a call during a forward');
    this.ops.sessionReset(h, slot ?? -1);
    if (slot === undefined) this.lengths.fill(0);
    else this.lengths[slot] = 0;
  }

  setSparsePlan(plan: SparsePlan | null): void {
    this.live('session.setSparsePlan');
    this.plan = plan === null ? null : checkSparsePlan(this.spec, plan);
  }

  dispose(): void {
    if (!this.handle) return;
    this.ops.sessionFree(this.handle);
    this.handle = null;
    this.onDispose();
  }

  async forward(inputs: StepInput[], opts: ForwardOptions = {}): Promise<ForwardOutput> {
    const h = this.live('session.forward');
    const spec = this.spec;
    if (this.busy) throw new PolarError('bad-input', 'session.forward: expected the previous forward on this session to have finished (await it), received a second call while one is running');
    if (!Array.isArray(inputs) || inputs.length === 0) throw badArg('forward inputs', 'a non-empty array of { slot, tokens }', inputs);
    if (inputs.length > this.maxSeqs) throw badArg('forward inputs', `at most maxSeqs (${this.maxSeqs}) inputs`, inputs.length);
    if (!opts || typeof opts !== 'object') throw badArg('forward options', 'an object', opts);
    const mode = opts.logits ?? 'all';
    if (mode !== 'all' && mode !== 'last' && mode !== 'none') throw badArg('forward opts.logits', '"all", "last" or "none"', mode);

    // inputs
    const used = new Set<number>();
    const counts = new Int32Array(inputs.length);
    const slots = new Int32Array(inputs.length);
    let T = 0;
    for (const [i, inp] of inputs.entries()) {
      if (!inp || typeof inp !== 'object') throw badArg(`forward inputs[${i}]`, 'an object { slot, tokens }', inp);
      const slot = this.checkSlot(`forward inputs[${i}].slot`, inp.slot);
      if (used.has(slot)) throw badArg(`forward inputs[${i}].slot`, 'a slot not used by another input of the call', slot);
      used.add(slot);
      const toks = inp.tokens;
      if (!(toks instanceof Int32Array) && !Array.isArray(toks)) throw badArg(`forward inputs[${i}].tokens`, 'an Int32Array or an array of token ids', toks);
      if (toks.length === 0) throw badArg(`forward inputs[${i}].tokens`, 'at least one token', []);
      const after = this.lengths[slot] + toks.length;
      if (after > this.maxLen) {
        throw badArg(`forward inputs[${i}].tokens`, `at most ${this.maxLen - this.lengths[slot]} tokens (slot ${slot} holds ${this.lengths[slot]} of maxLen ${this.maxLen})`, toks.length);
      }
      slots[i] = slot;
      counts[i] = toks.length;
      T += toks.length;
    }
    const tokens = new Int32Array(T);
    {
      let t = 0;
      for (const [i, inp] of inputs.entries()) {
        const toks = inp.tokens;
        for (let j = 0; j < toks.length; j++, t++) {
          const v = toks[j];
          if (!isInt(v) || v < 0 || v >= spec.vocab) throw badArg(`forward inputs[${i}].tokens[${j}]`, `a token id in 0..${spec.vocab - 1}`, v);
          tokens[t] = v;
        }
      }
    }

    // captures
    const cap = opts.capture;
    let captureLayers: number[] = [];
    let nativeCaps: (NativeCaptureRequest | null)[] | null = null;
    if (cap !== undefined) {
      if (!cap || typeof cap !== 'object') throw badArg('forward opts.capture', 'an object', cap);
      const kinds = (['attnIn', 'mlpIn', 'mlpAct', 'headNorm'] as const).filter((k) => cap[k]);
      if (cap.layers !== undefined) {
        if (!Array.isArray(cap.layers)) throw badArg('forward opts.capture.layers', 'an array of layer indices', cap.layers);
        const seen = new Set<number>();
        for (const l of cap.layers) {
          if (!isInt(l) || l < 0 || l >= spec.layers) throw badArg('forward opts.capture.layers', `layer indices in 0..${spec.layers - 1}`, l);
          if (seen.has(l)) throw badArg('forward opts.capture.layers', 'distinct layer indices', cap.layers);
          seen.add(l);
        }
        captureLayers = [...cap.layers];
      } else {
        captureLayers = Array.from({ length: spec.layers }, (_, l) => l);
      }
      if (kinds.length && captureLayers.length) {
        nativeCaps = new Array(spec.layers).fill(null);
        for (const l of captureLayers) nativeCaps[l] = allocCapture(spec, cap, T);
      } else {
        captureLayers = [];
      }
    }

    // sparsity
    let sparseOpts: SparseForwardOptions | undefined;
    let useSparse = this.plan !== null;
    if (opts.sparse === false) useSparse = false;
    else if (opts.sparse === true) useSparse = true;
    else if (opts.sparse !== undefined) {
      sparseOpts = opts.sparse;
      useSparse = true;
    }
    const sparseCall = useSparse ? buildSparseCall(spec, this.plan, sparseOpts, T) : null;

    const rows = mode === 'all' ? T : mode === 'last' ? inputs.length : 0;
    const logits = rows ? new Float32Array(rows * spec.vocab) : null;
    const req: NativeForwardRequest = {
      slots,
      counts,
      tokens,
      logitsMode: mode === 'none' ? 0 : mode === 'all' ? 1 : 2,
      logits,
      captures: nativeCaps,
      sparse: sparseCall ? sparseCall.layers : null,
    };
    this.busy = true;
    try {
      await this.ops.sessionForward(h, req);
    } catch (e) {
      throw nativeError(e, 'session.forward');
    } finally {
      this.busy = false;
    }
    for (let i = 0; i < inputs.length; i++) this.lengths[slots[i]] += counts[i];
    const captures: LayerCapture[] = captureLayers.map((layer) => ({ layer, ...(nativeCaps![layer] as NativeCaptureRequest) }));
    const out: ForwardOutput = { tokens: T, logits, captures };
    if (sparseCall) out.sparse = sparseCall.report();
    return out;
  }
}

function allocCapture(spec: ModelSpec, cap: CaptureRequest, T: number): NativeCaptureRequest {
  const c: NativeCaptureRequest = {};
  if (cap.attnIn) c.attnIn = new Float32Array(T * spec.hidden);
  if (cap.mlpIn) c.mlpIn = new Float32Array(T * spec.hidden);
  if (cap.mlpAct) c.mlpAct = new Float32Array(T * spec.ffn);
  if (cap.headNorm) c.headNorm = new Float32Array(T * spec.heads);
  return c;
}
