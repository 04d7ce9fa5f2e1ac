// The 'polar-native' TensorFlow.js backend against the plain cpu backend: every replaced kernel, in every
// layout it serves natively (and the cpu fallback for the rest), gradients of both routers, the fused loss
// and the in-place AdamW. Data is created as Float32Arrays and each side runs under its own backend.
import { describe, expect, it, beforeAll } from 'vitest';
import { tf, type Tensor, type Tensor2D } from '../../src/tfjs/tf.ts';
import { selectBackend } from '../../src/tfjs/backends.ts';
import { NATIVE_BACKEND, type PolarNativeBackend } from '../../src/tfjs/native-backend.ts';
import { HeadRouter, MlpRouter } from '../../src/routers/model.ts';
import { weightedBce } from '../../src/routers/loss.ts';
import { AdamW } from '../../src/routers/optimizer.ts';
import { Rng } from '../../src/routers/rng.ts';

const rng = new Rng(42);
const rand = (n: number, scale = 1) => rng.uniform(new Float32Array(n), scale);

async function on<T>(backend: string, f: () => T): Promise<T> {
  await tf.setBackend(backend);
  return f();
}

/** Runs f under cpu and polar-native; returns both results as arrays. */
async function both(f: () => Tensor | Tensor[]): Promise<[Float32Array[], Float32Array[], number]> {
  const run = () =>
    tf.tidy(() => {
      const r = f();
      return (Array.isArray(r) ? r : [r]).map((t) => Float32Array.from(t.dataSync() as Float32Array));
    });
  const a = await on('cpu', run);
  const be = () => tf.backend() as PolarNativeBackend;
  await tf.setBackend(NATIVE_BACKEND);
  const before = be().stats.native;
  const b = run();
  return [a, b, be().stats.native - before];
}

function close(a: Float32Array, b: Float32Array, tol = 1e-5): void {
  expect(b.length).toBe(a.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const e = Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(a[i]));
    if (!(e <= worst)) worst = e;
  }
  expect(worst).toBeLessThanOrEqual(tol);
}

beforeAll(async () => {
  await selectBackend('polar-native');
});

