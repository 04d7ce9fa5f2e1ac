// Backend selection (order of preference, forced backends that cannot load, the doctor probe) and the
// native training kernels against plain references (evaluation counts, AdamW, bit unpacking, BCE).
import { describe, expect, it } from 'vitest';
import { PolarError } from '../../src/errors.ts';
import { probeBackends, selectBackend, BACKEND_CHOICES } from '../../src/tfjs/backends.ts';
import { nativeOps } from '../../src/runtime/ops.ts';
import { routerEvalJs, kGrid, EvalAccumulator } from '../../src/routers/metrics.ts';
import { headLabels, unpackBitsJs } from '../../src/routers/data.ts';
import { Rng, isValidationSeq } from '../../src/routers/rng.ts';
import { ThreadTuner } from '../../src/routers/threads.ts';

describe('backend selection', () => {
  it('rejects an unknown --backend with the list of choices', async () => {
    const e = await selectBackend('gpu-please').catch((x) => x);
    expect(e).toBeInstanceOf(PolarError);
    expect(e.message).toContain('--backend: expected one of tfjs-node-gpu, tfjs-node, polar-native, wasm, cpu');
  });

  it('probes every backend with a reason, and selects the first that loads', async () => {
    const probes = await probeBackends({ includeWasm: false });
    expect(probes.map((p) => p.name)).toEqual([...BACKEND_CHOICES]);
    for (const p of probes) expect(p.reason.length).toBeGreaterThan(10);
    const selected = probes.filter((p) => p.selected);
    expect(selected).toHaveLength(1);
    const firstOk = probes.find((p) => p.ok)!;
    expect(selected[0].name).toBe(firstOk.name);
    const sel = await selectBackend();
    expect(sel.name).toBe(firstOk.name);
    // every preferred backend skipped on the way says why
    expect(sel.skipped.map((s) => s.name)).toEqual(BACKEND_CHOICES.slice(0, BACKEND_CHOICES.indexOf(sel.name)));
  });

  it('a forced backend that cannot load fails clearly, one that can is used', async () => {
    const probes = await probeBackends({ includeWasm: false });
    for (const p of probes.filter((q) => q.name !== 'wasm')) {
      if (p.ok) {
        const s = await selectBackend(p.name);
        expect(s.name).toBe(p.name);
      } else {
        const e = await selectBackend(p.name).catch((x) => x);
        expect(e).toBeInstanceOf(PolarError);
        expect(e.message).toContain(`--backend ${p.name}: the backend cannot be loaded: `);
        expect(e.message).toContain(p.reason.slice(0, 40));
      }
    }
  });

  it('explains why tfjs-node does not load when its native part is missing', async () => {
    const p = (await probeBackends({ includeWasm: false })).find((q) => q.name === 'tfjs-node')!;
    if (!p.ok) expect(p.reason).toMatch(/tfjs_binding\.node|libtensorflow|not installed|failed to load/);
  });
});

