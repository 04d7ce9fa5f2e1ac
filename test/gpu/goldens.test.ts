// Full-model logits of the CUDA backend against the Hugging Face goldens, for every shared model whose golden
// is available: the bundled tiny-opt and tiny-llama always; small-opt, small-llama and medium-opt from
// POLAR_GOLDEN_MODELS (default: ../shared/models next to the checkout), a folder of model folders each with
// reference/golden.safetensors. Packs the models with bench/gpu/pack-goldens.ts and runs the Node-free
// kernels/tests/cuda_golden_test (CPU vs golden, CUDA vs golden and vs CPU, argmax agreement, KV-cache decode vs
// full forward). Needs an NVIDIA GPU; elsewhere the suite is skipped and says why.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { models, root } from '../helpers.ts';
import { gpuReason } from './gpu-reason.ts';

const build = process.env.POLAR_CUDA_BUILD ?? join(root, 'build-cuda');
const exe = join(build, 'ktests', 'cuda_golden_test');
const shared = resolve(process.env.POLAR_GOLDEN_MODELS ?? join(root, '..', 'shared', 'models'));
const extra = ['small-opt', 'small-llama', 'medium-opt'];

const reason = gpuReason();
if (reason) console.log(`test/gpu/goldens.test.ts skipped: ${reason}`);
const found = extra.filter((m) => existsSync(join(shared, m, 'reference', 'golden.safetensors')));
const missing = extra.filter((m) => !found.includes(m));
if (!reason && missing.length)
  console.log(`test/gpu/goldens.test.ts: no golden for ${missing.join(', ')} under ${shared} (set POLAR_GOLDEN_MODELS); checking the others`);

describe.skipIf(reason !== null)('CUDA backend vs the goldens of the shared models', () => {
  const out = mkdtempSync(join(tmpdir(), 'polar-goldens-'));
  afterAll(() => rmSync(out, { recursive: true, force: true }));

  it('builds the golden test when missing', () => {
    if (existsSync(exe)) return;
    const cfg = spawnSync('cmake', ['-S', join(root, 'kernels'), '-B', build, '-DPOLAR_CUDA=ON', '-DCMAKE_BUILD_TYPE=Release'], { encoding: 'utf8' });
    expect(cfg.status, cfg.stderr).toBe(0);
    const b = spawnSync('cmake', ['--build', build, '-j', '4', '--target', 'cuda_golden_test'], { encoding: 'utf8' });
    expect(b.status, b.stderr).toBe(0);
  }, 900_000);

  it('matches every golden (logits, argmax, decode == full forward)', () => {
    const dirs = [models.tinyOpt, models.tinyLlama, ...found.map((m) => join(shared, m))];
    const pack = spawnSync(process.execPath, [join(root, 'bin/run-ts.js'), join(root, 'bench/gpu/pack-goldens.ts'), out, ...dirs, '--goldens', shared], {
      encoding: 'utf8',
      timeout: 300_000,
    });
    expect(pack.status, `${pack.stdout}\n${pack.stderr}`).toBe(0);
    const packs = dirs.map((d) => join(out, `${d.split(/[\\/]/).pop()}.pack`));
    const r = spawnSync(exe, ['--root', root, '--require-cuda', ...packs], { encoding: 'utf8', timeout: 600_000 });
    const text = `${r.stdout}\n${r.stderr}`;
    const failed = text.split('\n').filter((l) => l.startsWith('FAIL'));
    expect(failed, failed.join('\n')).toEqual([]);
    const summary = /^(\d+) passed, (\d+) failed$/m.exec(r.stdout);
    expect(summary, text.slice(-2000)).not.toBeNull();
    expect(Number(summary![1])).toBe(5 * dirs.length);  // cpu vs golden + 4 CUDA checks per model
    expect(r.status).toBe(0);
  }, 900_000);
});
