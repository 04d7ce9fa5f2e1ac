// Router artifacts on synthetic data: the writer/reader round trip (bit-exact tensors), each refusal with
// its reason and both sides named, atomic writes, in-place writes, and the runtime plan's k lookup.
import { describe, expect, it, beforeEach, afterEach } from 'vitest';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ArtifactError,
  artifactPlan,
  loadArtifact,
  mlpKFor,
  readManifest,
  writeArtifact,
  type ArtifactInput,
  type ModelIdentityDims,
} from '../../src/artifact/index.ts';
import { readSafetensorsHeader } from '../../src/formats/safetensors.ts';

const model: ModelIdentityDims = {
  family: 'opt',
  configSha256: 'a'.repeat(64),
  weightsSha256: 'b'.repeat(64),
  layers: 3,
  hidden: 8,
  ffn: 32,
  heads: 4,
  kvHeads: 4,
  headDim: 2,
  vocab: 50,
  name: 'synthetic',
};
const spec = { family: 'opt' as const, layers: 3, hidden: 8, ffn: 32, heads: 4, kvHeads: 4, headDim: 2, vocab: 50 };

function rand(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    a[i] = (x / 4294967296 - 0.5) * 3;
  }
  // awkward values must survive bit-exactly too
  a[0] = -0;
  a[1] = 1e-40; // subnormal
  a[2] = Math.fround(Math.PI);
  return a;
}

function input(): ArtifactInput {
  const r = 4;
  return {
    model,
    corpus: { sha256: 'c'.repeat(64), tokens: 1000, name: 'default:train' },
    routers: [1, 2].map((l) => ({
      layer: l,
      mlp: { rank: r, fc1: rand(r * model.hidden, 10 + l), fc2: rand(model.ffn * r, 20 + l) },
      attn: { outputs: model.heads, weight: rand(model.heads * model.hidden, 30 + l), bias: rand(model.heads, 40 + l) },
    })),
    calibration: {
      batchSizes: [1, 4, 16],
      mlpTarget: 0.99,
      granule: 8,
      attention: { unit: 'head', mode: 'fidelity', maxPplIncrease: 0.01, fraction: null, densePpl: 10, sparsePpl: 10.05, tokens: 100, evalBatch: 4 },
    },
    layers: [
      { layer: 0 },
      { layer: 1, mlp: { k: [8, 16, 32], recall: [0.99, 0.995, 1], recallCheck: [0.991, 0.99, 1], unionDensity: [0.2, 0.5, 0.9], score: 'logit' }, attn: { kept: 3, units: 4 } },
      { layer: 2, mlp: { k: [16, 24, 32], recall: [0.99, 0.991, 1], recallCheck: [0.98, null, 1], unionDensity: [0.3, 0.6, 0.95], score: 'sigmoid' } },
    ],
    extraFiles: [{ name: 'calibration.json', data: '{"format":"polar-calibration"}\n' }],
    createdAt: '2025-01-01T00:00:00.000Z',
  };
}

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'polar-artifact-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function refusal(fn: () => unknown): ArtifactError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ArtifactError);
    return e as ArtifactError;
  }
  throw new Error('expected the artifact to be refused');
}

