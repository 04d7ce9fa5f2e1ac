#!/usr/bin/env node
// Builds the native addon (native/) and the kernels (kernels/) with cmake, against the headers of the
// Node.js that runs this script: nothing is downloaded (cmake-js and node-gyp fetch headers by default).
// The CUDA backend is compiled when `nvcc` is found (POLAR_CUDA=0 turns it off, POLAR_CUDA=1 requires it).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
// POLAR_BUILD_DIR: another build folder (bench/gpu/pack-validate.sh builds a portable addon beside the install's)
const buildDir = process.env.POLAR_BUILD_DIR ? resolve(root, process.env.POLAR_BUILD_DIR) : join(root, 'build');

function fail(msg) {
  console.error(`polar: native build failed: ${msg}`);
  process.exit(1);
}

function which(cmd) {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

const nodeInclude = [
  join(dirname(dirname(process.execPath)), 'include', 'node'),
  process.env.npm_config_nodedir ? join(process.env.npm_config_nodedir, 'include', 'node') : null,
].filter(Boolean).find((d) => existsSync(join(d, 'node_api.h')));
if (!nodeInclude) fail(`no Node.js headers (node_api.h) next to ${process.execPath}; install the Node.js development headers`);

let napiInclude;
try {
  napiInclude = dirname(require.resolve('node-addon-api/package.json'));
} catch {
  fail('node-addon-api is not installed (run npm install)');
}
if (!which('cmake')) fail('cmake not found on PATH (Debian: apt-get install cmake)');

const cudaEnv = process.env.POLAR_CUDA;
const nvcc = which('nvcc') ?? (existsSync('/usr/local/cuda/bin/nvcc') ? '/usr/local/cuda/bin/nvcc' : null);
let cuda = false;
if (cudaEnv === '1') {
  if (!nvcc) fail('POLAR_CUDA=1 but nvcc was not found');
  cuda = true;
} else if (cudaEnv !== '0' && nvcc) {
  cuda = true;
}

mkdirSync(buildDir, { recursive: true });
const cfg = [
  '-S', root, '-B', buildDir,
  '-DCMAKE_BUILD_TYPE=Release',
  `-DNODE_INCLUDE_DIR=${nodeInclude}`,
  `-DNAPI_INCLUDE_DIR=${napiInclude}`,
  `-DPOLAR_CUDA=${cuda ? 'ON' : 'OFF'}`,
];
if (cuda) cfg.push(`-DCMAKE_CUDA_COMPILER=${nvcc}`);
if (process.env.POLAR_MARCH) cfg.push(`-DPOLAR_MARCH=${process.env.POLAR_MARCH}`);
console.log(`polar: building native addon (CUDA backend: ${cuda ? `on, ${nvcc}` : 'off, nvcc not found'})`);
const run = (args) => {
  const r = spawnSync('cmake', args, { stdio: 'inherit' });
  if (r.status !== 0) fail(`cmake ${args.slice(0, 2).join(' ')} exited with ${r.status}`);
};
run(cfg);
const jobs = Math.max(1, Number(process.env.POLAR_BUILD_JOBS ?? 2));
run(['--build', buildDir, '--config', 'Release', '-j', String(jobs)]);
console.log(`polar: native addon built at ${join(buildDir, 'polar_native.node')}`);
