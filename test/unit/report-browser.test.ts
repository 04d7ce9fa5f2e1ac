// Opens report.html in headless Chromium (Debian's /usr/bin/chromium) with the network cut off and
// checks that every plot rendered: an SVG per chart with one mark per data point.
import { describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeReport, plotSpecs } from '../../src/report/index.ts';
import { syntheticReport } from './report-fixture.ts';
import { haveChromium, noChromiumReason, renderReport } from './report-chromium.ts';

if (!haveChromium) console.log(`report-browser: skipped: ${noChromiumReason}`);

describe.skipIf(!haveChromium)('report.html in headless Chromium', () => {
  it('renders every plot (svg marks) without the network', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'polar-report-browser-'));
    const report = syntheticReport();
    const { html } = writeReport(dir, report);
    const r = await renderReport(html);
    const ids = plotSpecs(report).filter((p) => p.spec).map((p) => p.id);
    expect(r.state.errors).toEqual([]);
    expect(r.state.rendered).toBe(ids.length);
    expect(Object.keys(r.marks).sort()).toEqual([...ids].sort());
    for (const id of ids) expect(r.marks[id].svgs, id).toBe(1);
    // one point mark per datum (legend symbols are not role-mark)
    expect(r.marks['union-density'].symbols).toBe(report.union_density.length);
    expect(r.marks['union-density'].lines).toBeGreaterThanOrEqual(3);
    expect(r.marks['recall-vs-k'].symbols).toBe(report.recall_vs_k.length);
    expect(r.marks['heads-kept'].rects).toBe(report.heads_kept.length);
    expect(r.marks['pareto'].symbols).toBe(report.pareto.length);
    expect(r.marks['head-cost'].symbols).toBe(report.head_cost.length);
    expect(r.pageErrors).toEqual([]);
    expect(r.external).toEqual([]);
  });
});