describe('artifact writer and reader', () => {
  it('round-trips every tensor bit-exactly, with PyTorch-style names, and describes itself', () => {
    const out = join(dir, 'art');
    const inp = input();
    const m = writeArtifact(out, inp);
    expect(readdirSync(out).sort()).toEqual(['calibration.json', 'manifest.json', 'routers.safetensors']);
    const a = loadArtifact(out, { model: { identity: { configSha256: model.configSha256, weightsSha256: model.weightsSha256 }, spec } });
    expect(a.manifest).toEqual(m);
    expect(m.format).toBe('polar-sparsity-artifact');
    expect(m.version).toBe(1);
    expect(m.tool.name).toBe('polar');
    expect(m.createdAt).toBe('2025-01-01T00:00:00.000Z');
    expect(Object.keys(m.files).sort()).toEqual(['calibration.json', 'routers.safetensors']);
    const names = [...readSafetensorsHeader(join(out, 'routers.safetensors')).tensors.keys()].sort();
    expect(names).toEqual(
      [1, 2].flatMap((l) => [`layers.${l}.attn_router.bias`, `layers.${l}.attn_router.weight`, `layers.${l}.mlp_router.fc1.weight`, `layers.${l}.mlp_router.fc2.weight`]).sort(),
    );
    for (const r of inp.routers) {
      const bits = (f: Float32Array) => Buffer.from(f.buffer, f.byteOffset, f.byteLength);
      const L = a.layer(r.layer);
      expect(bits(a.tensors.get(`layers.${r.layer}.mlp_router.fc1.weight`)!.data).equals(bits(r.mlp!.fc1))).toBe(true);
      expect(bits(a.tensors.get(`layers.${r.layer}.mlp_router.fc2.weight`)!.data).equals(bits(r.mlp!.fc2))).toBe(true);
      expect(bits(a.tensors.get(`layers.${r.layer}.attn_router.weight`)!.data).equals(bits(r.attn!.weight))).toBe(true);
      expect(bits(a.tensors.get(`layers.${r.layer}.attn_router.bias`)!.data).equals(bits(r.attn!.bias!))).toBe(true);
      expect(L.mlp?.rank).toBe(4);
    }
    expect(a.tensors.get('layers.1.mlp_router.fc1.weight')!.shape).toEqual([4, 8]);
    expect(a.layer(1).attn?.kept).toBe(3);
    expect(a.layer(2).attn).toBeNull(); // attention dense on layer 2
    expect(a.layer(0).mlp).toBeNull();
    expect(a.sparseLayers()).toEqual([1, 2]);
  });

  it('refuses a flipped byte in any file, naming both checksums', () => {
    const out = join(dir, 'art');
    const m = writeArtifact(out, input());
    for (const name of ['routers.safetensors', 'calibration.json']) {
      const f = join(out, name);
      const orig = readFileSync(f);
      const bad = Buffer.from(orig);
      bad[bad.length - 3] ^= 0x01;
      writeFileSync(f, bad);
      const e = refusal(() => loadArtifact(out));
      expect(e.reason).toBe('checksum');
      expect(e.message).toContain(f);
      expect(e.message).toContain(m.files[name].sha256); // the manifest's side
      expect(e.message).toMatch(/received [0-9a-f]{64}/); // the file's side
      writeFileSync(f, orig);
    }
    // truncation is caught by size first
    writeFileSync(join(out, 'routers.safetensors'), readFileSync(join(out, 'routers.safetensors')).subarray(0, 100));
    const e = refusal(() => loadArtifact(out));
    expect(e.reason).toBe('checksum');
    expect(e.message).toMatch(/expected \d+ bytes .*received 100 bytes/);
  });

  it('refuses another model, naming both identities', () => {
    const out = join(dir, 'art');
    writeArtifact(out, input());
    const other = { configSha256: model.configSha256, weightsSha256: 'd'.repeat(64) };
    const e = refusal(() => loadArtifact(out, { model: { dir: '/models/other', identity: other, spec } }));
    expect(e.reason).toBe('model');
    expect(e.field).toBe('model.weightsSha256');
    expect(e.message).toContain('d'.repeat(64));
    expect(e.message).toContain('b'.repeat(64));
    expect(e.message).toContain('/models/other');
    const e2 = refusal(() => loadArtifact(out, { model: { identity: { configSha256: model.configSha256, weightsSha256: model.weightsSha256 }, spec: { ...spec, ffn: 64 } } }));
    expect(e2.reason).toBe('model');
    expect(e2.message).toMatch(/model\.ffn: expected 64 .*received 32/);
  });

  it('refuses a future version and a foreign format, naming both sides', () => {
    const out = join(dir, 'art');
    writeArtifact(out, input());
    const mf = join(out, 'manifest.json');
    const j = JSON.parse(readFileSync(mf, 'utf8'));
    writeFileSync(mf, JSON.stringify({ ...j, version: 2 }));
    const e = refusal(() => loadArtifact(out));
    expect(e.reason).toBe('version');
    expect(e.message).toMatch(/version: expected 1 .*received 2 \(written by polar 0\.\d+\.\d+\); upgrade polar/);
    writeFileSync(mf, JSON.stringify({ ...j, format: 'something-else' }));
    const f = refusal(() => readManifest(out));
    expect(f.reason).toBe('format');
    expect(f.message).toMatch(/format: expected "polar-sparsity-artifact".*received "something-else"/);
  });

  it('refuses a missing file, a folder without manifest, and tensors that disagree with the manifest', () => {
    const out = join(dir, 'art');
    writeArtifact(out, input());
    rmSync(join(out, 'calibration.json'));
    expect(refusal(() => loadArtifact(out)).reason).toBe('missing');
    rmSync(join(out, 'manifest.json'));
    expect(refusal(() => loadArtifact(out)).reason).toBe('missing');
    expect(() => loadArtifact(join(dir, 'nothing-here'))).toThrow(/artifact folder not found/);
    // manifest listing a tensor shape that the file does not have (checksums updated to match)
    const out2 = join(dir, 'art2');
    writeArtifact(out2, input());
    const mf = join(out2, 'manifest.json');
    const j = JSON.parse(readFileSync(mf, 'utf8'));
    j.routers.tensors[0].shape = [4, 9];
    writeFileSync(mf, JSON.stringify(j));
    const e = refusal(() => loadArtifact(out2));
    expect(e.reason).toBe('content');
    expect(e.message).toMatch(/expected F32 \[4, 9\].*received F32 \[4, 8\]/);
  });

  it('schema errors name the field: k not non-decreasing, kept > units, layer 0 sparse', () => {
    const bad = (mut: (i: ArtifactInput) => void, re: RegExp) => {
      const i = input();
      mut(i);
      expect(() => writeArtifact(join(dir, 'bad'), i)).toThrow(re);
      expect(existsSync(join(dir, 'bad'))).toBe(false);
    };
    bad((i) => (i.layers[1].mlp!.k = [16, 8, 32]), /layers\[1\]\.mlp\.k: expected values non-decreasing/);
    bad((i) => (i.layers[1].attn!.kept = 5), /layers\[1\]\.attn\.kept: expected at most 4/);
    bad((i) => (i.layers[0] = { layer: 0, attn: { kept: 2, units: 4 } }), /layers\[0\]: expected layer 0 dense/);
    bad((i) => (i.routers[0].mlp!.fc1 = new Float32Array(3)), /mlp\.fc1: expected 4 x 8 values/);
  });

  it('is atomic: a failed write leaves the previous artifact and no temporary folder', () => {
    const out = join(dir, 'art');
    const first = writeArtifact(out, input());
    const i = input();
    i.layers[1].mlp!.k = [32, 8, 8]; // refused by the read-back check
    expect(() => writeArtifact(out, i)).toThrow(/non-decreasing/);
    expect(readdirSync(dir)).toEqual(['art']);
    expect(loadArtifact(out).manifest).toEqual(first);
    // a successful rewrite replaces the folder as a whole
    const i2 = input();
    i2.createdAt = '2025-02-02T00:00:00.000Z';
    i2.calibration.attention.sparsePpl = 10.04;
    writeArtifact(out, i2);
    expect(readManifest(out).createdAt).toBe('2025-02-02T00:00:00.000Z');
    expect(readdirSync(dir)).toEqual(['art']);
  });

  it('rewriting the same artifact keeps its created time, so the bytes are the same', () => {
    const out = join(dir, 'art');
    writeArtifact(out, input());
    const before = readFileSync(join(out, 'manifest.json'));
    const again = input();
    again.createdAt = '2030-01-01T00:00:00.000Z';
    writeArtifact(out, again, { mode: 'in-place' });
    expect(readFileSync(join(out, 'manifest.json')).equals(before)).toBe(true);
    writeArtifact(out, again, { keepCreatedAt: false });
    expect(readManifest(out).createdAt).toBe('2030-01-01T00:00:00.000Z');
  });

  it('in-place mode keeps files it does not own (the pipeline runner\'s .stage.json)', () => {
    const out = join(dir, 'artifact');
    writeArtifact(out, input(), { mode: 'in-place' });
    writeFileSync(join(out, '.stage.json'), '{"status":"running"}');
    writeArtifact(out, input(), { mode: 'in-place' });
    expect(readdirSync(out).sort()).toEqual(['.stage.json', 'calibration.json', 'manifest.json', 'routers.safetensors']);
    expect(loadArtifact(out).sparseLayers()).toEqual([1, 2]);
  });
});

