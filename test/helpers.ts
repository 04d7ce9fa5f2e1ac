// Test helpers shared by the suites: paths of the bundled models and a CLI runner.
import { spawnSync } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const models = {
  tinyOpt: join(root, 'data/models/tiny-opt'),
  tinyLlama: join(root, 'data/models/tiny-llama'),
  smallOpt: join(root, 'data/models/small-opt'),
  smallLlama: join(root, 'data/models/small-llama'),
};
export const evalText = join(root, 'data/fixtures/corpus/eval.txt');

export function polar(args: string[], opts: { timeout?: number; env?: Record<string, string> } = {}) {
  const r = spawnSync(process.execPath, [join(root, 'bin/polar.js'), ...args], {
    encoding: 'utf8',
    timeout: opts.timeout ?? 120_000,
    env: { ...process.env, ...opts.env },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, signal: r.signal };
}
