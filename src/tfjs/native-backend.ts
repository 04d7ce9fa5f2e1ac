// The project's own TensorFlow.js backend, 'polar-native': the plain cpu backend (tensor data lives in
// Float32Arrays owned by the backend, every op has a JS kernel) whose heavy kernels run in the native
// addon, on the tensors' memory, with no copies per op. Registered through the public kernel registry:
// every cpu kernel is registered again under the new name, then the hot ones are replaced.
//
// Replaced kernels (float32 only; any other dtype or layout falls back to the cpu kernel):
//   BatchMatMul, _FusedMatMul (bias + linear/relu)      -> polar_sgemm (+ polar_bias_act)
//   Add, Sub, Multiply, RealDiv, Maximum, Minimum, SquaredDifference (same shape, scalar, row or column
//   broadcasts)                                          -> polar_binary
//   Sigmoid, Relu, Neg, Exp, Log, Sqrt, Square, Abs, Softplus -> polar_unary
//   Sum over the leading or the last axes                -> polar_col_sum / polar_row_sum
//   PolarWeightedBce (the routers' loss, fused forward + backward; a kernel of this backend only)
// and the backend offers adamwInPlace() to the AdamW optimizer of src/routers/optimizer.ts.
import { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import { tf, type KernelConfig, type TensorInfo } from './tf.ts';
import { type BcastMode, type BinaryOpName, type NativeOps, type UnaryOpName } from '../runtime/ops.ts';

export const NATIVE_BACKEND = 'polar-native';
/** Name of the fused weighted-BCE kernel (inputs logits, labels; attrs posWeight, negWeight; outputs [loss, dlogits]). */
export const WEIGHTED_BCE_KERNEL = 'PolarWeightedBce';

type Values = ReturnType<MathBackendCPU['readSync']>;

export interface AdamWStep {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  step: number;
}

/** A backend that can update optimizer state in place (the tensors' memory is host memory it owns). */
export interface InPlaceAdamW {
  adamwInPlace(w: TensorInfo, g: TensorInfo, m: TensorInfo, v: TensorInfo, o: AdamWStep): boolean;
}

export function hasInPlaceAdamW(b: unknown): b is InPlaceAdamW {
  return typeof (b as InPlaceAdamW)?.adamwInPlace === 'function';
}

export class PolarNativeBackend extends MathBackendCPU implements InPlaceAdamW {
  /** Kernel calls served natively / by the cpu fallback (for tests and `bench:train`). */
  readonly stats = { native: 0, fallback: 0 };

  constructor(readonly ops: NativeOps) {
    super();
    // The cpu backend prints a "use tfjs-node" banner on first use; this backend is the answer to it.
    (this as unknown as { firstUse: boolean }).firstUse = false;
  }

  /** The Float32Array behind a tensor, or null when it is not plain float32 data of this backend. */
  f32(t: TensorInfo): Float32Array | null {
    if (t.dtype !== 'float32') return null;
    const d = this.data.get(t.dataId);
    const v = d?.values as Values | undefined;
    return v instanceof Float32Array ? v : null;
  }

  out(shape: number[], values: Float32Array): TensorInfo {
    return this.makeTensorInfo(shape, 'float32', values);
  }

  // ---- output buffers: recycled between steps ----------------------------------------------------------
  // A training step allocates the same few MB of outputs every time; fresh Float32Arrays cost page faults
  // and zeroing (~0.2 ms per MB on a busy machine). Arrays allocated here go back to a pool when their
  // tensor data is released. An array is pooled only while this backend's data entry is its one
  // reference: one written again under another data id (or a view of it: cpu kernels slice with
  // subarray) is never recycled, and readSync/read hand out copies.
  private pool = new Map<number, Float32Array[]>();
  private poolBytes = 0;
  private owned = new WeakMap<ArrayBufferLike, Float32Array>();
  private static readonly POOL_MIN = 1024;
  private static readonly POOL_MAX_BYTES = 256 * 1024 * 1024;

  /** A Float32Array of n elements for a kernel output (contents undefined: the kernel overwrites all). */
  alloc(n: number): Float32Array {
    if (n >= PolarNativeBackend.POOL_MIN) {
      const a = this.pool.get(n)?.pop();
      if (a) {
        this.poolBytes -= a.byteLength;
        return a;
      }
      const b = new Float32Array(n);
      this.owned.set(b.buffer, b);
      return b;
    }
    return new Float32Array(n);
  }

  private taint(values: unknown, except?: Float32Array): void {
    if (values && ArrayBuffer.isView(values)) {
      const o = this.owned.get((values as Float32Array).buffer);
      if (o && o !== except) this.owned.delete(o.buffer);
    }
  }

  override write(values: Parameters<MathBackendCPU['write']>[0], shape: number[], dtype: Parameters<MathBackendCPU['write']>[2]) {
    // a pooled array handed to write() a second time now has two owners: stop recycling it
    if (values && ArrayBuffer.isView(values)) {
      const o = this.owned.get((values as Float32Array).buffer);
      if (o) {
        if (this.claimed.has(o) || values !== o) this.owned.delete(o.buffer);
        else this.claimed.add(o);
      }
    }
    return super.write(values, shape, dtype);
  }
  private claimed = new WeakSet<Float32Array>();

  override move(dataId: object, values: Parameters<MathBackendCPU['move']>[1], shape: number[], dtype: Parameters<MathBackendCPU['move']>[3], refCount: number): void {
    this.taint(values);
    super.move(dataId, values, shape, dtype, refCount);
  }

  override disposeData(dataId: object, force = false): boolean {
    if (!this.data.has(dataId)) return super.disposeData(dataId, force);
    const v = this.data.get(dataId)!.values;
    const r = super.disposeData(dataId, force);
    if (!this.data.has(dataId) && v instanceof Float32Array && this.owned.get(v.buffer) === v) {
      this.claimed.delete(v);
      if (this.poolBytes + v.byteLength <= PolarNativeBackend.POOL_MAX_BYTES) {
        let list = this.pool.get(v.length);
        if (!list) this.pool.set(v.length, (list = []));
        list.push(v);
        this.poolBytes += v.byteLength;
      } else {
        this.owned.delete(v.buffer);
      }
    }
    return r;
  }

  override readSync(dataId: object): Values {
    const v = super.readSync(dataId);
    return v instanceof Float32Array && this.owned.get(v.buffer) === v ? v.slice() : v;
  }

  override async read(dataId: object): Promise<Values> {
    return this.readSync(dataId);
  }

  override dispose(): void {
    this.pool.clear();
    this.poolBytes = 0;
    super.dispose();
  }

  adamwInPlace(w: TensorInfo, g: TensorInfo, m: TensorInfo, v: TensorInfo, o: AdamWStep): boolean {
    const W = this.f32(w), G = this.f32(g), M = this.f32(m), V = this.f32(v);
    if (!W || !G || !M || !V || W.length !== G.length || M.length !== W.length || V.length !== W.length) return false;
    this.ops.adamw(W, G, M, V, o);
    this.stats.native++;
    return true;
  }
}

type KernelArgs = Parameters<KernelConfig['kernelFunc']>[0];
type Fallback = KernelConfig['kernelFunc'];

const size = (s: readonly number[]) => s.reduce((a, d) => a * d, 1);

function matMulNative(be: PolarNativeBackend, a: TensorInfo, b: TensorInfo, ta: boolean, tb: boolean): TensorInfo | null {
  const A = be.f32(a), B = be.f32(b);
  if (!A || !B || a.shape.length < 2 || b.shape.length < 2) return null;
  const ar = a.shape.length, br = b.shape.length;
  const m = ta ? a.shape[ar - 1] : a.shape[ar - 2];
  const ka = ta ? a.shape[ar - 2] : a.shape[ar - 1];
  const kb = tb ? b.shape[br - 1] : b.shape[br - 2];
  const n = tb ? b.shape[br - 2] : b.shape[br - 1];
  if (ka !== kb) return null; // the cpu kernel reports the mismatch
  const k = ka;
  const outerA = a.shape.slice(0, -2), outerB = b.shape.slice(0, -2);
  const batchA = size(outerA), batchB = size(outerB);
  let outer: number[];
  if (batchA === batchB && (outerA.length === outerB.length ? outerA.every((d, i) => d === outerB[i]) : true)) {
    outer = outerA.length >= outerB.length ? outerA : outerB;
  } else if (batchB === 1) {
    outer = outerA.length >= outerB.length ? outerA : [...outerB.slice(0, outerB.length - outerA.length), ...outerA];
  } else if (batchA === 1) {
    outer = outerB.length >= outerA.length ? outerB : [...outerA.slice(0, outerA.length - outerB.length), ...outerB];
  } else {
    return null; // general batch broadcasting: cpu kernel
  }
  const batch = Math.max(batchA, batchB);
  const C = be.alloc(batch * m * n);
  if (batch > 0 && m > 0 && n > 0) {
    if (k === 0) {
      C.fill(0); // empty inner dimension
    } else {
      be.ops.sgemm({
        transA: ta,
        transB: tb,
        m,
        n,
        k,
        a: A,
        b: B,
        c: C,
        batch,
        strideA: batchA === 1 ? 0 : m * k,
        strideB: batchB === 1 ? 0 : k * n,
        strideC: m * n,
      });
    }
  }
  return be.out([...outer, m, n], C);
}

// Splits a broadcast of two operands into a rows x cols grid with one mode per operand, or null.
function bcastPlan(as: readonly number[], bs: readonly number[]): { out: number[]; rows: number; cols: number; am: BcastMode; bm: BcastMode } | null {
  let out: number[];
  try {
    out = tf.backend_util.assertAndGetBroadcastShape(as as number[], bs as number[]);
  } catch {
    return null;
  }
  const total = size(out);
  const r = out.length;
  const pad = (s: readonly number[]) => [...new Array(r - s.length).fill(1), ...s];
  type Mode = { mode: BcastMode; cols?: number };
  const classify = (s: readonly number[]): Mode | null => {
    const n = size(s);
    if (n === total) return { mode: 'full' };
    if (n === 1) return { mode: 'scalar' };
    const p = pad(s);
    // row: leading dims 1, then exactly out's trailing dims
    let i = 0;
    while (i < r && p[i] === 1) i++;
    if (p.slice(i).every((d, j) => d === out[i + j])) return { mode: 'row', cols: size(out.slice(i)) };
    // col: out's leading dims, then trailing 1s
    let e = r;
    while (e > 0 && p[e - 1] === 1) e--;
    if (p.slice(0, e).every((d, j) => d === out[j])) return { mode: 'col', cols: size(out.slice(e)) };
    return null;
  };
  const a = classify(as), b = classify(bs);
  if (!a || !b) return null;
  const cols = a.cols ?? b.cols ?? (out.length ? out[out.length - 1] : 1);
  if (a.cols !== undefined && b.cols !== undefined && a.cols !== b.cols) return null;
  if (cols === 0 || total % cols !== 0) return total === 0 ? { out, rows: 0, cols: 0, am: a.mode, bm: b.mode } : null;
  return { out, rows: total / cols, cols, am: a.mode, bm: b.mode };
}

function binaryKernel(kernelName: string, op: BinaryOpName, fallback: Fallback): KernelConfig {
  return {
    kernelName,
    backendName: NATIVE_BACKEND,
    kernelFunc: (args: KernelArgs) => {
      const be = args.backend as PolarNativeBackend;
      const { a, b } = args.inputs as { a: TensorInfo; b: TensorInfo };
      const A = be.f32(a), B = be.f32(b);
      const plan = A && B ? bcastPlan(a.shape, b.shape) : null;
      if (!plan || !A || !B) {
        be.stats.fallback++;
        return fallback(args);
      }
      const out = be.alloc(plan.rows * plan.cols);
      if (out.length) be.ops.binary(op, plan.rows, plan.cols, A, plan.am, B, plan.bm, out);
      be.stats.native++;
      return be.out(plan.out, out);
    },
  };
}

function unaryKernel(kernelName: string, op: UnaryOpName, fallback: Fallback): KernelConfig {
  return {
    kernelName,
    backendName: NATIVE_BACKEND,
    kernelFunc: (args: KernelArgs) => {
      const be = args.backend as PolarNativeBackend;
      const { x } = args.inputs as { x: TensorInfo };
      const X = be.f32(x);
      if (!X) {
        be.stats.fallback++;
        return fallback(args);
      }
      const out = be.alloc(X.length);
      be.ops.unary(op, X, out);
      be.stats.native++;
      return be.out(x.shape.slice(), out);
    },
  };
}

function sumKernel(fallback: Fallback): KernelConfig {
  return {
    kernelName: tf.Sum,
    backendName: NATIVE_BACKEND,
    kernelFunc: (args: KernelArgs) => {
      const be = args.backend as PolarNativeBackend;
      const { x } = args.inputs as { x: TensorInfo };
      const { axis, keepDims } = args.attrs as unknown as { axis: number | number[]; keepDims: boolean };
      const X = be.f32(x);
      const r = x.shape.length;
      const axes = tf.util.parseAxisParam(axis, x.shape as number[]).sort((p, q) => p - q);
      const contiguous = axes.every((v, i) => i === 0 || v === axes[i - 1] + 1);
      const leading = contiguous && axes.length > 0 && axes[0] === 0;
      const trailing = contiguous && axes.length > 0 && axes[axes.length - 1] === r - 1;
      if (!X || r === 0 || !(leading || trailing)) {
        be.stats.fallback++;
        return fallback(args);
      }
      const reduced = size(axes.map((i) => x.shape[i]));
      const kept = x.shape.filter((_, i) => !axes.includes(i));
      const keptSize = size(kept);
      const outShape = keepDims ? x.shape.map((d, i) => (axes.includes(i) ? 1 : d)) : kept;
      const out = be.alloc(keptSize);
      if (leading) be.ops.colSum(X, reduced, keptSize, out);
      else be.ops.rowSum(X, keptSize, reduced, out);
      be.stats.native++;
      return be.out(outShape, out);
    },
  };
}

function weightedBceKernel(): KernelConfig {
  return {
    kernelName: WEIGHTED_BCE_KERNEL,
    backendName: NATIVE_BACKEND,
    kernelFunc: (args: KernelArgs) => {
      const be = args.backend as PolarNativeBackend;
      const { logits, labels } = args.inputs as { logits: TensorInfo; labels: TensorInfo };
      const { posWeight, negWeight } = args.attrs as unknown as { posWeight: number; negWeight: number };
      const Z = be.f32(logits), Y = be.f32(labels);
      if (!Z || !Y || Z.length !== Y.length) throw new Error(`${WEIGHTED_BCE_KERNEL}: expected float32 logits and labels of one shape`);
      const n = Z.length;
      const grad = be.alloc(n);
      const sum = n ? be.ops.bceLogits(Z, Y, posWeight, negWeight, 1 / n, grad) : 0;
      be.stats.native++;
      return [be.out([], Float32Array.of(n ? sum / n : 0)), be.out(logits.shape.slice(), grad)];
    },
  };
}

function fusedMatMulKernel(fallback: Fallback): KernelConfig {
  return {
    kernelName: tf._FusedMatMul,
    backendName: NATIVE_BACKEND,
    kernelFunc: (args: KernelArgs) => {
      const be = args.backend as PolarNativeBackend;
      const { a, b, bias, preluActivationWeights } = args.inputs as Record<string, TensorInfo | undefined>;
      const { transposeA, transposeB, activation } = args.attrs as unknown as { transposeA: boolean; transposeB: boolean; activation?: string };
      const act = activation ?? 'linear';
      const biasV = bias ? be.f32(bias) : null;
      const ok = (act === 'linear' || act === 'relu') && !preluActivationWeights && (!bias || biasV);
      if (!ok) {
        be.stats.fallback++;
        return fallback(args);
      }
      const n = transposeB ? b!.shape[b!.shape.length - 2] : b!.shape[b!.shape.length - 1];
      if (bias && size(bias.shape) !== n && size(bias.shape) !== 1) {
        be.stats.fallback++;
        return fallback(args);
      }
      const y = matMulNative(be, a!, b!, transposeA, transposeB);
      if (!y) {
        be.stats.fallback++;
        return fallback(args);
      }
      const Y = be.f32(y)!;
      const rows = n ? Y.length / n : 0;
      let biasRow = biasV;
      if (biasV && biasV.length === 1 && n !== 1) biasRow = new Float32Array(n).fill(biasV[0]);
      if (Y.length && (biasRow || act === 'relu')) be.ops.biasAct(Y, rows, n, biasRow, act === 'relu' ? 'relu' : 'linear');
      be.stats.native++;
      return y;
    },
  };
}

function batchMatMulKernel(fallback: Fallback): KernelConfig {
  return {
    kernelName: tf.BatchMatMul,
    backendName: NATIVE_BACKEND,
    kernelFunc: (args: KernelArgs) => {
      const be = args.backend as PolarNativeBackend;
      const { a, b } = args.inputs as { a: TensorInfo; b: TensorInfo };
      const { transposeA, transposeB } = args.attrs as unknown as { transposeA: boolean; transposeB: boolean };
      const y = matMulNative(be, a, b, transposeA, transposeB);
      if (!y) {
        be.stats.fallback++;
        return fallback(args);
      }
      be.stats.native++;
      return y;
    },
  };
}

let registered = false;

/**
 * Registers the 'polar-native' backend and its kernels (idempotent). The cpu kernels must be registered
 * already (src/tfjs/tf.ts imports them). Returns false when the addon's ops are unavailable.
 */
export function registerNativeBackend(ops: NativeOps, priority = 0): void {
  if (registered) return;
  const cpuKernels = tf.getKernelsForBackend('cpu');
  const cpu = new Map<string, KernelConfig>(cpuKernels.map((k) => [k.kernelName, k]));
  for (const k of cpuKernels) tf.registerKernel({ ...k, backendName: NATIVE_BACKEND });
  const fb = (name: string): Fallback => {
    const k = cpu.get(name);
    if (!k) throw new Error(`polar-native: the cpu backend has no ${name} kernel to fall back on`);
    return k.kernelFunc;
  };
  const replace = (cfg: KernelConfig) => {
    if (tf.getKernel(cfg.kernelName, NATIVE_BACKEND)) tf.unregisterKernel(cfg.kernelName, NATIVE_BACKEND);
    tf.registerKernel(cfg);
  };
  replace(batchMatMulKernel(fb(tf.BatchMatMul)));
  replace(fusedMatMulKernel(fb(tf._FusedMatMul)));
  const binaries: [string, BinaryOpName][] = [
    [tf.Add, 'add'],
    [tf.Sub, 'sub'],
    [tf.Multiply, 'mul'],
    [tf.RealDiv, 'div'],
    [tf.Maximum, 'max'],
    [tf.Minimum, 'min'],
    [tf.SquaredDifference, 'squaredDifference'],
  ];
  for (const [name, op] of binaries) replace(binaryKernel(name, op, fb(name)));
  const unaries: [string, UnaryOpName][] = [
    [tf.Sigmoid, 'sigmoid'],
    [tf.Relu, 'relu'],
    [tf.Neg, 'neg'],
    [tf.Exp, 'exp'],
    [tf.Log, 'log'],
    [tf.Sqrt, 'sqrt'],
    [tf.Square, 'square'],
    [tf.Abs, 'abs'],
    [tf.Softplus, 'softplus'],
  ];
  for (const [name, op] of unaries) replace(unaryKernel(name, op, fb(name)));
  replace(sumKernel(fb(tf.Sum)));
  replace(weightedBceKernel());
  tf.registerBackend(NATIVE_BACKEND, () => new PolarNativeBackend(ops), priority);
  registered = true;
}
