// Opens a report.html in headless Chromium (Debian's /usr/bin/chromium) with every non-file request
// refused, waits for the plots, and returns what rendered. Shared by the report tests.
import { existsSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

export const CHROMIUM = '/usr/bin/chromium';
export const haveChromium = existsSync(CHROMIUM);
export const noChromiumReason = `${CHROMIUM} not found (apt-get install -y chromium)`;

export interface RenderedReport {
  state: { done: boolean; plots: number; rendered: number; errors: string[] };
  /** per chart id: svg elements and data marks (legend symbols excluded) */
  marks: Record<string, { svgs: number; lines: number; symbols: number; rects: number }>;
  pageErrors: string[];
  external: string[];
}

export async function renderReport(html: string): Promise<RenderedReport> {
  const { chromium } = await import('playwright-core');
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
    await page.waitForFunction(() => (globalThis as any).__polarReport?.done === true, null, { timeout: 60_000 });
    const state = await page.evaluate(() => (globalThis as any).__polarReport);
    // (runs in the page; the project's type check has no DOM lib)
    const marks = await page.evaluate(() => {
      const doc = (globalThis as any).document;
      const out: Record<string, unknown> = {};
      for (const el of doc.querySelectorAll('div.chart')) {
        out[el.getAttribute('data-plot')] = {
          svgs: el.querySelectorAll('svg').length,
          lines: el.querySelectorAll('g.mark-line.role-mark path').length,
          symbols: el.querySelectorAll('g.mark-symbol.role-mark path').length,
          rects: el.querySelectorAll('g.mark-rect.role-mark path').length,
        };
      }
      return out;
    });
    return { state, marks: marks as RenderedReport['marks'], pageErrors, external };
  } finally {
    await browser.close();
  }
}
