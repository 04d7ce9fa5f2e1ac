import { describe, expect, it, beforeEach, afterEach } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadPipeline, parsePipeline, defaultOutDir } from '../../src/pipeline/config.ts';
import { runPipeline, summaryTable } from '../../src/pipeline/runner.ts';
import { canonicalJson, hashOf } from '../../src/pipeline/hash.ts';
import { optionReader } from '../../src/pipeline/options.ts';
import { silentProgress } from '../../src/progress/index.ts';
import type { StageModule, StageRecord } from '../../src/pipeline/types.ts';
import { PolarError } from '../../src/errors.ts';

const root = join(import.meta.dirname, '..', '..');
const here = join(root, 'test', 'unit', 'inline.yaml'); // anchors relative paths at test/unit/

function yaml(stages: string, extra = ''): string {
  return `name: t\nmodel: ../../data/models/tiny-opt\n${extra}stages:\n${stages}`;
}

function expectBad(fn: () => unknown, ...parts: (string | RegExp)[]) {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(PolarError);
    for (const p of parts) expect((e as Error).message).toMatch(p);
    return;
  }
  throw new Error('expected a PolarError');
}

describe('pipeline files', () => {
  it('the shipped pipelines validate; paths are relative to the file; --model overrides', () => {
    const c = loadPipeline(join(root, 'pipelines/small-opt.yaml'));
    expect(c.name).toBe('small-opt');
    expect(c.model).toBe(join(root, 'data/models/small-opt'));
    expect(c.stages.map((s) => s.name)).toEqual(['collect', 'train', 'calibrate', 'export', 'validate', 'report']);
    expect(c.stages[0].options).toEqual({ tokens: 200000, seq_len: 256, batch: 8 });
    expect(c.corpus).toEqual({ train: 'default:train', eval: 'default:eval', text_field: 'text' });
    expect(c.targets.mlp_recall).toBe(0.99);
    expect(defaultOutDir(c, '/x')).toBe('/x/checkpoints/small-opt');
    expect(loadPipeline(join(root, 'pipelines/small-llama.yaml')).stages[0].options.mlp_activity).toBe('none');
    for (const big of ['opt-6.7b', 'llama-3-8b']) {
      expectBad(() => loadPipeline(join(root, `pipelines/${big}.yaml`)), `${big}.yaml: model: expected a model folder`, /--model/);
      const o = loadPipeline(join(root, `pipelines/${big}.yaml`), { model: join(root, 'data/models/tiny-opt') });
      expect(o.model).toBe(join(root, 'data/models/tiny-opt'));
      expect(o.stages[0].name).toBe('collect');
    }
    const t = loadPipeline(join(root, 'pipelines/small-opt.yaml'), { trainText: 'data/fixtures/corpus/eval.txt', evalText: 'default:train' });
    expect(t.corpus.train).toBe(join(process.cwd(), 'data/fixtures/corpus/eval.txt'));
    expect(t.corpus.eval).toBe('default:train');
  });

  it('refuses bad files naming the field', () => {
    expectBad(() => parsePipeline(yaml('  collect: {}\n', 'colour: red\n'), here), 'inline.yaml: colour: expected one of the known keys');
    expectBad(() => parsePipeline(yaml('  collect: {}\n', 'targets:\n  mlp_recal: 0.9\n'), here), 'targets.mlp_recal');
    expectBad(() => parsePipeline(yaml('  collect: {}\n', 'targets:\n  mlp_recall: 2\n'), here), 'targets.mlp_recall: expected a number in [0, 1], received 2');
    expectBad(() => parsePipeline(yaml('  Bad_Name: {}\n'), here), 'stages.Bad_Name: expected a stage name');
    expectBad(() => parsePipeline(yaml('  collect: 3\n'), here), 'stages.collect: expected a mapping');
    expectBad(() => parsePipeline(yaml('  collect: {}\n', 'version: 2\n'), here), 'version: expected 1');
    expectBad(() => parsePipeline(yaml('  collect: {}\n', 'corpus:\n  train: nope.txt\n'), here), /nope.txt: corpus file \(corpus.train\) not found/);
    expectBad(() => parsePipeline('name: t\nmodel: ../../data/models/none\nstages: {a: {}}\n', here), /data\/models\/none: model folder not found/);
    expectBad(() => parsePipeline('name: [unclosed\n', here), 'valid YAML');
    expectBad(() => parsePipeline(yaml('  collect: {}\n  collect: {}\n'), here), 'YAML');
    const list = parsePipeline(yaml('  - collect: {tokens: 5}\n  - train\n'), here);
    expect(list.stages).toEqual([{ name: 'collect', options: { tokens: 5 } }, { name: 'train', options: {} }]);
  });

  it('option reader: types, ranges, unknown keys', () => {
    const w = { file: 'p.yaml', field: 'stages.x' };
    const r = optionReader({ a: 3, b: 'f16', c: [1, 2], d: 1.5 }, w);
    expect(r.int('a', 1, 1)).toBe(3);
    expect(r.oneOf('b', ['f16', 'f32'] as const)).toBe('f16');
    expect(r.intList('c', undefined)).toEqual([1, 2]);
    expect(r.int('missing', 7)).toBe(7);
    expectBad(() => r.done(), 'p.yaml: stages.x.d: expected one of the known keys (a, b, c, missing)');
    expectBad(() => optionReader({ a: 1.5 }, w).int('a', 1), 'stages.x.a: expected an integer');
    expectBad(() => optionReader({ a: 'x' }, w).oneOf('a', ['y'] as const), 'stages.x.a: expected one of "y"');
  });

  it('hash: canonical JSON ignores key order and undefined', () => {
    expect(canonicalJson({ b: 1, a: [1, { d: 2, c: undefined }] })).toBe('{"a":[1,{"d":2}],"b":1}');
    expect(hashOf({ x: 1, y: 2 })).toBe(hashOf({ y: 2, x: 1 }));
  });
});

