// End to end on the tiny models: golden values through the Arrow reader, rerun does nothing, changed
// inputs are refused, damaged shards are named.
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { collect } from '../../src/stages/collect/collect.ts';
import { openActivations } from '../../src/arrow/reader.ts';
import { readSafetensorsHeader, readTensorF32, readTensorInt } from '../../src/formats/safetensors.ts';
import { loadModel } from '../../src/model/index.ts';
import { PolarError } from '../../src/errors.ts';
import { maxAbsDiff } from '../helpers.ts';

const root = join(import.meta.dirname, '..', '..');
const models = join(root, 'data/models');

function golden(model: string) {
  const h = readSafetensorsHeader(join(models, model, 'reference/golden.safetensors'));
  const get = (n: string) => readTensorF32(h.tensors.get(n)!);
  return { ids: readTensorInt(h.tensors.get('input_ids')!), get };
}

describe('collect on the tiny models', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'polar-collect-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('tiny-opt: the two golden sequences give the golden values, read back through the Arrow reader', async () => {
    const g = golden('tiny-opt');
    const spec = loadModel(join(models, 'tiny-opt')).spec;
    const text = join(dir, 'golden.jsonl');
    writeFileSync(text, [g.ids.slice(0, 32), g.ids.slice(32)].map((ids) => JSON.stringify({ input_ids: ids })).join('\n') + '\n');
    const out = join(dir, 'golden-opt');
    const res = await collect({ modelDir: join(models, 'tiny-opt'), out, text, tokens: 64, seqLen: 32, batch: 2, routerDtype: 'f32' });
    expect(res.manifest.complete).toBe(true);
    const set = openActivations(out, { expect: loadModel(join(models, 'tiny-opt')).identity() });
    expect(set.layers).toEqual([0, 1]);
    expect(set.tokens).toBe(64);
    for (const l of set.layers) {
      const b = await set.layer(l).readAll();
      expect([...b.seqId]).toEqual([...Array(32).fill(0), ...Array(32).fill(1)]);
      expect([...b.position]).toEqual([...Array.from({ length: 32 }, (_, i) => i), ...Array.from({ length: 32 }, (_, i) => i)]);
      expect(maxAbsDiff(b.routerInput, g.get(`attn_in.${l}`))).toBeLessThan(1e-3);
      expect(maxAbsDiff(b.headNorm, g.get(`attn_head_norm.${l}`))).toBeLessThan(1e-3);
      const act = g.get(`mlp_act.${l}`);
      const nb = Math.ceil(spec.ffn / 8);
      let checked = 0;
      const wrong: string[] = [];
      for (let t = 0; t < 64; t++) {
        for (let j = 0; j < spec.ffn; j++) {
          const v = act[t * spec.ffn + j];
          if (Math.abs(v) < 1e-4) continue;
          const bit = (b.mlpBits![t * nb + (j >> 3)] >> (j & 7)) & 1;
          if (bit !== (v > 0 ? 1 : 0)) wrong.push(`layer ${l} token ${t} neuron ${j}: golden ${v}, bit ${bit}`);
          checked++;
        }
      }
      expect(wrong).toEqual([]);
      expect(checked).toBeGreaterThan(64 * spec.ffn * 0.05);
    }
  });

  it('tiny-llama: fp16 router input and fp16 MLP magnitudes within fp16 precision of the goldens', async () => {
    const g = golden('tiny-llama');
    const text = join(dir, 'golden-llama.jsonl');
    writeFileSync(text, [g.ids.slice(0, 32), g.ids.slice(32)].map((ids) => JSON.stringify({ input_ids: ids })).join('\n') + '\n');
    const out = join(dir, 'golden-llama');
    await collect({ modelDir: join(models, 'tiny-llama'), out, text, tokens: 64, seqLen: 32, mlpActivity: 'f16', shardTokens: 32 });
    const set = openActivations(out);
    expect(set.layer(0).files.length).toBe(2);
    for (const l of set.layers) {
      const b = await set.layer(l).readAll();
      expect(b.mlpBits).toBeNull();
      const close = (got: Float32Array, want: Float32Array) => {
        expect(got.length).toBe(want.length);
        let worst = 0;
        for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]) - Math.abs(want[i]) * 2 ** -10);
        expect(worst).toBeLessThanOrEqual(1e-3);
      };
      close(b.routerInput, g.get(`attn_in.${l}`));
      close(b.mlpAct!, g.get(`mlp_act.${l}`));
      expect(maxAbsDiff(b.headNorm, g.get(`attn_head_norm.${l}`))).toBeLessThan(1e-3);
    }
    // gated models have no on/off activity to bit-pack
    await expect(collect({ modelDir: join(models, 'tiny-llama'), out: join(dir, 'x'), tokens: 64, mlpActivity: 'bits' })).rejects.toThrow(/mlp-activity/);
  });

  it('a rerun does no work, changed inputs are refused (or restart with force), damaged shards are named', async () => {
    const out = join(dir, 'rerun');
    const opts = { modelDir: join(models, 'tiny-opt'), out, text: 'default:eval', tokens: 600, seqLen: 64, shardTokens: 256 };
    const first = await collect(opts);
    expect(first.cached).toBe(false);
    expect(first.files.length).toBe(3 * 2);
    const mtimes = first.files.map((f) => statSync(f).mtimeMs);
    const again = await collect(opts);
    expect(again.cached).toBe(true);
    expect(again.newTokens).toBe(0);
    expect(again.files.map((f) => statSync(f).mtimeMs)).toEqual(mtimes);
    expect(again.manifest.bytes).toBe(first.manifest.bytes);

    await expect(collect({ ...opts, tokens: 700 })).rejects.toThrow(/other inputs \(tokens: 600 -> 700\).*--force/);
    await expect(collect({ ...opts, layers: [1] })).rejects.toThrow(/layers: \[0,1\] -> \[1\]/);

    // a truncated shard that the manifest recorded
    const victim = first.files[1];
    const saved = readFileSync(victim);
    truncateSync(victim, saved.length - 50);
    await expect(collect(opts)).rejects.toThrow(new RegExp(`${victim}.*truncated`));
    expect(() => openActivations(out)).toThrow(new RegExp(`${victim}.*truncated`));
    writeFileSync(victim, saved);

    // a foreign shard in a folder without manifest
    const foreign = join(dir, 'foreign');
    await collect({ ...opts, out: foreign, modelDir: join(models, 'tiny-llama') });
    rmSync(join(foreign, 'manifest.json'));
    copyFileSync(first.files[0], join(foreign, 'layer000-00000.arrow'));
    expect(() => openActivations(foreign)).toThrow(/layer000-00001.arrow.*model_(config|weights)_sha256/);
    await expect(collect({ ...opts, out: foreign })).rejects.toThrow(/layer000-00000.arrow: activation shard without/);
    // --force starts over
    const forced = await collect({ ...opts, out: foreign, onMismatch: 'restart' });
    expect(forced.cached).toBe(false);
    for (let i = 0; i < forced.files.length; i++) expect(readFileSync(forced.files[i]).equals(readFileSync(first.files[i]))).toBe(true);

    const changed = await collect({ ...opts, tokens: 300, onMismatch: 'restart' });
    expect(changed.manifest.tokens).toBe(300);
    expect(openActivations(out).tokens).toBe(300);
    try {
      await collect({ ...opts, modelDir: join(dir, 'nope') });
    } catch (e) {
      expect(e).toBeInstanceOf(PolarError);
    }
  });
});
