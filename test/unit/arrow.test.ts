import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync, readFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { f16ToF32Array, f32ToF16Array, fromF16, toF16 } from '../../src/arrow/f16.ts';
import { ShardWriter, writeFileAtomic } from '../../src/arrow/writer.ts';
import { openActivations, readShardMeta } from '../../src/arrow/reader.ts';
import { metaToArrow, SCHEMA_VERSION, type FullShardMeta } from '../../src/arrow/schema.ts';
import { PolarError } from '../../src/errors.ts';

const SHA_A = 'a'.repeat(64);
const SHA_B = 'b'.repeat(64);

function meta(over: Partial<FullShardMeta> = {}): FullShardMeta {
  return {
    schemaVersion: SCHEMA_VERSION,
    producer: 'test',
    configSha256: SHA_A,
    weightsSha256: SHA_A,
    family: 'opt',
    modelLayers: 2,
    layer: 0,
    hidden: 6,
    ffn: 13,
    heads: 3,
    kvHeads: 3,
    headDim: 2,
    mlpActivity: 'bits',
    routerInputDtype: 'f16',
    headNormDtype: 'f32',
    corpusSha256: SHA_B,
    tokenStart: 0,
    tokenEnd: 10,
    ...over,
  };
}

function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function rows(m: FullShardMeta, seed = 1) {
  const n = m.tokenEnd - m.tokenStart;
  const r = rng(seed);
  return {
    rows: n,
    seqId: Int32Array.from({ length: n }, (_, i) => Math.floor((m.tokenStart + i) / 4)),
    position: Int32Array.from({ length: n }, (_, i) => (m.tokenStart + i) % 4),
    routerInput: Float32Array.from({ length: n * m.hidden }, () => (r() - 0.5) * 8),
    mlpAct: Float32Array.from({ length: n * m.ffn }, () => (r() < 0.7 ? 0 : r() * 3)),
    headNorm: Float32Array.from({ length: n * m.heads }, () => r() * 5),
  };
}

function write(dir: string, name: string, m: FullShardMeta, seed = 1) {
  const w = new ShardWriter(m);
  const all = rows(m, seed);
  // append in two pieces, as collect does per forward batch
  const cut = Math.floor(all.rows / 2);
  const piece = (a: number, b: number) => ({
    rows: b - a,
    seqId: all.seqId.subarray(a, b),
    position: all.position.subarray(a, b),
    routerInput: all.routerInput.subarray(a * m.hidden, b * m.hidden),
    mlpAct: all.mlpAct.subarray(a * m.ffn, b * m.ffn),
    headNorm: all.headNorm.subarray(a * m.heads, b * m.heads),
  });
  w.append(piece(0, cut));
  w.append(piece(cut, all.rows));
  writeFileAtomic(join(dir, name), w.encode());
  return all;
}

function expectPolarError(fn: () => unknown, ...parts: string[]) {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(PolarError);
    for (const p of parts) expect((e as Error).message).toContain(p);
    return;
  }
  throw new Error('expected a PolarError');
}

