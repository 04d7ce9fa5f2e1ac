// bench/gpu/join.py: joins cuda_bench's JSON lines with the reference's per point, computes the speedup over
// the reference and the reference's fraction of the same limit, applies issue 7's acceptance targets, and
// checks that both sides were timed with the same L2 flush. Runs where python3 exists (the GPU machine has it);
// elsewhere the suite is skipped and says why.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { root } from '../helpers.ts';

const probe = spawnSync('python3', ['--version'], { encoding: 'utf8' });
const reason = probe.error || probe.status !== 0 ? `python3 not found (${probe.error?.message ?? probe.stderr})` : null;
if (reason) console.log(`test/unit/bench-gpu-join.test.ts skipped: ${reason}`);

const dir = mkdtempSync(join(tmpdir(), 'polar-join-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const lines = (rows: object[]) => rows.map((r) => JSON.stringify(r)).join('\n') + '\n';
const mlp = (batch: number, ms: number, limit: number) => ({
  bench: 'mlp', model: 'opt-66b', batch, density: 0.25, k: 9216, d: 9216, ms, limit_ms: limit, frac_of_limit: limit / ms,
});

function join_(polarRows: object[], refRows: object[]) {
  const p = join(dir, `p${Math.random()}.jsonl`);
  const r = join(dir, `r${Math.random()}.jsonl`);
  writeFileSync(p, lines(polarRows));
  writeFileSync(r, lines(refRows));
  const out = spawnSync('python3', [join(root, 'bench/gpu/join.py'), p, r], { encoding: 'utf8' });
  expect(out.status).toBe(0);
  return { rows: out.stdout.trim().split('\n').map((l) => JSON.parse(l)), stderr: out.stderr };
}

describe.skipIf(reason !== null)('bench/gpu/join.py', () => {
  it('computes the speedup, the reference fraction of our limit and the MLP targets per point', () => {
    const { rows, stderr } = join_(
      [
        { bench: 'meta', l2_flush: 'read', gpu: 'NVIDIA H200', hbm_bytes_per_s: 4.3e12, hbm_source: 'measured' },
        mlp(64, 0.1, 0.085),
        mlp(256, 0.2, 0.113),
      ],
      [
        { bench: 'ref_meta', l2_flush: 'read' },
        { bench: 'mlp', model: 'opt-66b', batch: 64, density: 0.25, ref_ms: 0.2 },  // ref at 42.5% of the limit
        { bench: 'mlp', model: 'opt-66b', batch: 256, density: 0.25, ref_ms: 0.17 },  // ref at 66.5%
      ],
    );
    expect(stderr).toBe('');
    const [b64, b256, summary] = rows.slice(1);
    expect(b64.speedup_vs_ref).toBeCloseTo(2.0, 3);
    expect(b64.ref_frac_of_limit).toBeCloseTo(0.425, 3);
    expect(b64.targets).toEqual({ frac_min: 0.8, vs_ref_min: 1.3 });  // batch <= 64; reference under 60%
    expect(b64.targets_met).toBe(true);  // 85% of the limit, 2x the reference
    expect(b256.targets).toEqual({ frac_min: 0.6, vs_ref_min: 1.0 });  // batch 256; reference over 60%
    expect(b256.speedup_vs_ref).toBeCloseTo(0.85, 3);
    expect(b256.targets_met).toBe(false);  // 56.5% of the limit and slower than the reference
    expect(summary).toMatchObject({ bench: 'summary', points_checked: 2, targets_missed: 1, reference_points: 2 });
    expect(summary.l2_flush).toEqual({ polar: 'read', reference: 'read' });
    // the summary names the limit every fraction is of (the GPU's measured copy bandwidth here)
    expect(summary.limit).toMatchObject({ gpu: 'NVIDIA H200', hbm_bytes_per_s: 4.3e12, hbm_source: 'measured' });
    expect(summary.misses[0]).toMatchObject({ batch: 256, density: 0.25 });
  });

  it('warns when the two sides were flushed differently (a reference without ref_meta used the memset)', () => {
    const { rows, stderr } = join_(
      [{ bench: 'meta', l2_flush: 'read' }, mlp(16, 0.1, 0.085)],
      [{ bench: 'mlp', model: 'opt-66b', batch: 16, density: 0.25, ref_ms: 0.12 }],
    );
    expect(stderr).toMatch(/L2 flush differs \(polar read, reference write\)/);
    expect(rows.at(-1).l2_flush).toEqual({ polar: 'read', reference: 'write' });
  });
});
