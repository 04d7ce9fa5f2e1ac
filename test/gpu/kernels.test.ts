// CUDA kernels (kernels/cuda): runs the kernel test executable (CPU references over a grid of shapes, every
// launch path, fp16 and bf16) when an NVIDIA GPU is present; elsewhere the suite is skipped and says why.
// The executable is built into build-cuda/ (POLAR_CUDA_BUILD overrides) when it is missing and nvcc exists.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { root } from '../helpers.ts';
import { gpuReason } from './gpu-reason.ts';

const build = process.env.POLAR_CUDA_BUILD ?? join(root, 'build-cuda');
const exe = join(build, 'ktests', 'cuda_kernels_test');

const reason = gpuReason();
if (reason) console.log(`test/gpu/kernels.test.ts skipped: ${reason}`);

describe.skipIf(reason !== null)('CUDA kernels vs CPU references', () => {
  it('builds the kernel tests when missing', () => {
    if (existsSync(exe)) return;
    const cfg = spawnSync('cmake', ['-S', join(root, 'kernels'), '-B', build, '-DPOLAR_CUDA=ON', '-DCMAKE_BUILD_TYPE=Release'], {
      encoding: 'utf8',
    });
    expect(cfg.status, cfg.stderr).toBe(0);
    const b = spawnSync('cmake', ['--build', build, '-j', '4', '--target', 'cuda_kernels_test'], { encoding: 'utf8' });
    expect(b.status, b.stderr).toBe(0);
  }, 900_000);

  it('passes every check (selective MLP, attention, routers, cuBLASLt baseline)', () => {
    const r = spawnSync(exe, [], { encoding: 'utf8', timeout: 600_000 });
    const out = `${r.stdout}\n${r.stderr}`;
    const failed = out.split('\n').filter((l) => l.startsWith('FAIL'));
    expect(failed, failed.join('\n')).toEqual([]);
    const summary = /^(\d+) passed, (\d+) failed$/m.exec(r.stdout);
    expect(summary, out.slice(-2000)).not.toBeNull();
    expect(Number(summary![1])).toBeGreaterThan(0);
    expect(Number(summary![2])).toBe(0);
    expect(r.status).toBe(0);
  }, 600_000);
});
