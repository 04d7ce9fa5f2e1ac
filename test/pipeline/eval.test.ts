// `polar eval` reproduces the reference perplexities of shared/models (stats.json) within 0.1% relative,
// through the CLI as a user runs it, with machine-readable --json output only on stdout.
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { evalText, models, polar } from '../helpers.ts';

describe('polar eval', () => {
  for (const name of ['smallOpt', 'smallLlama'] as const) {
    it(`${name}: perplexity of the eval split matches transformers`, () => {
      const dir = models[name];
      const stats = JSON.parse(readFileSync(join(dir, 'reference/stats.json'), 'utf8'));
      const r = polar(['eval', dir, '--text', evalText, '--json'], { timeout: 300_000 });
      expect(r.code, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout.trim());
      expect(Object.keys(out).sort()).toEqual(['ppl', 'tokens']);
      expect(out.tokens).toBe(stats.eval_tokens);
      expect(Math.abs(out.ppl / stats.eval_ppl - 1)).toBeLessThan(1e-3);
    }, 300_000);
  }

  it('rejects a bad --window with exit code 2', () => {
    const r = polar(['eval', models.tinyOpt, '--text', evalText, '--window', 'abc']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--window: expected an integer/);
  });
});
