// calibrate -> export -> load on tiny-opt, end to end: activations computed through the runtime, routers
// trained by the train stage, then the calibration and the artifact checked against the criteria.
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import type { ActivationSet } from '../../src/arrow/types.ts';
import { ArtifactError, artifactPlan, loadArtifact, readCalibration, type CalibrationFile } from '../../src/artifact/index.ts';
import { heldOutRows } from '../../src/calibrate/data.ts';
import { recallCurve, routerLogits } from '../../src/calibrate/mlp.ts';
import { inspectJson, inspectText, registerInspect } from '../../src/cli/inspect.ts';
import { loadModel } from '../../src/model/index.ts';
import { listCheckpoints, readCheckpoint } from '../../src/routers/checkpoint.ts';
import { openRuntimeModel } from '../../src/runtime/index.ts';
import { calibrate } from '../../src/stages/calibrate/index.ts';
import { exportArtifact } from '../../src/stages/export/index.ts';
import { trainRouters } from '../../src/stages/train/index.ts';
import { evalText, models } from '../helpers.ts';
import { runtimeActivations } from './train-activations.ts';

let dir: string;
let set: ActivationSet;
let cal: CalibrationFile;
const TARGET = 0.99;
const quiet = () => {};

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'polar-calibrate-'));
  set = await runtimeActivations({ modelDir: models.tinyOpt, textFile: evalText, tokens: 16384, seqLen: 128 });
  await trainRouters({ activations: set, out: join(dir, 'train'), epochs: 8, valFraction: 0.25, lr: 1e-3, log: quiet });
  const res = await calibrate({
    model: models.tinyOpt,
    activations: set,
    routers: join(dir, 'train'),
    out: join(dir, 'calibrate'),
    mlp: { target: TARGET, draws: 96 },
    heads: { tokens: 1024, skipTokens: 0, corpus: 'default:train', evalBatch: 8, window: 128 },
    log: quiet,
  });
  cal = res.calibration;
  exportArtifact({ model: models.tinyOpt, routers: join(dir, 'train'), calibration: res.file, out: join(dir, 'artifact'), log: quiet });
}, 300_000);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('calibrate on tiny-opt', () => {
  it('MLP k is non-decreasing in batch size, within (0, ffn], granule multiples', () => {
    expect(cal.mlp).not.toBeNull();
    const m = cal.mlp!;
    expect(m.batchSizes).toEqual([1, 2, 4, 8, 16, 32, 64, 128, 256]);
    expect(m.layers.map((l) => l.layer)).toEqual([1]);
    for (const l of m.layers) {
      for (let i = 0; i < l.k.length; i++) {
        expect(l.k[i]).toBeGreaterThan(0);
        expect(l.k[i]).toBeLessThanOrEqual(512);
        expect(l.k[i] % m.granule === 0 || l.k[i] === 512).toBe(true);
        if (i) expect(l.k[i]).toBeGreaterThanOrEqual(l.k[i - 1]);
      }
      expect(l.k[0]).toBeLessThan(512); // real sparsity at batch 1
      // union density grows with the batch, and the curves for the report are there
      for (let i = 1; i < l.unionDensity.length; i++) expect(l.unionDensity[i]).toBeGreaterThanOrEqual(l.unionDensity[i - 1]);
      expect(l.curve.recall.length).toBe(m.batchSizes.length);
      expect(l.curve.k[l.curve.k.length - 1]).toBe(512);
    }
  });

  it('held-out recall >= target - 0.01 at every calibrated point (check split, and fresh draws)', async () => {
    const m = cal.mlp!;
    for (const l of m.layers) {
      l.recall.forEach((r) => expect(r).toBeGreaterThanOrEqual(m.target));
      l.recallCheck.forEach((r, i) => {
        expect(r, `layer ${l.layer} batch ${m.batchSizes[i]}`).not.toBeNull();
        expect(r!, `layer ${l.layer} batch ${m.batchSizes[i]}`).toBeGreaterThanOrEqual(m.target - 0.01);
      });
      // independently: other random batches of the check split, measured here
      const ck = readCheckpoint(listCheckpoints(join(dir, 'train')).find((c) => c.layer === l.layer)!.file);
      const split = await heldOutRows(set.layer(l.layer), { seed: cal.routers.split.seed, valFraction: cal.routers.split.valFraction }, 'test');
      const fc1 = ck.tensors.get(`layers.${l.layer}.mlp_router.fc1.weight`)!, fc2 = ck.tensors.get(`layers.${l.layer}.mlp_router.fc2.weight`)!;
      const logits = routerLogits(split.check, { rank: fc1.shape[0], fc1: fc1.data, fc2: fc2.data });
      m.batchSizes.forEach((b, i) => {
        const c = recallCurve(split.check, logits, b, 48, 12345 + b, l.score);
        expect(c.recall[l.k[i]], `layer ${l.layer} batch ${b} k ${l.k[i]}`).toBeGreaterThanOrEqual(m.target - 0.01);
      });
    }
  });

  it('heads kept meet the perplexity budget on the calibration tokens; layer 0 dense; sweep recorded', () => {
    const h = cal.heads;
    expect(h.mode).toBe('fidelity');
    expect(h.unit).toBe('head');
    expect(h.layers.map((l) => l.layer)).toEqual([1]);
    expect(h.densePpl).toBeGreaterThan(1);
    expect(h.sparsePpl!).toBeLessThanOrEqual(h.densePpl! * 1.01);
    expect(h.sparsePpl!).toBeLessThanOrEqual(h.budgetPpl!);
    for (const l of h.layers) {
      expect(l.kept).toBeGreaterThanOrEqual(1);
      expect(l.kept).toBeLessThanOrEqual(4);
      expect(l.sweep!.ppl.length).toBeGreaterThanOrEqual(2);
      expect(l.sweep!.marginal.length).toBe(l.sweep!.ppl.length - 1);
    }
    expect(h.tokens).toBeGreaterThan(900);
    expect(h.evaluations).toBeGreaterThanOrEqual(3);
    expect(cal.work.attention).toBeGreaterThanOrEqual(0);
  });
});