describe('pipeline runner', () => {
  let out: string;
  let calls: string[];
  beforeEach(() => {
    out = mkdtempSync(join(tmpdir(), 'polar-runner-'));
    calls = [];
  });
  afterEach(() => rmSync(out, { recursive: true, force: true }));

  // fake stages: a writes a.txt; b reads a's output and fails once if asked; c reads b's
  const fail = { b: 0 };
  const mods: Record<string, StageModule> = {
    a: {
      inputs: [],
      options: (raw, where) => {
        const r = optionReader(raw, where);
        const o = { n: r.int('n', 1, 1) };
        r.done();
        return o;
      },
      async run(ctx) {
        calls.push('a');
        writeFileSync(join(ctx.dir, 'a.txt'), String((ctx.options as { n: number }).n));
        return { summary: { n: (ctx.options as { n: number }).n } };
      },
    },
    b: {
      async run(ctx) {
        calls.push('b');
        const a = readFileSync(join(ctx.inputs.a.dir, 'a.txt'), 'utf8');
        const partial = join(ctx.dir, 'partial.txt');
        const resumed = existsSync(partial);
        writeFileSync(partial, 'half');
        if (fail.b > 0) {
          fail.b--;
          throw new PolarError('interrupted', 'b died');
        }
        writeFileSync(join(ctx.dir, 'b.txt'), a + '!');
        return { summary: { resumed, fromA: ctx.inputs.a.summary.n } };
      },
    },
    c: {
      inputs: ['b'],
      folder: 'cee',
      async run(ctx) {
        calls.push('c');
        expect(Object.keys(ctx.inputs)).toEqual(['b']);
        const t = ctx.progress('items');
        t.start(2);
        t.advance(2);
        return { summary: { b: readFileSync(join(ctx.inputs.b.dir, 'b.txt'), 'utf8') } };
      },
    },
  };
  const load = async (n: string) => mods[n];
  const cfg = (n = 1) => parsePipeline(yaml(`  a: {n: ${n}}\n  b: {}\n  c: {}\n`), here);
  const run = (c = cfg(), extra: Partial<Parameters<typeof runPipeline>[1]> = {}) => runPipeline(c, { out, loadStage: load, progress: silentProgress, ...extra });

  it('runs stages in order, caches by key, reruns what changed and what depends on it', async () => {
    const r1 = await run();
    expect(calls).toEqual(['a', 'b', 'c']);
    expect(r1.stages.map((s) => s.cached)).toEqual([false, false, false]);
    expect(r1.stages[2].dir).toBe(join(out, 'cee'));
    expect(r1.stages[2].summary).toEqual({ b: '1!' });
    const rec = JSON.parse(readFileSync(join(out, 'b', '.stage.json'), 'utf8')) as StageRecord;
    expect(rec.status).toBe('done');
    expect(rec.inputs).toEqual({ a: r1.stages[0].key });

    calls = [];
    const r2 = await run();
    expect(calls).toEqual([]);
    expect(r2.stages.map((s) => s.key)).toEqual(r1.stages.map((s) => s.key));
    expect(r2.stages[1].summary).toEqual(r1.stages[1].summary);
    const table = summaryTable(r2);
    expect(table.split('\n')[0]).toMatch(/^stage +time +key +summary$/);
    expect(table).toMatch(/\na +cached +[0-9a-f]{12} +n=1\n/);

    calls = [];
    const r3 = await run(cfg(2));
    expect(calls).toEqual(['a', 'b', 'c']);
    expect(r3.stages[2].summary).toEqual({ b: '2!' });
    // --until and --force
    calls = [];
    await run(cfg(2), { until: 'b', force: ['b'] });
    expect(calls).toEqual(['b']);
  });

  it('resumes a stage that died with the same key, starts over when the key changed', async () => {
    fail.b = 1;
    await expect(run()).rejects.toThrow('b died');
    expect(calls).toEqual(['a', 'b']);
    const rec = JSON.parse(readFileSync(join(out, 'b', '.stage.json'), 'utf8')) as StageRecord;
    expect(rec.status).toBe('running');
    calls = [];
    const r = await run();
    expect(calls).toEqual(['b', 'c']); // a cached, b resumed in place
    expect(r.stages[1].summary.resumed).toBe(true);

    fail.b = 1;
    await expect(run(cfg(3))).rejects.toThrow('b died');
    calls = [];
    const r2 = await run(cfg(4)); // b's key changed again: its folder is emptied first
    expect(r2.stages[1].summary.resumed).toBe(false);
  });

  it('checks every stage before running any', async () => {
    await expect(run(parsePipeline(yaml('  a: {n: 0}\n  b: {}\n'), here))).rejects.toThrow(/inline.yaml: stages.a.n: expected an integer in \[1/);
    await expect(run(parsePipeline(yaml('  c: {}\n  b: {}\n  a: {}\n'), here))).rejects.toThrow(/stages.c: expected to come after the stages it reads \(b\); "b" is later/);
    expect(calls).toEqual([]);
    await expect(runPipeline(parsePipeline(yaml('  nosuchstage: {}\n'), here), { out, progress: silentProgress })).rejects.toThrow(/stages.nosuchstage: expected one of the stages of this polar \(.*collect/);
  });
});