describe('polar-native kernels match the cpu backend', () => {
  it('BatchMatMul: transposes, batches and broadcast batches', async () => {
    const cases: [number[], number[], boolean, boolean][] = [
      [[64, 96], [96, 80], false, false],
      [[64, 96], [80, 96], false, true],
      [[96, 64], [96, 80], true, false],
      [[96, 64], [80, 96], true, true],
      [[3, 17, 9], [3, 9, 5], false, false],
      [[3, 17, 9], [1, 9, 5], false, false],
      [[2, 3, 4, 5], [5, 6], false, false],
      [[1, 7], [7, 1], false, false],
    ];
    for (const [as, bs, ta, tb] of cases) {
      const A = rand(as.reduce((x, y) => x * y, 1)), B = rand(bs.reduce((x, y) => x * y, 1));
      const [a, b, nat] = await both(() => tf.matMul(tf.tensor(A, as), tf.tensor(B, bs), ta, tb));
      close(a[0], b[0], 1e-5);
      expect(nat).toBeGreaterThan(0);
    }
  });

  it('_FusedMatMul with bias and relu, and its fallback for other activations', async () => {
    const A = rand(33 * 20), B = rand(20 * 12), bias = rand(12);
    for (const activation of ['linear', 'relu', 'elu'] as const) {
      const [a, b] = await both(() =>
        tf.fused.matMul({ a: tf.tensor2d(A, [33, 20]), b: tf.tensor2d(B, [12, 20]), transposeB: true, bias: tf.tensor1d(bias), activation }),
      );
      close(a[0], b[0]);
    }
  });

  it('binary ops with same-shape, scalar, row, column and general broadcasts', async () => {
    const shapes: [number[], number[]][] = [
      [[5, 7], [5, 7]],
      [[5, 7], []],
      [[], [5, 7]],
      [[5, 7], [7]],
      [[5, 7], [1, 7]],
      [[5, 7], [5, 1]],
      [[2, 5, 7], [5, 7]],
      [[2, 5, 7], [2, 1, 1]],
      [[2, 5, 7], [1, 5, 1]], // general: falls back to the cpu kernel
      [[4, 1], [1, 6]], // general: outer product broadcast
      [[3, 1000], [1000]],
    ];
    const ops = [tf.add, tf.sub, tf.mul, tf.div, tf.maximum, tf.minimum, tf.squaredDifference] as const;
    for (const [as, bs] of shapes) {
      const A = rand(Math.max(1, as.reduce((x, y) => x * y, 1))), B = rand(Math.max(1, bs.reduce((x, y) => x * y, 1)));
      for (let i = 0; i < B.length; i++) if (Math.abs(B[i]) < 0.05) B[i] = 0.5; // keep divisions tame
      for (const op of ops) {
        const [a, b] = await both(() => op(tf.tensor(A, as), tf.tensor(B, bs)));
        close(a[0], b[0], 1e-6);
      }
    }
  });

  it('unary ops', async () => {
    const X = rand(1037, 6);
    const pos = X.map((v) => Math.abs(v) + 1e-3);
    const ops: [string, (t: Tensor) => Tensor, Float32Array, number][] = [
      ['sigmoid', tf.sigmoid, X, 1e-6],
      ['relu', tf.relu, X, 0],
      ['neg', tf.neg, X, 0],
      ['exp', tf.exp, X, 1e-6],
      ['log', tf.log, pos, 1e-6],
      ['sqrt', tf.sqrt, pos, 1e-6],
      ['square', tf.square, X, 1e-6],
      ['abs', tf.abs, X, 0],
      ['softplus', tf.softplus, X, 1e-6],
    ];
    for (const [, op, data, tol] of ops) {
      const [a, b] = await both(() => op(tf.tensor1d(data)));
      close(a[0], b[0], tol);
    }
  });

  it('Sum over leading, trailing, all and middle axes', async () => {
    const X = rand(4 * 5 * 6);
    const cases: [number | number[] | undefined, boolean][] = [
      [0, false],
      [[0, 1], true],
      [2, false],
      [[1, 2], false],
      [-1, true],
      [undefined, false],
      [1, false], // middle axis: cpu fallback
    ];
    for (const [axis, keepDims] of cases) {
      const [a, b] = await both(() => tf.sum(tf.tensor3d(X, [4, 5, 6]), axis, keepDims));
      close(a[0], b[0], 1e-5);
    }
  });
});

