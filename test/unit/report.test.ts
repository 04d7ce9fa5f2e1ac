import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildReport, decodeStepBytes, markPareto, plotSpecs, readSpeedFile, renderReportHtml, writeReport } from '../../src/report/index.ts';
import { syntheticReport } from './report-fixture.ts';

describe('report', () => {
  it('builds report.json with every plot series from calibration and validation', () => {
    const r = syntheticReport();
    expect(r.format).toBe('polar-report');
    expect(r.union_density.filter((p) => p.series === 'true union')).toHaveLength(3 * 6);
    expect(r.union_density.filter((p) => p.series === 'calibrated k')).toHaveLength(3 * 6);
    // realised density of the routed layers (1-3) at each validated batch size
    expect(r.union_density.filter((p) => p.series === 'realised (validate)').map((p) => p.batch_size)).toEqual([1, 1, 1, 16, 16, 16]);
    expect(r.recall_vs_k).toHaveLength(3 * 6 * 6);
    expect(r.heads_kept.map((h) => h.source)).toContain('calibrated');
    expect(r.heads_kept.map((h) => h.source)).toContain('validate b=16');
    expect(r.pareto.find((p) => p.label === 'dominated')!.pareto).toBe(false);
    expect(r.pareto.filter((p) => p.source === 'calibration search' && p.pareto)).toHaveLength(4);
    expect(r.head_cost).toHaveLength(12);
    expect(plotSpecs(r).filter((p) => p.spec).map((p) => p.id)).toEqual(['union-density', 'recall-vs-k', 'heads-kept', 'pareto', 'head-cost']);
  });

  it('marks the Pareto front per source', () => {
    const pts = markPareto([
      { label: 'a', source: 's', work_skipped: 0.5, mlp_density: 0, heads_frac: 0, ppl_increase: 0.01, batch: 1, context: 1 },
      { label: 'b', source: 's', work_skipped: 0.4, mlp_density: 0, heads_frac: 0, ppl_increase: 0.02, batch: 1, context: 1 },
      { label: 'c', source: 's', work_skipped: 0.6, mlp_density: 0, heads_frac: 0, ppl_increase: 0.03, batch: 1, context: 1 },
      { label: 'd', source: 't', work_skipped: 0.1, mlp_density: 0, heads_frac: 0, ppl_increase: 0.5, batch: 1, context: 1 },
    ]);
    expect(pts.map((p) => p.pareto)).toEqual([true, false, true, true]);
  });

  it('writes a self-contained report.html (no network, libraries inlined, specs embedded)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'polar-report-'));
    const { json, html } = writeReport(dir, syntheticReport());
    const j = JSON.parse(readFileSync(json, 'utf8'));
    expect(j.validate.results[0].batch_size).toBe(1);
    const h = readFileSync(html, 'utf8');
    expect(h).not.toMatch(/<script[^>]+src=/i);
    expect(h).not.toMatch(/<link[^>]+href=/i);
    expect(h).toContain('/* vega-lite ');
    expect(h).toContain('/* vega-embed ');
    expect(h).toContain('id="chart-union-density"');
    expect(h).toContain('validation passed');
    // the embedded JSON cannot close its script element early
    const specs = h.slice(h.indexOf('id="polar-specs">'), h.indexOf('</script>', h.indexOf('id="polar-specs">')));
    expect(specs).not.toContain('<');
  });

  it('speed tables from benchmark JSON lines and JSON arrays (nested keys flattened)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'polar-speed-'));
    writeFileSync(join(dir, 'b.jsonl'), '{"kernel":"mlp","batch":1,"ms":0.5,"hw":{"gbps":410}}\n\n{"kernel":"attn","batch":16,"ms":1.25}\n');
    const t = readSpeedFile(join(dir, 'b.jsonl'));
    expect(t.columns).toEqual(['kernel', 'batch', 'ms', 'hw.gbps']);
    expect(t.rows).toEqual([['mlp', 1, 0.5, 410], ['attn', 16, 1.25, null]]);
    writeFileSync(join(dir, 'a.json'), JSON.stringify({ results: [{ a: 1 }, { b: [1, 2] }] }));
    expect(readSpeedFile(join(dir, 'a.json')).rows).toEqual([[1, null], [null, '1, 2']]);
    writeFileSync(join(dir, 'bad.jsonl'), '{"a":1}\nnot json\n');
    expect(() => readSpeedFile(join(dir, 'bad.jsonl'))).toThrow(/bad.jsonl:2: \(line\): expected JSON/);
  });

  it('work model: decode-step bytes of the KV cache and MLP weights kept', () => {
    const m = { name: 'm', family: 'opt', layers: 2, hidden: 4, ffn: 8, heads: 2, kvHeads: 2, headDim: 2, gated: false };
    // dense: per layer KV 1*10*2*2*2 = 80 + MLP 2*4*8 = 64 -> 2 layers * 144 * 2 bytes
    expect(decodeStepBytes(m, 1, 10, [], [])).toBe(576);
    expect(decodeStepBytes(m, 1, 10, [2, 1], [8, 4])).toBe(2 * (144 + 40 + 32));
  });

  it('says what is missing instead of drawing empty plots', () => {
    const r = buildReport({ title: 't', toolVersion: '0', model: { name: 'm', family: 'llama', layers: 2, hidden: 8, ffn: 16, heads: 2, kvHeads: 1, headDim: 4, gated: true } });
    const h = renderReportHtml(r);
    expect(h).toContain('Not shown: no MLP calibration');
    expect(h).toContain('No benchmark results');
    expect(r.notes.join(' ')).toContain('no validation results');
  });
});