describe('artifact plan', () => {
  it('mlpKFor takes the k of the smallest calibrated batch size >= the tokens, dense above the table', () => {
    const bs = [1, 4, 16], k = [8, 16, 24];
    expect([1, 2, 4, 5, 16, 17, 100].map((t) => mlpKFor(bs, k, 32, t))).toEqual([8, 16, 16, 24, 24, 32, 32]);
    expect(mlpKFor(bs, k, 32, 0)).toBe(8);
    expect(() => mlpKFor(bs, k, 32, -1)).toThrow(/tokens: expected an integer >= 0/);
  });

  it('turns the tables into the runtime plan', () => {
    const out = join(dir, 'art');
    writeArtifact(out, input());
    const a = loadArtifact(out);
    const p = artifactPlan(a);
    expect(p.layers.map((l) => l.layer)).toEqual([1, 2]);
    const k1 = p.layers[0].mlp!.k as (t: number) => number;
    expect([1, 3, 16, 64].map(k1)).toEqual([8, 16, 32, 32]);
    expect(p.layers[0].attn!.k).toBe(3);
    expect(p.layers[1].attn).toBeUndefined();
    expect(p.layers[1].mlp!.score).toBe('sigmoid');
    expect(artifactPlan(a, { batchSize: 4 }).layers[1].mlp!.k).toBe(24);
    expect(artifactPlan(a, { mlp: false }).layers.map((l) => l.layer)).toEqual([1]);
  });
});
