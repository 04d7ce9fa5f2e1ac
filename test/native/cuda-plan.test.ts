// The warp-specialized selective GEMM's stream-K grid (kernels/cuda/sel_gemm_ws.cuh), checked on the host by
// kernels/tests/cuda_plan_test.cu: the partition invariants that its shared tiles rely on (one stored partial and
// one finished tile per CTA at most, the count a tile's first CTA waits for, a grid within the resident CTAs) and
// the grid choices that the H200 measurements made. Needs no GPU, only the native build's CUDA side (nvcc at
// install time); without it the suite is skipped and says why.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { root } from '../helpers.ts';

const build = process.env.POLAR_BUILD_DIR ? resolve(root, process.env.POLAR_BUILD_DIR) : join(root, 'build');
const exe = join(build, 'ktests', 'cuda_plan_test');

function skipReason(): string | null {
  const cache = join(build, 'CMakeCache.txt');
  if (!existsSync(cache)) return `no native build folder at ${build} (npm install makes it)`;
  if (!/^POLAR_CUDA:BOOL=ON$/m.test(readFileSync(cache, 'utf8')))
    return 'the native build has no CUDA side (nvcc was not found when it was configured)';
  return null;
}
const reason = skipReason();
if (reason) console.log(`test/native/cuda-plan.test.ts skipped: ${reason}`);

describe.skipIf(reason !== null)('stream-K grid of the warp-specialized selective GEMM (host checks)', () => {
  it('builds the check in the native build folder', () => {
    // re-configure with the cached settings first, so that a build folder made before this test existed knows it
    const cfg = spawnSync('cmake', [build], { encoding: 'utf8' });
    expect(cfg.status, cfg.stderr).toBe(0);
    const b = spawnSync('cmake', ['--build', build, '--target', 'cuda_plan_test', '-j', '2'], { encoding: 'utf8' });
    expect(b.status, `${b.stdout.slice(-2000)}\n${b.stderr}`).toBe(0);
  }, 600_000);

  it('keeps the partition invariants and the measured grid choices', () => {
    const r = spawnSync(exe, [], { encoding: 'utf8', timeout: 120_000 });
    const failed = r.stdout.split('\n').filter((l) => l.startsWith('FAIL'));
    expect(failed, failed.join('\n')).toEqual([]);
    const summary = /^(\d+) passed, (\d+) failed$/m.exec(r.stdout);
    expect(summary, `${r.stdout.slice(-2000)}\n${r.stderr}`).not.toBeNull();
    // every grid of 4 slot counts x 14 tile counts x 16 chunk counts, and the sk_grid calls: thousands of checks
    expect(Number(summary![1])).toBeGreaterThan(5000);
    expect(Number(summary![2])).toBe(0);
    expect(r.status).toBe(0);
  });
});
