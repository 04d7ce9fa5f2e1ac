// The whole pipeline (collect -> train -> calibrate -> export -> validate -> report) on tiny-opt with small
// budgets, through the pipeline runner: validate.json has exactly the documented fields, the sparse forward
// with k = ffn and every head equals the dense logits within 1e-4 with the trained routers, the report is
// written, a second run does no work; then `polar validate` / `polar report` / `polar run` through the CLI.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parsePipeline } from '../../src/pipeline/config.ts';
import { runPipeline, type PipelineResult } from '../../src/pipeline/index.ts';
import { silentProgress } from '../../src/progress/index.ts';
import { artifactPlan, loadArtifact } from '../../src/artifact/index.ts';
import { loadModel } from '../../src/model/index.ts';
import { nativeAvailable, openRuntimeModel } from '../../src/runtime/index.ts';
import { readSafetensorsHeader, readTensorInt } from '../../src/formats/safetensors.ts';
import { protocolTokens, windows } from '../../src/eval/protocol.ts';
import { perplexity } from '../../src/eval/perplexity.ts';
import { defaultSplitText } from '../../src/corpus/index.ts';
import { models } from '../helpers.ts';
import { cli, cliHas, TINY_PIPELINE } from './run-fixture.ts';
import { haveChromium, noChromiumReason, renderReport } from '../unit/report-chromium.ts';

const na = nativeAvailable();
if (!na.ok) console.log(`run-tiny-opt: skipped: ${na.reason.split('\n')[0]}`);

const RESULT_KEYS = ['batch_size', 'dense_ppl', 'sparse_ppl', 'ppl_increase', 'top1_agreement', 'kl', 'layers'];
const LAYER_KEYS = ['layer', 'mlp_density', 'heads_kept', 'mlp_recall', 'head_recall'];

function checkResults(results: any[], batchSizes: number[], layers: number, heads: number): void {
  expect(results.map((r) => r.batch_size)).toEqual(batchSizes);
  for (const r of results) {
    expect(Object.keys(r)).toEqual(RESULT_KEYS);
    for (const k of RESULT_KEYS.slice(1, -1)) expect(Number.isFinite(r[k]), k).toBe(true);
    expect(r.ppl_increase).toBeCloseTo(r.sparse_ppl / r.dense_ppl - 1, 12);
    expect(r.top1_agreement).toBeGreaterThan(0.5);
    expect(r.top1_agreement).toBeLessThanOrEqual(1);
    expect(r.kl).toBeGreaterThanOrEqual(0);
    expect(r.layers.map((l: any) => l.layer)).toEqual([...Array(layers).keys()]);
    for (const l of r.layers) {
      expect(Object.keys(l)).toEqual(LAYER_KEYS);
      expect(l.mlp_density).toBeGreaterThan(0);
      expect(l.mlp_density).toBeLessThanOrEqual(1);
      expect(l.heads_kept).toBeGreaterThanOrEqual(1);
      expect(l.heads_kept).toBeLessThanOrEqual(heads);
      for (const k of ['mlp_recall', 'head_recall']) {
        expect(l[k]).toBeGreaterThanOrEqual(0);
        expect(l[k]).toBeLessThanOrEqual(1);
      }
    }
    // layer 0 stays dense
    expect(r.layers[0]).toEqual({ layer: 0, mlp_density: 1, heads_kept: heads, mlp_recall: 1, head_recall: 1 });
  }
}

