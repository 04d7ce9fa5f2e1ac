import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // The native addon and child processes behave best in forked workers (not worker_threads).
    pool: 'forks',
    include: ['test/unit/**/*.test.ts', 'test/native/**/*.test.ts', 'test/pipeline/**/*.test.ts', 'test/gpu/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 300_000,
    // 2-core CI machine: the native tests use both cores themselves.
    maxWorkers: 2,
  },
});