describe('fp16 conversion', () => {
  it('round-trips every finite half exactly', () => {
    const h = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const f = f16ToF32Array(h);
    const back = f32ToF16Array(f);
    const bad: number[] = [];
    for (let i = 0; i < 65536; i++) {
      const e = (i >> 10) & 0x1f;
      if (e === 0x1f && (i & 0x3ff) ? !Number.isNaN(f[i]) : back[i] !== i) bad.push(i);
    }
    expect(bad).toEqual([]);
  });
  it('rounds to nearest even, handles subnormals, overflow and signs', () => {
    expect(toF16(1)).toBe(0x3c00);
    expect(toF16(-2)).toBe(0xc000);
    expect(toF16(65504)).toBe(0x7bff);
    expect(toF16(65520)).toBe(0x7c00); // rounds up to inf
    expect(toF16(1e9)).toBe(0x7c00);
    expect(toF16(2 ** -24)).toBe(0x0001);
    expect(toF16(2 ** -25)).toBe(0x0000); // tie -> even (0)
    expect(toF16(1.5 * 2 ** -25)).toBe(0x0001);
    expect(toF16(1 + 2 ** -11)).toBe(0x3c00); // tie -> even
    expect(toF16(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie -> even (up)
    expect(toF16(-0)).toBe(0x8000);
    expect(fromF16(0x3555)).toBeCloseTo(0.33325, 5);
    const r = rng(7);
    for (let i = 0; i < 2000; i++) {
      const x = (r() - 0.5) * 100;
      expect(Math.abs(fromF16(toF16(x)) - x)).toBeLessThanOrEqual(Math.abs(x) * 2 ** -11 + 1e-7);
    }
  });
});

describe('activation shards: writer and reader', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'polar-arrow-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('round-trips fp16 router input, bit-packed activity and head norms across shards and blocks', async () => {
    const d = join(dir, 'rt');
    mkdirSync(d);
    const a0 = write(d, 'l0-a.arrow', meta({ tokenStart: 0, tokenEnd: 10 }), 1);
    const a1 = write(d, 'l0-b.arrow', meta({ tokenStart: 10, tokenEnd: 17 }), 2);
    write(d, 'l1-a.arrow', meta({ layer: 1, tokenStart: 0, tokenEnd: 10 }), 3);
    write(d, 'l1-b.arrow', meta({ layer: 1, tokenStart: 10, tokenEnd: 17 }), 4);
    const set = openActivations(d);
    expect(set.layers).toEqual([0, 1]);
    expect(set.tokens).toBe(17);
    const L = set.layer(0);
    expect(L.rows).toBe(17);
    const all = await L.readAll();
    expect(all.rows).toBe(17);
    const seq = [...a0.seqId, ...a1.seqId];
    expect([...all.seqId]).toEqual(seq);
    const ri = [...a0.routerInput, ...a1.routerInput];
    for (let i = 0; i < ri.length; i++) expect(Math.abs(all.routerInput[i] - ri[i])).toBeLessThanOrEqual(Math.abs(ri[i]) * 2 ** -11 + 1e-7);
    const act = [...a0.mlpAct, ...a1.mlpAct];
    for (let t = 0; t < 17; t++) {
      for (let j = 0; j < 13; j++) {
        const bit = (all.mlpBits![t * 2 + (j >> 3)] >> (j & 7)) & 1;
        expect(bit).toBe(act[t * 13 + j] > 0 ? 1 : 0);
      }
      // padding bits of the last byte are zero
      expect(all.mlpBits![t * 2 + 1] >> 5).toBe(0);
    }
    expect([...all.headNorm]).toEqual([...a0.headNorm, ...a1.headNorm]);
    expect(all.mlpAct).toBeNull();
    // blocks: 4 rows at a time, never across shards
    const sizes: number[] = [];
    for await (const b of L.batches({ blockRows: 4 })) sizes.push(b.rows);
    expect(sizes).toEqual([4, 4, 2, 4, 3]);
  });

  it('stores fp32 router input exactly and fp16 magnitudes for gated models', async () => {
    const d = join(dir, 'f32');
    mkdirSync(d);
    const m = meta({ family: 'llama', mlpActivity: 'f16', routerInputDtype: 'f32', kvHeads: 1 });
    const a = write(d, 'x.arrow', m);
    const all = await openActivations(d).layer(0).readAll();
    expect([...all.routerInput]).toEqual([...a.routerInput]);
    expect(all.mlpBits).toBeNull();
    for (let i = 0; i < a.mlpAct.length; i++) expect(all.mlpAct![i]).toBe(fromF16(toF16(a.mlpAct[i])));
    const m2 = meta({ mlpActivity: 'none' });
    const d2 = join(dir, 'none');
    mkdirSync(d2);
    write(d2, 'x.arrow', m2);
    const b = await openActivations(d2).layer(0).readAll();
    expect(b.mlpBits).toBeNull();
    expect(b.mlpAct).toBeNull();
  });

  it('encodes byte-identical files for identical input', () => {
    const a = new ShardWriter(meta());
    const b = new ShardWriter(meta());
    a.append(rows(meta()));
    b.append(rows(meta()));
    expect(Buffer.from(a.encode()).equals(Buffer.from(b.encode()))).toBe(true);
  });

  it('refuses truncated, foreign, non-polar and future-version shards, naming the file', () => {
    const d = join(dir, 'bad');
    mkdirSync(d);
    write(d, 'good.arrow', meta());
    const bytes = readFileSync(join(d, 'good.arrow'));
    const cut = join(d, 'cut.arrow');
    writeFileSync(cut, bytes.subarray(0, bytes.length - 100));
    expectPolarError(() => readShardMeta(cut), cut, 'truncated');
    writeFileSync(join(d, 'junk.arrow'), 'hello world, this is not arrow at all');
    expectPolarError(() => readShardMeta(join(d, 'junk.arrow')), 'junk.arrow', 'Arrow');
    rmSync(cut);
    rmSync(join(d, 'junk.arrow'));

    // a shard of another model in the same folder
    write(d, 'other.arrow', meta({ weightsSha256: SHA_B, tokenStart: 10, tokenEnd: 12 }));
    expectPolarError(() => openActivations(d), 'other.arrow', 'model_weights_sha256', SHA_A, SHA_B);
    rmSync(join(d, 'other.arrow'));
    // expected identity
    expectPolarError(() => openActivations(d, { expect: { configSha256: SHA_A, weightsSha256: SHA_B } }), 'good.arrow', 'model_weights_sha256');
    // gap in the token range
    write(d, 'gap.arrow', meta({ tokenStart: 11, tokenEnd: 12 }));
    expectPolarError(() => openActivations(d), 'gap.arrow', 'token_start');
    rmSync(join(d, 'gap.arrow'));
    expect(openActivations(d).tokens).toBe(10);
  });

  it('refuses a shard with another schema version or without polar metadata', async () => {
    const A = await import('apache-arrow');
    const d = join(dir, 'ver');
    mkdirSync(d);
    const t = A.tableFromArrays({ seq_id: Int32Array.from([1, 2]) });
    const md = metaToArrow(meta());
    md.set('schema_version', '99');
    const s2 = new A.Schema(t.schema.fields, md);
    const t2 = new A.Table(s2, t.batches.map((b) => new A.RecordBatch(s2, b.data)));
    writeFileSync(join(d, 'future.arrow'), A.tableToIPC(t2, 'file'));
    expectPolarError(() => readShardMeta(join(d, 'future.arrow')), 'future.arrow', 'schema_version', 'upgrade polar');
    writeFileSync(join(d, 'plain.arrow'), A.tableToIPC(t, 'file'));
    expectPolarError(() => readShardMeta(join(d, 'plain.arrow')), 'plain.arrow', '"format"', 'polar-activations');
  });
});
