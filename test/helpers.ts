// Test helpers shared by the suites: paths of the bundled models and a CLI runner.
import { spawnSync } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';

export const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const models = {
  tinyOpt: join(root, 'data/models/tiny-opt'),
  tinyLlama: join(root, 'data/models/tiny-llama'),
  smallOpt: join(root, 'data/models/small-opt'),
  smallLlama: join(root, 'data/models/small-llama'),
};
export const evalText = join(root, 'data/fixtures/corpus/eval.txt');

export function polar(args: string[], opts: { timeout?: number; env?: Record<string, string> } = {}) {
  const r = spawnSync(process.execPath, [join(root, 'bin/polar.js'), ...args], {
    encoding: 'utf8',
    timeout: opts.timeout ?? 120_000,
    env: { ...process.env, ...opts.env },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, signal: r.signal };
}

/** Largest absolute difference of two equally long arrays; a NaN on either side makes it NaN (a failure). */
export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= m)) m = d;
  }
  return m;
}

/** Deterministic pseudo-random numbers in [-0.5, 0.5) (32-bit LCG) for synthetic weights and routers. */
export function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  };
}
