// npm run bench:collect [-- --tokens N --model dir --seq-len N --batch N --threads N --out dir]
// Collects tokens (default 200k) of small-opt from scratch into a fresh folder and prints one JSON object:
// seconds, tokens/s, bytes written and per token, MB/s written, with the machine's CPU and thread count.
// Progress goes to stderr; the JSON is the only thing on stdout.
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { collect } from '../src/stages/collect/collect.ts';
import { createProgress } from '../src/progress/index.ts';
import { native } from '../src/runtime/binding.ts';

const { values } = parseArgs({
  options: {
    tokens: { type: 'string', default: '200000' },
    model: { type: 'string', default: 'data/models/small-opt' },
    'seq-len': { type: 'string', default: '256' },
    batch: { type: 'string', default: '8' },
    threads: { type: 'string' },
    out: { type: 'string' },
    'router-dtype': { type: 'string', default: 'f16' },
  },
  strict: true,
});

const out = values.out ? resolve(values.out) : mkdtempSync(join(tmpdir(), 'polar-bench-collect-'));
const display = createProgress();
try {
  const res = await collect({
    modelDir: values.model!,
    out,
    tokens: Number(values.tokens),
    seqLen: Number(values['seq-len']),
    batch: Number(values.batch),
    routerDtype: values['router-dtype'] as 'f16' | 'f32',
    threads: values.threads ? Number(values.threads) : undefined,
    onMismatch: 'restart',
    progress: display.task('bench:collect', 'tok'),
    log: (m) => display.log(m),
  });
  display.close();
  const m = res.manifest;
  const info = native().buildInfo();
  process.stdout.write(
    JSON.stringify({
      bench: 'collect',
      model: values.model,
      tokens: m.tokens,
      new_tokens: res.newTokens,
      seq_len: m.settings.seq_len,
      batch: m.settings.batch,
      layers: m.settings.layers.length,
      router_input_dtype: m.settings.router_input_dtype,
      seconds: Number(res.seconds.toFixed(3)),
      tokens_per_second: Number(res.tokensPerSecond.toFixed(1)),
      bytes: m.bytes,
      bytes_per_token: Number(m.bytes_per_token.toFixed(1)),
      write_mb_per_second: Number((m.bytes / 1e6 / res.seconds).toFixed(1)),
      cached: res.cached,
      cpu: cpus()[0]?.model ?? 'unknown',
      cores: cpus().length,
      native_threads: info.threads,
      memory_gib: Number((totalmem() / 2 ** 30).toFixed(1)),
      node: process.version,
    }) + '\n',
  );
} finally {
  display.close();
  if (!values.out) rmSync(out, { recursive: true, force: true });
}
