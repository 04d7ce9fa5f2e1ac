// A train worker process (forked by index.ts for --jobs N): receives one layer at a time over IPC, trains
// it with the backend the parent chose, replies with the result, and exits when told to.
import type { ActivationSet } from '../../arrow/types.ts';
import { PolarError } from '../../errors.ts';
import { nativeOps } from '../../runtime/ops.ts';
import { selectBackend } from '../../tfjs/backends.ts';
import { trainLayer } from '../../routers/trainer.ts';
import { openActivationDir, type WorkerJob, type WorkerReply } from './index.ts';

const send = (m: WorkerReply) => process.send?.(m);
let stopping = false;
process.on('SIGTERM', () => {
  stopping = true;
});

let set: ActivationSet | null = null;
let setDir = '';
let backendReady: string | null = null;

process.on('message', async (m: WorkerJob | { type: 'exit' }) => {
  if (m.type === 'exit') {
    process.disconnect?.();
    process.exit(0);
  }
  try {
    if (backendReady !== m.backend) {
      await selectBackend(m.backend);
      backendReady = m.backend;
    }
    if (!set || setDir !== m.activations) {
      set = openActivationDir(m.activations);
      setDir = m.activations;
    }
    const result = await trainLayer(set.layer(m.layer), m.opts, {
      outDir: m.out,
      backend: m.backend,
      ops: nativeOps(),
      log: (line) => send({ type: 'log', line }),
      shouldStop: () => stopping,
    });
    send({ type: 'done', result });
  } catch (e) {
    const pe = e instanceof PolarError ? e : null;
    send({ type: 'error', message: pe ? pe.message : `internal error in the worker of layer ${m.layer}: ${(e as Error)?.stack ?? e}`, kind: pe?.kind ?? 'native', exitCode: pe?.exitCode ?? 1 });
  }
});
