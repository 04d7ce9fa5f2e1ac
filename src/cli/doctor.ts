// `polar doctor`: what this machine and this install can do, and why not where they can't.
import type { Command } from 'commander';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { arch, cpus, platform, release, totalmem } from 'node:os';
import { native, nativeAvailable } from '../runtime/binding.ts';
import { probeBackends } from '../tfjs/backends.ts';
import { action } from './common.ts';

interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

function cmd(c: string, args: string[]): { ok: boolean; out: string } {
  const r = spawnSync(c, args, { encoding: 'utf8', timeout: 10_000 });
  if (r.error || r.status !== 0) return { ok: false, out: (r.error?.message ?? r.stderr ?? '').trim() };
  return { ok: true, out: r.stdout.trim() };
}

function cpuFlags(): string[] {
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('flags'));
    const have = new Set((line ?? '').split(':')[1]?.trim().split(/\s+/) ?? []);
    return ['avx2', 'fma', 'f16c', 'avx512f', 'avx512bw', 'avx512_bf16', 'amx_tile'].filter((f) => have.has(f));
  } catch {
    return [];
  }
}

export async function doctorReport(): Promise<{ checks: Check[]; info: Record<string, unknown> }> {
  const checks: Check[] = [];
  const info: Record<string, unknown> = {
    platform: `${platform()} ${release()} ${arch()}`,
    node: process.version,
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    cpuFeatures: cpuFlags(),
  };
  const addon = nativeAvailable();
  if (addon.ok) {
    const b = native().buildInfo();
    info.threads = b.threads;
    info.compiledFeatures = b.compiledFeatures;
    checks.push({ name: 'native addon', ok: true, detail: `loaded; kernels compiled for ${b.compiledFeatures.join(', ') || 'generic x86-64'}; ${b.threads} threads; ${b.compiler}` });
    checks.push({
      name: 'CUDA backend',
      ok: b.cudaBuilt,
      detail: b.cudaBuilt ? 'compiled into the addon' : 'not compiled: nvcc was not found when the addon was built (install the CUDA toolkit and run `npm run build:native`)',
    });
  } else {
    checks.push({ name: 'native addon', ok: false, detail: addon.reason });
  }
  const nvccPath = cmd('sh', ['-c', 'command -v nvcc || ls /usr/local/cuda/bin/nvcc']);
  const nvccVer = nvccPath.ok ? cmd(nvccPath.out.split('\n')[0], ['--version']) : null;
  checks.push({
    name: 'nvcc',
    ok: nvccPath.ok,
    detail: nvccPath.ok ? `${nvccPath.out.split('\n')[0]} (${nvccVer?.out.split('\n').find((l) => l.includes('release'))?.trim() ?? 'version unknown'})` : 'not found on PATH or in /usr/local/cuda/bin',
  });
  const smi = cmd('nvidia-smi', ['--query-gpu=name,memory.total,driver_version', '--format=csv,noheader']);
  checks.push({
    name: 'GPU',
    ok: smi.ok,
    detail: smi.ok ? smi.out : existsSync('/dev/nvidia0') ? 'a /dev/nvidia0 device exists but nvidia-smi failed' : 'no NVIDIA GPU (nvidia-smi not found or no device): the CUDA backend and GPU tests are unavailable; the CPU backend is used',
  });
  for (const b of await probeBackends()) {
    checks.push({ name: `tfjs backend ${b.name}`, ok: b.ok, detail: b.ok ? `loads${b.selected ? ' (selected for training)' : ''}${b.note ? `; ${b.note}` : ''}` : b.reason ?? 'does not load' });
  }
  return { checks, info };
}

export function registerDoctor(program: Command): void {
  program
    .command('doctor')
    .description('report platform, CPU features, threads, native addon, CUDA/GPU and TensorFlow.js backends')
    .option('--json', 'print one JSON object on stdout')
    .action(
      action(async (opts: { json?: boolean }) => {
        const { checks, info } = await doctorReport();
        if (opts.json) {
          process.stdout.write(JSON.stringify({ info, checks }) + '\n');
          return;
        }
        for (const [k, v] of Object.entries(info)) process.stdout.write(`${k.padEnd(16)} ${Array.isArray(v) ? v.join(', ') : String(v)}\n`);
        process.stdout.write('\n');
        const w = Math.max(...checks.map((c) => c.name.length));
        for (const c of checks) process.stdout.write(`${c.ok ? 'ok  ' : 'no  '} ${c.name.padEnd(w)}  ${c.detail}\n`);
      }),
    );
}
