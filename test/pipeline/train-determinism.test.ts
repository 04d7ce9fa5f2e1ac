// Train stage on synthetic activations: byte-identical checkpoints for a seed, resume after an
// interruption gives the same bytes as an uninterrupted run, finished layers are skipped, a changed option
// is refused unless --fresh, and metrics.jsonl holds one line per router and epoch.
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PolarError } from '../../src/errors.ts';
import { syntheticActivations } from '../../src/routers/synthetic.ts';
import { trainRouters, type TrainRunOptions } from '../../src/stages/train/index.ts';
import { checkpointFile, metricsFile, readCheckpoint, stateFile, readState } from '../../src/routers/checkpoint.ts';

const spec = { layers: [0, 1, 2], hidden: 32, ffn: 96, heads: 4, kvHeads: 2, rows: 3072, seqLen: 32, density: 0.2, block: 500 };
const base = (out: string): TrainRunOptions => ({ activations: syntheticActivations(spec), out, epochs: 3, lr: 3e-3, log: () => {} });
let root: string;

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'polar-train-'));
});
afterAll(() => {
  rmSync(root, { recursive: true, force: true });
});

const bytes = (f: string) => readFileSync(f);

describe('train stage determinism and resume', () => {
  it('the same seed gives byte-identical checkpoints twice in a row', async () => {
    const a = join(root, 'a'), b = join(root, 'b');
    const sa = await trainRouters(base(a));
    const sb = await trainRouters(base(b));
    expect(sa.layers.map((l) => l.layer)).toEqual([1, 2]); // layer 0 stays dense
    for (const l of [1, 2]) {
      expect(bytes(checkpointFile(a, l)).equals(bytes(checkpointFile(b, l)))).toBe(true);
      expect(existsSync(stateFile(a, l))).toBe(false);
    }
    expect(bytes(join(a, 'train.json')).equals(bytes(join(b, 'train.json')))).toBe(true);
    // a different seed gives different weights
    const c = join(root, 'c');
    await trainRouters({ ...base(c), seed: 1, layers: [1] });
    expect(bytes(checkpointFile(a, 1)).equals(bytes(checkpointFile(c, 1)))).toBe(false);
  });

  it('streaming from the shards every epoch gives the same weights as the in-memory path', async () => {
    // a budget below the layer's rows but above its training rows: streamed, shuffled by the same draws
    const rowBytes = 4 * spec.hidden + Math.ceil(spec.ffn / 8) + 4 * spec.heads;
    const s = join(root, 'stream');
    await trainRouters({ ...base(s), layers: [1], shuffleBufferMiB: (2900 * rowBytes) / (1024 * 1024) });
    const a = readCheckpoint(checkpointFile(join(root, 'a'), 1)).tensors;
    const b = readCheckpoint(checkpointFile(s, 1)).tensors;
    for (const [name, t] of a) expect(Buffer.from(b.get(name)!.data.buffer).equals(Buffer.from(t.data.buffer))).toBe(true);
  });

  it('writes the checkpoint tensors and metadata a PyTorch user expects', () => {
    const ck = readCheckpoint(checkpointFile(join(root, 'a'), 1));
    const shapes = Object.fromEntries([...ck.tensors].map(([k, v]) => [k, v.shape]));
    expect(shapes).toEqual({
      'layers.1.mlp_router.fc1.weight': [32, 32],
      'layers.1.mlp_router.fc2.weight': [96, 32],
      'layers.1.attn_router.weight': [4, 32],
      'layers.1.attn_router.bias': [4],
    });
    expect(ck.meta.selectionUnit).toBe('kv-group');
    expect(ck.meta.groupSize).toBe(2);
    expect(ck.meta.rank).toBe(32);
    expect(ck.meta.mlp!.bestEpoch).toBeGreaterThan(0);
    expect(ck.meta.attn!.bestEpoch).toBeGreaterThan(0);
    const lines = readFileSync(metricsFile(join(root, 'a'), 1), 'utf8').trim().split('\n').map((s) => JSON.parse(s));
    expect(lines.map((m) => `${m.router}${m.epoch}`)).toEqual(['mlp1', 'attn1', 'mlp2', 'attn2', 'mlp3', 'attn3']);
    for (const m of lines) {
      for (const k of ['loss', 'precision', 'recall', 'f1', 'predDensity', 'trueDensity', 'samplesPerSec']) expect(typeof m[k]).toBe('number');
      expect(m.backend).toBe('polar-native');
    }
    // the combined metrics file has every layer's lines
    expect(readFileSync(join(root, 'a', 'metrics.jsonl'), 'utf8').trim().split('\n')).toHaveLength(12);
  });

  it('an interrupted run resumes from its last epoch and ends byte-identical', async () => {
    const r = join(root, 'resume');
    let batches = 0;
    const e = await trainRouters({ ...base(r), layers: [1], shouldStop: () => ++batches > 60 }).catch((x) => x);
    expect(e).toBeInstanceOf(PolarError);
    expect(e.kind).toBe('interrupted');
    const st = readState(stateFile(r, 1));
    expect(st.epochs).toBe(1); // 43 batches per epoch: stopped inside epoch 2
    expect(existsSync(checkpointFile(r, 1))).toBe(false);
    const logs: string[] = [];
    await trainRouters({ ...base(r), layers: [1], log: (s) => logs.push(s) });
    expect(logs.some((s) => s.includes('resuming after epoch 1'))).toBe(true);
    expect(bytes(checkpointFile(r, 1)).equals(bytes(checkpointFile(join(root, 'a'), 1)))).toBe(true);
    const lines = readFileSync(metricsFile(r, 1), 'utf8').trim().split('\n');
    expect(lines).toHaveLength(6);
  });

  it('skips finished layers, refuses changed options, retrains with fresh', async () => {
    const a = join(root, 'a');
    const before = statSync(checkpointFile(a, 1)).mtimeMs;
    const logs: string[] = [];
    await trainRouters({ ...base(a), log: (s) => logs.push(s) });
    expect(logs.filter((s) => s.includes('done already'))).toHaveLength(2);
    expect(statSync(checkpointFile(a, 1)).mtimeMs).toBe(before);
    const e = await trainRouters({ ...base(a), lr: 1e-3, layers: [1] }).catch((x) => x);
    expect(e).toBeInstanceOf(PolarError);
    expect(e.message).toContain(checkpointFile(a, 1));
    expect(e.message).toContain('--fresh');
    await trainRouters({ ...base(a), lr: 1e-3, layers: [1], fresh: true, epochs: 1 });
    expect(readCheckpoint(checkpointFile(a, 1)).meta.options.lr).toBe(1e-3);
  });

  it('rejects bad options and layers that were not collected', async () => {
    const o = join(root, 'bad');
    await expect(trainRouters({ ...base(o), layers: [7] })).rejects.toThrow(/--layers: expected layers among those collected/);
    await expect(trainRouters({ ...base(o), valFraction: 1.5 })).rejects.toThrow(/valFraction: expected a number in \(0, 1\)/);
    await expect(trainRouters({ ...base(o), backend: 'tpu' })).rejects.toThrow(/--backend: expected one of/);
  });
});
