// Typed wrapper over the native tensor kernels of native/ops_glue.cc (GEMM and the router-training
// element-wise kernels). Arguments are checked here, at the TypeScript boundary (DESIGN convention 1);
// the kernels work in place on the given typed arrays: no copies.
import { badArg } from '../errors.ts';
import { native, type NativeBinding } from './binding.ts';

export const BinaryOp = { add: 0, sub: 1, mul: 2, div: 3, max: 4, min: 5, squaredDifference: 6 } as const;
export type BinaryOpName = keyof typeof BinaryOp;
export const UnaryOp = { sigmoid: 0, relu: 1, neg: 2, exp: 3, log: 4, sqrt: 5, square: 6, abs: 7, softplus: 8, step: 9 } as const;
export type UnaryOpName = keyof typeof UnaryOp;
/** How an operand of a binary op covers a rows x cols grid. */
export const Bcast = { full: 0, scalar: 1, row: 2, col: 3 } as const;
export type BcastMode = keyof typeof Bcast;

function int(name: string, v: number, min = 0): void {
  if (!Number.isInteger(v) || v < min) throw badArg(name, `an integer >= ${min}`, v);
}
function f32(name: string, v: unknown, minLen: number): asserts v is Float32Array {
  if (!(v instanceof Float32Array)) throw badArg(name, 'a Float32Array', Object.prototype.toString.call(v));
  if (v.length < minLen) throw badArg(`${name}.length`, `>= ${minLen}`, v.length);
}

/** The native ops, or null when the addon cannot be loaded. */
export function nativeOps(): NativeOps | null {
  try {
    const b = native();
    return typeof b.sgemm === 'function' && typeof b.adamw === 'function' ? new NativeOps(b) : null;
  } catch {
    return null;
  }
}

export interface SgemmArgs {
  transA?: boolean;
  transB?: boolean;
  m: number;
  n: number;
  k: number;
  alpha?: number;
  beta?: number;
  a: Float32Array;
  b: Float32Array;
  c: Float32Array;
  lda?: number;
  ldb?: number;
  ldc?: number;
  batch?: number;
  /** element strides between the batch's operands (0 broadcasts one operand) */
  strideA?: number;
  strideB?: number;
  strideC?: number;
}

export interface RouterEvalCounts {
  tp: number;
  fp: number;
  fn: number;
  positives: number;
  rowsWithPositives: number;
  /** per k: sum over rows of |top-k ∩ positives| */
  hits: Float64Array;
  /** per k: sum over rows with a positive of the row's top-k recall */
  recallSum: Float64Array;
}

export class NativeOps {
  constructor(readonly b: NativeBinding) {}

  /** C = alpha op(A) op(B) + beta C, row-major, optionally batched. */
  sgemm(p: SgemmArgs): void {
    const { m, n, k } = p;
    int('sgemm.m', m);
    int('sgemm.n', n);
    int('sgemm.k', k);
    const ta = p.transA ? 1 : 0, tb = p.transB ? 1 : 0;
    const lda = p.lda ?? (ta ? m : k), ldb = p.ldb ?? (tb ? k : n), ldc = p.ldc ?? n;
    const batch = p.batch ?? 1;
    int('sgemm.batch', batch, 1);
    const sa = p.strideA ?? (ta ? k * lda : m * lda), sb = p.strideB ?? (tb ? n * ldb : k * ldb), sc = p.strideC ?? m * ldc;
    const span = (lines: number, len: number, ld: number, stride: number) => (lines && len ? (batch - 1) * stride + (lines - 1) * ld + len : 0);
    f32('sgemm.a', p.a, span(ta ? k : m, ta ? m : k, lda, sa));
    f32('sgemm.b', p.b, span(tb ? n : k, tb ? k : n, ldb, sb));
    f32('sgemm.c', p.c, span(m, n, ldc, sc));
    this.b.sgemm(ta, tb, m, n, k, p.alpha ?? 1, p.a, lda, p.b, ldb, p.beta ?? 0, p.c, ldc, batch, sa, sb, sc);
  }

  /** Weighted BCE on logits; writes d(loss)/d(logits) * gradScale into grad when given; returns the loss sum. */
  bceLogits(logits: Float32Array, labels: Float32Array, posWeight: number, negWeight: number, gradScale: number, grad: Float32Array | null): number {
    f32('bceLogits.logits', logits, 0);
    f32('bceLogits.labels', labels, logits.length);
    if (grad) f32('bceLogits.grad', grad, logits.length);
    return this.b.bceLogits(logits, labels, posWeight, negWeight, gradScale, grad);
  }