describe('router training on polar-native matches the cpu backend', () => {
  const B = 32, d = 48, r = 24, f = 80, H = 6;
  const X = rand(B * d), Y = Float32Array.from(rand(B * f), (v) => (v > 0.6 ? 1 : 0));
  const YH = Float32Array.from(rand(B * H), (v) => (v > 0 ? 1 : 0));

  it('weighted BCE: value and gradient (fused native kernel vs tfjs ops)', async () => {
    const Z = rand(B * f, 4);
    const [a, b, nat] = await both(() => {
      const z = tf.tensor2d(Z, [B, f]);
      const y = tf.tensor2d(Y, [B, f]);
      const { value, grads } = tf.valueAndGrads((zz: Tensor) => weightedBce(zz as Tensor2D, y, 0.8, 0.2))([z]);
      return [value, grads[0]];
    });
    close(a[0], b[0], 1e-6);
    close(a[1], b[1], 1e-6);
    expect(nat).toBeGreaterThan(0);
    // and against the formula
    let s = 0;
    for (let i = 0; i < Z.length; i++) {
      const sp = Math.max(Z[i], 0) + Math.log1p(Math.exp(-Math.abs(Z[i])));
      s += 0.8 * Y[i] * (sp - Z[i]) + 0.2 * (1 - Y[i]) * sp;
    }
    expect(b[0][0]).toBeCloseTo(s / Z.length, 6);
  });

  it('MLP and head router gradients and three AdamW steps', async () => {
    const train = (kind: 'mlp' | 'attn') => {
      const model = kind === 'mlp' ? new MlpRouter(d, r, f, new Rng(3)) : new HeadRouter(d, H, new Rng(3));
      const opt = new AdamW({ lr: 1e-2 });
      const x = tf.tensor2d(X, [B, d]);
      const y = kind === 'mlp' ? tf.tensor2d(Y, [B, f]) : tf.tensor2d(YH, [B, H]);
      const grads0: Float32Array[] = [];
      for (let s = 0; s < 3; s++) {
        const { value, grads } = tf.variableGrads(() => weightedBce(model.logits(x), y, 0.7, 0.3), model.variables());
        if (s === 0) for (const v of model.variables()) grads0.push(Float32Array.from(grads[v.name].dataSync() as Float32Array));
        opt.applyGradients(grads);
        value.dispose();
        tf.dispose(grads);
      }
      const out = [...grads0, ...model.snapshot(), ...opt.moments(model.variables()).flatMap((m) => [m.m, m.v])];
      x.dispose();
      y.dispose();
      model.dispose();
      opt.dispose();
      return out;
    };
    for (const kind of ['mlp', 'attn'] as const) {
      await tf.setBackend('cpu');
      const a = train(kind);
      await tf.setBackend(NATIVE_BACKEND);
      const be = tf.backend() as PolarNativeBackend;
      const fb = be.stats.fallback;
      const b = train(kind);
      for (let i = 0; i < a.length; i++) close(a[i], b[i], 2e-5);
      // the whole step runs natively: no cpu fallback kernels
      expect(be.stats.fallback - fb).toBe(0);
    }
  });

  it('keeps no tensors alive across steps', async () => {
    await tf.setBackend(NATIVE_BACKEND);
    const model = new MlpRouter(d, r, f, new Rng(1));
    const opt = new AdamW();
    const x = tf.tensor2d(X, [B, d]);
    const y = tf.tensor2d(Y, [B, f]);
    const step = () => {
      const { value, grads } = tf.variableGrads(() => weightedBce(model.logits(x), y, 0.7, 0.3), model.variables());
      opt.applyGradients(grads);
      value.dispose();
      tf.dispose(grads);
    };
    step();
    const n = tf.memory().numTensors;
    for (let i = 0; i < 5; i++) step();
    expect(tf.memory().numTensors).toBe(n);
    x.dispose();
    y.dispose();
    model.dispose();
    opt.dispose();
  });

  it('recycled output buffers never change data that is still referenced', async () => {
    await tf.setBackend(NATIVE_BACKEND);
    const A = rand(64 * 64), B = rand(64 * 64);
    const a = tf.tensor2d(A, [64, 64]), b = tf.tensor2d(B, [64, 64]);
    const c = tf.matMul(a, b); // a pooled output buffer
    const seen = c.dataSync() as Float32Array; // a copy: stays valid after dispose
    const want = Float32Array.from(seen);
    const view = tf.slice(c, [1, 0], [2, 64]); // the cpu Slice kernel returns a view of c's buffer
    const viewWant = Float32Array.from(view.dataSync() as Float32Array);
    const r = tf.reshape(c, [4096]); // shares c's data id
    c.dispose();
    const d = tf.matMul(b, a); // same size: would reuse c's buffer if it had been recycled
    const e = tf.matMul(a, a);
    expect(Array.from(seen)).toEqual(Array.from(want));
    expect(Array.from(view.dataSync() as Float32Array)).toEqual(Array.from(viewWant));
    expect(Array.from(r.dataSync() as Float32Array)).toEqual(Array.from(want));
    r.dispose();
    view.dispose();
    // now c's buffer is free: recycled into the next product of its size, with correct results
    const f = tf.matMul(b, b);
    const [ref] = await on('cpu', () => [Float32Array.from(tf.matMul(tf.tensor2d(B, [64, 64]), tf.tensor2d(B, [64, 64])).dataSync() as Float32Array)]);
    await tf.setBackend(NATIVE_BACKEND);
    close(ref, f.dataSync() as Float32Array);
    tf.dispose([a, b, d, e, f]);
  });
});
