// Why the GPU suites cannot run here (null when an NVIDIA GPU is visible), printed by each skipped suite.
import { spawnSync } from 'node:child_process';

export function gpuReason(): string | null {
  const r = spawnSync('nvidia-smi', ['-L'], { encoding: 'utf8' });
  if (r.error) return `nvidia-smi not found (${r.error.message}): no NVIDIA GPU on this machine`;
  if (r.status !== 0) return `nvidia-smi failed (exit ${r.status}): ${(r.stderr || r.stdout).trim()}`;
  if (!/GPU \d+:/.test(r.stdout)) return 'nvidia-smi lists no GPU';
  return null;
}
