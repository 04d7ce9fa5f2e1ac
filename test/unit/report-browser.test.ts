// Opens report.html in headless Chromium (Debian's /usr/bin/chromium) with the network cut off and
// checks that every plot rendered: an SVG per chart with marks drawn from the data.
import { describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { writeReport, plotSpecs } from '../../src/report/index.ts';
import { syntheticReport } from './report-fixture.ts';

const CHROMIUM = '/usr/bin/chromium';
const have = existsSync(CHROMIUM);
if (!have) console.log(`report-browser: skipped: ${CHROMIUM} not found (apt-get install -y chromium)`);

describe.skipIf(!have)('report.html in headless Chromium', () => {
  it('renders every plot (svg marks) without the network', async () => {
    const { chromium } = await import('playwright-core');
    const dir = mkdtempSync(join(tmpdir(), 'polar-report-browser-'));
    const report = syntheticReport();
    const { html } = writeReport(dir, report);
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
    });
    try {
      const page = await browser.newPage();
      const external: string[] = [];
      await page.route('**/*', (route) => {
        const url = route.request().url();
        if (url.startsWith('file:') || url.startsWith('data:')) return route.continue();
        external.push(url);
        return route.abort();
      });
      const pageErrors: string[] = [];
      page.on('pageerror', (e) => pageErrors.push(e.message));
      await page.goto(pathToFileURL(html).href);
      await page.waitForFunction(() => (globalThis as any).__polarReport?.done === true, null, { timeout: 30_000 });
      const state = await page.evaluate(() => (globalThis as any).__polarReport);
      const ids = plotSpecs(report).filter((p) => p.spec).map((p) => p.id);
      expect(state.errors).toEqual([]);
      expect(state.rendered).toBe(ids.length);
      const marks = await page.evaluate((ids: string[]) =>
        Object.fromEntries(
          ids.map((id) => {
            // (runs in the page; the project's type check has no DOM lib)
            const el = (globalThis as any).document.getElementById(`chart-${id}`);
            return [
              id,
              {
                svgs: el.querySelectorAll('svg').length,
                lines: el.querySelectorAll('g.mark-line.role-mark path').length,
                symbols: el.querySelectorAll('g.mark-symbol.role-mark path').length,
                rects: el.querySelectorAll('g.mark-rect.role-mark path').length,
              },
            ];
          }),
        ),
      ids);
      for (const id of ids) expect(marks[id].svgs, id).toBe(1);
      // one point mark per datum (legend symbols are not role-mark)
      expect(marks['union-density'].symbols).toBe(report.union_density.length);
      expect(marks['union-density'].lines).toBeGreaterThanOrEqual(3);
      expect(marks['recall-vs-k'].symbols).toBe(report.recall_vs_k.length);
      expect(marks['heads-kept'].rects).toBe(report.heads_kept.length);
      expect(marks['pareto'].symbols).toBe(report.pareto.length);
      expect(marks['head-cost'].symbols).toBe(report.head_cost.length);
      expect(pageErrors).toEqual([]);
      expect(external).toEqual([]);
    } finally {
      await browser.close();
    }
  });
});