describe('export and load on tiny-opt', () => {
  const art = () => join(dir, 'artifact');

  it('round-trips every router tensor bit-exactly from the checkpoints', () => {
    const a = loadArtifact(art(), { model: loadModel(models.tinyOpt) });
    let n = 0;
    for (const c of listCheckpoints(join(dir, 'train'))) {
      const ck = readCheckpoint(c.file);
      for (const [name, t] of ck.tensors) {
        const got = a.tensors.get(name);
        expect(got, name).toBeDefined();
        expect(got!.shape).toEqual(t.shape);
        expect(Buffer.from(got!.data.buffer, got!.data.byteOffset, got!.data.byteLength).equals(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength)), name).toBe(true);
        n++;
      }
    }
    expect(n).toBe(4);
    expect(a.tensors.size).toBe(4);
    const m = a.manifest;
    expect(m.layers.find((e) => e.layer === 1)!.mlp!.k).toEqual(cal.mlp!.layers[0].k);
    expect(m.corpus).toEqual({ sha256: cal.corpus.sha256, tokens: cal.corpus.tokens });
    expect(m.calibration.mlpTarget).toBe(cal.mlp!.target);
    expect(JSON.parse(readFileSync(join(art(), 'calibration.json'), 'utf8'))).toEqual(readCalibration(join(dir, 'calibrate', 'calibration.json')));
  });

  it('a flipped byte, a wrong model and a future version are each refused with the right error', () => {
    const copy = (name: string) => {
      const d = join(dir, name);
      exportArtifact({ model: models.tinyOpt, routers: join(dir, 'train'), calibration: join(dir, 'calibrate', 'calibration.json'), out: d, log: quiet });
      return d;
    };
    const why = (fn: () => unknown): ArtifactError => {
      try {
        fn();
      } catch (e) {
        expect(e).toBeInstanceOf(ArtifactError);
        return e as ArtifactError;
      }
      throw new Error('not refused');
    };
    // flipped byte in the router weights
    const a = copy('flipped');
    const f = join(a, 'routers.safetensors');
    const b = readFileSync(f);
    b[b.length - 10] ^= 0x40;
    writeFileSync(f, b);
    const e1 = why(() => loadArtifact(a));
    expect(e1.reason).toBe('checksum');
    expect(e1.message).toMatch(/routers\.safetensors: sha256: expected [0-9a-f]{64} \(manifest\.json\), received [0-9a-f]{64}/);
    // another model
    const e2 = why(() => loadArtifact(art(), { model: loadModel(models.smallOpt) }));
    expect(e2.reason).toBe('model');
    const tiny = loadModel(models.tinyOpt).identity(), small = loadModel(models.smallOpt).identity();
    expect(e2.message).toContain(tiny.configSha256);
    expect(e2.message).toContain(small.configSha256);
    // future version
    const v = copy('future');
    const mf = join(v, 'manifest.json');
    writeFileSync(mf, JSON.stringify({ ...JSON.parse(readFileSync(mf, 'utf8')), version: 99 }));
    const e3 = why(() => loadArtifact(v));
    expect(e3.reason).toBe('version');
    expect(e3.message).toMatch(/version: expected 1 .*received 99/);
  });

  it('export refuses a calibration of another model, naming both', () => {
    const c = JSON.parse(readFileSync(join(dir, 'calibrate', 'calibration.json'), 'utf8'));
    c.model.weightsSha256 = 'e'.repeat(64);
    const f = join(dir, 'other-calibration.json');
    writeFileSync(f, JSON.stringify(c));
    expect(() => exportArtifact({ model: models.tinyOpt, routers: join(dir, 'train'), calibration: f, out: join(dir, 'never'), log: quiet })).toThrow(
      new RegExp(`model\\.weightsSha256: expected ${loadModel(models.tinyOpt).identity().weightsSha256} .*received ${'e'.repeat(64)}`),
    );
  });

  it('polar inspect shows per layer the MLP k per batch size and the heads kept', async () => {
    const a = loadArtifact(art(), { tensors: false });
    const text = inspectText(a.dir, a.manifest);
    const k = cal.mlp!.layers[0].k;
    expect(text).toMatch(new RegExp(`^1\\s+${cal.heads.layers[0].kept}/4\\s+${k.join('\\s+')}\\s`, 'm'));
    expect(text).toMatch(/^0\s+4\/4\s+dense/m);
    expect(text).toContain('checksums verified');
    const j = inspectJson(a.dir, a.manifest);
    expect(j.layers[1]).toMatchObject({ layer: 1, mlp_k: k, heads_kept: cal.heads.layers[0].kept < 4 ? cal.heads.layers[0].kept : null, units: 4 });
    // the command itself (--json on stdout)
    const program = new Command();
    program.exitOverride();
    registerInspect(program);
    let out = '';
    const write = process.stdout.write;
    process.stdout.write = ((s: string) => ((out += s), true)) as typeof process.stdout.write;
    try {
      await program.parseAsync(['node', 'polar', 'inspect', art(), '--json', '--model', models.tinyOpt]);
    } finally {
      process.stdout.write = write;
    }
    expect(JSON.parse(out).layers[1].mlp_k).toEqual(k);
  });

  it('drives the runtime: a decode step of b sequences keeps k(b) neurons and each token its heads', async () => {
    const model = loadModel(models.tinyOpt);
    const a = loadArtifact(art(), { model });
    const rt = openRuntimeModel(model);
    const s = rt.session({ maxSeqs: 4, maxLen: 8 });
    try {
      s.setSparsePlan(artifactPlan(a));
      await s.forward([0, 1, 2, 3].map((slot) => ({ slot, tokens: [1, 40 + slot] })), { logits: 'none', sparse: false });
      const out = await s.forward([0, 1, 2, 3].map((slot) => ({ slot, tokens: [50 + slot] })), { logits: 'last' });
      const r = out.sparse!.find((x) => x.layer === 1)!;
      const k4 = cal.mlp!.layers[0].k[cal.mlp!.batchSizes.indexOf(4)];
      expect(r.mlpIndex!.length).toBe(k4);
      const kept = cal.heads.layers[0].kept;
      if (kept < 4) for (let t = 0; t < 4; t++) expect(r.heads!.subarray(t * 4, t * 4 + 4).reduce((x, y) => x + y, 0)).toBe(kept);
    } finally {
      s.dispose();
      rt.dispose();
    }
  });
});