describe.skipIf(!na.ok)('polar run on tiny-opt', () => {
  let dir: string;
  let out: string;
  let yaml: string;
  let first: PipelineResult;
  const model = loadModel(models.tinyOpt);
  const spec = model.spec;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'polar-run-tiny-'));
    out = join(dir, 'out');
    yaml = join(dir, 'tiny.yaml');
    writeFileSync(yaml, TINY_PIPELINE(models.tinyOpt));
    first = await runPipeline(parsePipeline(readFileSync(yaml, 'utf8'), yaml), { out, progress: silentProgress });
  }, 300_000);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('runs every stage and writes artifact/, report.html and report.json', () => {
    expect(first.stages.map((s) => [s.stage, s.cached])).toEqual(['collect', 'train', 'calibrate', 'export', 'validate', 'report'].map((s) => [s, false]));
    for (const f of ['artifact/manifest.json', 'artifact/routers.safetensors', 'report.html', 'report.json', 'validate/validate.json']) expect(existsSync(join(out, f)), f).toBe(true);
    const report = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8'));
    const v = JSON.parse(readFileSync(join(out, 'validate/validate.json'), 'utf8'));
    expect(report.validate.results).toEqual(v.results);
    expect(report.union_density.length).toBeGreaterThan(0);
    expect(report.recall_vs_k.length).toBeGreaterThan(0);
    expect(readFileSync(join(out, 'report.html'), 'utf8')).not.toMatch(/<script[^>]+src=/);
  });

  it.skipIf(!haveChromium)('report.html of the run renders every plot in headless Chromium', async () => {
    const r = await renderReport(join(out, 'report.html'));
    expect(r.state.errors).toEqual([]);
    expect(r.state.plots).toBeGreaterThanOrEqual(4);
    expect(r.state.rendered).toBe(r.state.plots);
    const report = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8'));
    expect(r.marks['union-density'].symbols).toBe(report.union_density.length);
    expect(r.marks['recall-vs-k'].symbols).toBe(report.recall_vs_k.length);
    expect(r.marks['heads-kept'].rects).toBe(report.heads_kept.length);
    expect(r.marks['pareto'].symbols).toBe(report.pareto.length);
    expect(r.external).toEqual([]);
  });
  if (!haveChromium) console.log(`run-tiny-opt: report rendering check skipped: ${noChromiumReason}`);

  it('validate.json: the documented fields, per batch size and layer, and a dense perplexity equal to the prefill one', async () => {
    const v = JSON.parse(readFileSync(join(out, 'validate/validate.json'), 'utf8'));
    expect(v.passed).toBe(true);
    expect(v.thresholds.max_ppl_increase).toBe(0.5);
    checkResults(v.results, [1, 4], spec.layers, spec.heads);
    // the artifact is sparse: some layer computes fewer neurons or heads at batch 1
    expect(v.results[0].layers.some((l: any) => l.mlp_density < 1 || l.heads_kept < spec.heads)).toBe(true);
    // decoding one position at a time gives the perplexity of the batched prefill (src/eval/perplexity.ts)
    const tokens = protocolTokens(defaultSplitText('eval'), model.tokenizer(), spec).subarray(0, 1024);
    const rt = openRuntimeModel(model);
    try {
      const p = await perplexity(model, rt, tokens, 256);
      expect(v.tokens).toBe(p.tokens);
      for (const r of v.results) expect(Math.abs(r.dense_ppl / p.ppl - 1)).toBeLessThan(1e-5);
    } finally {
      rt.dispose();
    }
    expect(windows(tokens, 256).length).toBe(4);
  });

  it('sparse forward with the trained routers, k = ffn and every head: the dense logits within 1e-4', async () => {
    const art = loadArtifact(join(out, 'artifact'), { model });
    const plan = artifactPlan(art, { batchSize: 1 });
    expect(plan.layers.length).toBeGreaterThan(0);
    const full = { layers: plan.layers.map((l) => ({ ...l, ...(l.mlp ? { mlp: { ...l.mlp, k: spec.ffn } } : {}), ...(l.attn ? { attn: { ...l.attn, k: spec.kvHeads } } : {}) })) };
    const g = readSafetensorsHeader(join(models.tinyOpt, 'reference/golden.safetensors'));
    const ids = readTensorInt(g.tensors.get('input_ids')!);
    const seqs = [ids.slice(0, 32), ids.slice(32, 64)];
    const rt = openRuntimeModel(model);
    try {
      const dense = rt.session({ maxSeqs: 2, maxLen: 32 });
      const sparse = rt.session({ maxSeqs: 2, maxLen: 32 });
      sparse.setSparsePlan(full);
      const a = await dense.forward(seqs.map((t, slot) => ({ slot, tokens: t })), { logits: 'all' });
      const b = await sparse.forward(seqs.map((t, slot) => ({ slot, tokens: t })), { logits: 'all' });
      expect(b.sparse && b.sparse.length).toBeGreaterThan(0); // it did run sparse
      let max = 0;
      for (let i = 0; i < a.logits!.length; i++) max = Math.max(max, Math.abs(a.logits![i] - b.logits![i]));
      expect(max).toBeLessThan(1e-4);
      // and decoding step by step as validate does
      dense.reset();
      sparse.reset();
      for (let t = 0; t < 32; t++) {
        const step = seqs.map((s, slot) => ({ slot, tokens: [s[t]] }));
        const x = await dense.forward(step, { logits: 'all' });
        const y = await sparse.forward(step, { logits: 'all' });
        for (let i = 0; i < x.logits!.length; i++) max = Math.max(max, Math.abs(x.logits![i] - y.logits![i]));
      }
      expect(max).toBeLessThan(1e-4);
      dense.dispose();
      sparse.dispose();
    } finally {
      rt.dispose();
    }
  });

  it('a second run does no work', async () => {
    const again = await runPipeline(parsePipeline(readFileSync(yaml, 'utf8'), yaml), { out, progress: silentProgress });
    expect(again.stages.every((s) => s.cached)).toBe(true);
    expect(again.stages.map((s) => s.key)).toEqual(first.stages.map((s) => s.key));
  });

  describe('through the CLI', () => {
    const has = (cmd: string) => cliHas(cmd);
    if (!has('validate') || !has('run') || !has('report')) console.log('run-tiny-opt: CLI tests skipped: validate/run/report are not registered in src/cli/main.ts yet');

    it.skipIf(!has('validate'))('polar validate --json prints exactly the documented object', () => {
      const r = cli(['validate', join(out, 'artifact'), '--model', models.tinyOpt, '--batch-sizes', '1,2', '--max-tokens', '512', '--max-ppl-increase', '0.5', '--json']);
      expect(r.code, r.stderr).toBe(0);
      const j = JSON.parse(r.stdout);
      expect(Object.keys(j)).toEqual(['results']);
      checkResults(j.results, [1, 2], spec.layers, spec.heads);
    });

    it.skipIf(!has('validate'))('polar validate exits 3 when a threshold is exceeded, 2 for another model\'s artifact', () => {
      const r = cli(['validate', join(out, 'artifact'), '--model', models.tinyOpt, '--batch-sizes', '1', '--max-tokens', '300', '--max-ppl-increase', '1', '--max-kl', '0', '--json']);
      expect(r.code, r.stderr).toBe(3);
      expect(JSON.parse(r.stdout).results).toHaveLength(1); // results first, then the verdict
      expect(r.stderr).toMatch(/validation failed: batch size 1: KL .* > 0/);
      const w = cli(['validate', join(out, 'artifact'), '--model', models.smallOpt, '--max-tokens', '300']);
      expect(w.code).toBe(2);
      expect(w.stderr).toMatch(/configSha256|model/);
    });

    it.skipIf(!has('run') || !has('report'))('polar run: everything cached, summary table; polar report rebuilds the report', () => {
      const r = cli(['run', yaml, '--out', out]);
      expect(r.code, r.stderr).toBe(0);
      for (const s of ['collect', 'train', 'calibrate', 'export', 'validate', 'report']) expect(r.stdout).toMatch(new RegExp(`^${s}\\s+cached`, 'm'));
      expect(r.stdout).toMatch(/0 stage\(s\) ran, 6 cached/);
      const rep = cli(['report', out, '--out', join(dir, 'rep')]);
      expect(rep.code, rep.stderr).toBe(0);
      const a = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8'));
      const b = JSON.parse(readFileSync(join(dir, 'rep', 'report.json'), 'utf8'));
      for (const k of ['model', 'artifact', 'union_density', 'recall_vs_k', 'heads_kept', 'head_cost', 'pareto', 'validate', 'speed']) expect(b[k], k).toEqual(a[k]);
    });
  });
});