  /** One AdamW step in place on w, m, v. */
  adamw(w: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, o: { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; step: number }): void {
    f32('adamw.w', w, 0);
    f32('adamw.g', g, w.length);
    f32('adamw.m', m, w.length);
    f32('adamw.v', v, w.length);
    if (g.length !== w.length || m.length !== w.length || v.length !== w.length) throw badArg('adamw', `g, m, v of length ${w.length}`, [g.length, m.length, v.length]);
    int('adamw.step', o.step, 1);
    this.b.adamw(w, g, m, v, o.lr, o.beta1, o.beta2, o.eps, o.weightDecay, o.step);
  }

  binary(op: BinaryOpName, rows: number, cols: number, a: Float32Array, aMode: BcastMode, b: Float32Array, bMode: BcastMode, out: Float32Array): void {
    int('binary.rows', rows);
    int('binary.cols', cols);
    const len = (m: BcastMode) => (m === 'full' ? rows * cols : m === 'row' ? cols : m === 'col' ? rows : 1);
    f32('binary.a', a, Math.max(1, len(aMode)));
    f32('binary.b', b, Math.max(1, len(bMode)));
    f32('binary.out', out, rows * cols);
    this.b.binary(BinaryOp[op], rows, cols, a, Bcast[aMode], b, Bcast[bMode], out);
  }

  unary(op: UnaryOpName, x: Float32Array, out: Float32Array): void {
    f32('unary.x', x, 0);
    f32('unary.out', out, x.length);
    this.b.unary(UnaryOp[op], x, out);
  }

  /** In place: y = act(y + bias) row by row. */
  biasAct(y: Float32Array, rows: number, cols: number, bias: Float32Array | null, act: 'linear' | 'relu'): void {
    int('biasAct.rows', rows);
    int('biasAct.cols', cols);
    f32('biasAct.y', y, rows * cols);
    if (bias) f32('biasAct.bias', bias, cols);
    this.b.biasAct(y, rows, cols, cols, bias, act === 'relu' ? 1 : 0);
  }

  colSum(x: Float32Array, rows: number, cols: number, out: Float32Array): void {
    int('colSum.rows', rows);
    int('colSum.cols', cols);
    f32('colSum.x', x, rows * cols);
    f32('colSum.out', out, cols);
    this.b.colSum(x, rows, cols, out);
  }

  rowSum(x: Float32Array, rows: number, cols: number, out: Float32Array): void {
    int('rowSum.rows', rows);
    int('rowSum.cols', cols);
    f32('rowSum.x', x, rows * cols);
    f32('rowSum.out', out, rows);
    this.b.rowSum(x, rows, cols, out);
  }

  unpackBits(bits: Uint8Array, rows: number, cols: number, stride: number, out: Float32Array): void {
    int('unpackBits.rows', rows);
    int('unpackBits.cols', cols);
    if (!Number.isInteger(stride) || stride * 8 < cols) throw badArg('unpackBits.stride', `an integer >= ${Math.ceil(cols / 8)}`, stride);
    if (!(bits instanceof Uint8Array) || bits.length < rows * stride) throw badArg('unpackBits.bits', `a Uint8Array of >= ${rows * stride} bytes`, bits?.length);
    f32('unpackBits.out', out, rows * cols);
    this.b.unpackBits(bits, rows, cols, stride, out);
  }

  /** Confusion counts at a logit threshold and top-k recall for each k (ascending) over rows x cols. */
  routerEval(logits: Float32Array, rows: number, cols: number, labels: { f32: Float32Array } | { bits: Uint8Array; stride: number }, threshold: number, ks: Int32Array): RouterEvalCounts {
    int('routerEval.rows', rows);
    int('routerEval.cols', cols, 1);
    f32('routerEval.logits', logits, rows * cols);
    for (let j = 0; j < ks.length; j++) {
      if (!(ks[j] >= 1 && ks[j] <= cols && (j === 0 || ks[j] >= ks[j - 1]))) throw badArg(`routerEval.ks[${j}]`, `ascending values in 1..${cols}`, ks[j]);
    }
    if ('f32' in labels) {
      f32('routerEval.labels', labels.f32, rows * cols);
      return this.b.routerEval(logits, rows, cols, labels.f32, null, 0, threshold, ks);
    }
    if (labels.stride * 8 < cols || labels.bits.length < rows * labels.stride) throw badArg('routerEval.bits', `rows of >= ${Math.ceil(cols / 8)} bytes`, labels.stride);
    return this.b.routerEval(logits, rows, cols, null, labels.bits, labels.stride, threshold, ks);
  }
}