describe('native training kernels', () => {
  const ops = nativeOps();
  it('the addon provides them', () => {
    expect(ops).not.toBeNull();
  });

  it('routerEval equals the JS definition (ties by lower index, bits or fp32 labels)', () => {
    const rng = new Rng(5);
    for (const [rows, cols] of [
      [37, 100],
      [5, 8],
      [64, 513],
    ]) {
      const z = Float32Array.from({ length: rows * cols }, () => Math.round((rng.float() * 2 - 1) * 8) / 4); // many ties
      const y = Float32Array.from({ length: rows * cols }, () => (rng.float() < 0.3 ? 1 : 0));
      const stride = Math.ceil(cols / 8);
      const bits = new Uint8Array(rows * stride);
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) if (y[r * cols + c]) bits[r * stride + (c >> 3)] |= 1 << (c & 7);
      const ks = kGrid(cols, 16);
      const js = routerEvalJs(z, rows, cols, { f32: y }, 0, ks);
      const nb = ops!.routerEval(z, rows, cols, { bits, stride }, 0, ks);
      const nf = ops!.routerEval(z, rows, cols, { f32: y }, 0, ks);
      for (const n of [nb, nf]) {
        expect([n.tp, n.fp, n.fn, n.positives, n.rowsWithPositives]).toEqual([js.tp, js.fp, js.fn, js.positives, js.rowsWithPositives]);
        expect(Array.from(n.hits)).toEqual(Array.from(js.hits));
        for (let q = 0; q < ks.length; q++) expect(n.recallSum[q]).toBeCloseTo(js.recallSum[q], 9);
      }
      // recall at k = cols is 1
      const acc = new EvalAccumulator(cols, ks, ops);
      acc.add(z, rows, { bits, stride });
      expect(acc.result().topk.at(-1)!.recall).toBe(1);
    }
  });

  it('AdamW matches the formula in float64', () => {
    const rng = new Rng(9);
    const n = 1000;
    const w = rng.uniform(new Float32Array(n), 1), g = rng.uniform(new Float32Array(n), 1);
    const m = rng.uniform(new Float32Array(n), 0.1), v = Float32Array.from(rng.uniform(new Float32Array(n), 0.1), Math.abs);
    const o = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: 7 };
    const ref = Array.from(w, (wi, i) => {
      const mi = o.beta1 * m[i] + (1 - o.beta1) * g[i];
      const vi = o.beta2 * v[i] + (1 - o.beta2) * g[i] * g[i];
      const den = Math.sqrt(vi) / Math.sqrt(1 - o.beta2 ** o.step) + o.eps;
      return wi * (1 - o.lr * o.weightDecay) - (o.lr / (1 - o.beta1 ** o.step)) * (mi / den);
    });
    ops!.adamw(w, g, m, v, o);
    for (let i = 0; i < n; i++) expect(w[i]).toBeCloseTo(ref[i], 5);
  });

  it('BCE sum matches the formula; bit unpacking matches JS', () => {
    const rng = new Rng(11);
    const n = 777;
    const z = rng.uniform(new Float32Array(n), 30), y = Float32Array.from({ length: n }, () => (rng.float() < 0.4 ? 1 : 0));
    let ref = 0;
    for (let i = 0; i < n; i++) {
      const sp = Math.max(z[i], 0) + Math.log1p(Math.exp(-Math.abs(z[i])));
      ref += 0.6 * y[i] * (sp - z[i]) + 0.4 * (1 - y[i]) * sp;
    }
    expect(ops!.bceLogits(z, y, 0.6, 0.4, 0, null) / ref).toBeCloseTo(1, 5);
    const bits = Uint8Array.from({ length: 3 * 13 }, () => rng.u32() & 255);
    const a = new Float32Array(3 * 100), b = new Float32Array(3 * 100);
    ops!.unpackBits(bits, 3, 100, 13, a);
    unpackBitsJs(bits, 3, 100, 13, b);
    expect(Array.from(a)).toEqual(Array.from(b));
  });

  it('kernel results do not depend on the thread count', async () => {
    const { native } = await import('../../src/runtime/binding.ts');
    const rng = new Rng(13);
    const n = 200_003;
    const z = rng.uniform(new Float32Array(n), 5), y = Float32Array.from({ length: n }, () => (rng.float() < 0.2 ? 1 : 0));
    const before = native().buildInfo().threads;
    const run = () => {
      const g = new Float32Array(n);
      const s = ops!.bceLogits(z, y, 0.8, 0.2, 1 / n, g);
      const cs = new Float32Array(1000);
      ops!.colSum(z, 200, 1000, cs);
      return [s, g, cs] as const;
    };
    // the training step's GEMMs (small-opt and OPT-6.7B router shapes): the trainer tunes the thread count
    // while it runs, so the weights must not depend on it
    const shapes: [boolean, boolean, number, number, number][] = [
      [false, true, 64, 256, 256],
      [false, true, 64, 1024, 256],
      [false, false, 64, 256, 1024],
      [true, false, 1024, 256, 64],
      [true, false, 256, 256, 64],
      [false, true, 64, 1024, 4096],
      [false, false, 64, 1024, 16384],
      [true, false, 16384, 1024, 64],
    ];
    const gemms = () =>
      shapes.map(([ta, tb, m, nn, k]) => {
        const r2 = new Rng(m * 7 + nn * 3 + k);
        const a = r2.uniform(new Float32Array(m * k), 1), b = r2.uniform(new Float32Array(k * nn), 1), c = new Float32Array(m * nn);
        ops!.sgemm({ transA: ta, transB: tb, m, n: nn, k, a, b, c });
        return c;
      });
    native().setThreads(1);
    const a = run();
    const ga = gemms();
    native().setThreads(Math.max(2, before));
    const b = run();
    const gb = gemms();
    native().setThreads(3);
    const gc = gemms();
    native().setThreads(before);
    expect(b[0]).toBe(a[0]);
    expect(Buffer.from(b[1].buffer).equals(Buffer.from(a[1].buffer))).toBe(true);
    expect(Buffer.from(b[2].buffer).equals(Buffer.from(a[2].buffer))).toBe(true);
    for (let i = 0; i < shapes.length; i++) {
      expect(Buffer.from(gb[i].buffer).equals(Buffer.from(ga[i].buffer))).toBe(true);
      expect(Buffer.from(gc[i].buffer).equals(Buffer.from(ga[i].buffer))).toBe(true);
    }
  });
});

describe('labels and splits', () => {
  it('head labels mark the top-k heads by norm, ties by lower index', () => {
    const norms = Float32Array.of(1, 3, 2, 3, /**/ 5, 5, 5, 5);
    const out = headLabels(norms, 2, 4, 2, new Float32Array(8));
    expect(Array.from(out)).toEqual([0, 1, 0, 1, 1, 1, 0, 0]);
  });

  it('the validation split is by sequence id and seeded', () => {
    const ids = Array.from({ length: 10000 }, (_, i) => i);
    const val = ids.filter((i) => isValidationSeq(0, i, 0.1)).length;
    expect(val).toBeGreaterThan(850);
    expect(val).toBeLessThan(1150);
    const other = ids.filter((i) => isValidationSeq(1, i, 0.1));
    expect(other).not.toEqual(ids.filter((i) => isValidationSeq(0, i, 0.1)));
  });
});

describe('thread tuner', () => {
  it('keeps the faster thread count and measures again later', () => {
    const calls: number[] = [];
    let threads = 4;
    const t = new ThreadTuner((n) => {
      calls.push(n);
      threads = n;
    }, 4, { warm: 1, probe: 3, run: 10 });
    const cost = { 4: 2.0, 1: 1.5 } as Record<number, number>; // a busy machine: one thread wins
    for (let i = 0; i < 8; i++) t.step(cost[threads]);
    expect(t.current).toBe(1);
    cost[4] = 0.8; // the machine became idle
    for (let i = 0; i < 10 + 8; i++) t.step(cost[threads]);
    expect(t.current).toBe(4);
    expect(calls).toEqual([1, 4, 1, 4]);
    // one thread available: nothing to tune
    const single = new ThreadTuner(() => {
      throw new Error('must not be called');
    }, 1);
    for (let i = 0; i < 100; i++) single.step(1);
    expect(single.current).toBe(1);
  });
});
