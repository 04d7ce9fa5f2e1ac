// The one place that touches the raw native addon. Its whole surface is declared here as a type; every
// other module goes through the typed wrappers in src/runtime/ (DESIGN convention 2).
// Sections are owned by the glue file named in each comment.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PolarError } from '../errors.ts';

export interface NativeBuildInfo {
  compiledFeatures: string[];
  threads: number;
  cudaBuilt: boolean;
  compiler: string;
}

export interface NativeBinding {
  // native/info.cc
  buildInfo(): NativeBuildInfo;
  setThreads(n: number): number;
  // native/model_glue.cc and native/ops_glue.cc add their functions below (keep this type complete).
  // native/ops_glue.cc — synchronous, in place on the caller's typed arrays; wrapped by src/runtime/ops.ts
  sgemm(
    transA: number, transB: number, m: number, n: number, k: number, alpha: number,
    a: Float32Array, lda: number, b: Float32Array, ldb: number, beta: number, c: Float32Array, ldc: number,
    batch: number, strideA: number, strideB: number, strideC: number,
  ): void;
  bceLogits(logits: Float32Array, labels: Float32Array, posWeight: number, negWeight: number, gradScale: number, grad: Float32Array | null): number;
  adamw(w: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, lr: number, beta1: number, beta2: number, eps: number, weightDecay: number, step: number): void;
  binary(op: number, rows: number, cols: number, a: Float32Array, aMode: number, b: Float32Array, bMode: number, out: Float32Array): void;
  unary(op: number, x: Float32Array, out: Float32Array): void;
  biasAct(y: Float32Array, rows: number, cols: number, ldy: number, bias: Float32Array | null, act: number): void;
  colSum(x: Float32Array, rows: number, cols: number, out: Float32Array): void;
  rowSum(x: Float32Array, rows: number, cols: number, out: Float32Array): void;
  unpackBits(bits: Uint8Array, rows: number, cols: number, stride: number, out: Float32Array): void;
  routerEval(
    logits: Float32Array, rows: number, cols: number, labels: Float32Array | null, bits: Uint8Array | null,
    bitStride: number, threshold: number, ks: Int32Array,
  ): { tp: number; fp: number; fn: number; positives: number; rowsWithPositives: number; hits: Float64Array; recallSum: Float64Array };
  // native/model_glue.cc — models and sessions (KV caches); wrapped by src/runtime/model.ts
  modelCreate(config: import('./model.ts').NativeModelConfig, weights: import('./model.ts').NativeWeightDesc[]): import('./model.ts').NativeHandle;
  modelFree(model: import('./model.ts').NativeHandle): void;
  sessionCreate(model: import('./model.ts').NativeHandle, maxSeqs: number, maxLen: number): import('./model.ts').NativeHandle;
  sessionFree(session: import('./model.ts').NativeHandle): void;
  /** slot -1: every slot */
  sessionReset(session: import('./model.ts').NativeHandle, slot: number): void;
  sessionLength(session: import('./model.ts').NativeHandle, slot: number): number;
  /** runs off the JS thread; outputs are written into the request's typed arrays */
  sessionForward(session: import('./model.ts').NativeHandle, req: import('./model.ts').NativeForwardRequest): Promise<void>;
  // native/cuda_glue.cc — the CUDA backend's models and sessions (same request as sessionForward); wrapped by
  // src/runtime/cuda.ts. Without the CUDA build every one throws "CUDA backend not compiled".
  cudaModelCreate(
    config: import('./model.ts').NativeModelConfig,
    weights: import('./model.ts').NativeWeightDesc[],
    opts: { device: number; dtype: 'f16' | 'bf16' },
  ): import('./model.ts').NativeHandle;
  cudaModelFree(model: import('./model.ts').NativeHandle): void;
  cudaModelInfo(model: import('./model.ts').NativeHandle): import('./cuda.ts').CudaModelInfo;
  cudaSessionCreate(model: import('./model.ts').NativeHandle, maxSeqs: number, maxLen: number): import('./model.ts').NativeHandle;
  cudaSessionFree(session: import('./model.ts').NativeHandle): void;
  /** slot -1: every slot */
  cudaSessionReset(session: import('./model.ts').NativeHandle, slot: number): void;
  cudaSessionLength(session: import('./model.ts').NativeHandle, slot: number): number;
  /** runs off the JS thread; outputs are written into the request's typed arrays */
  cudaSessionForward(session: import('./model.ts').NativeHandle, req: import('./model.ts').NativeForwardRequest): Promise<void>;
  [key: string]: unknown;
}

const here = dirname(fileURLToPath(import.meta.url));
export const projectRoot = resolve(here, '..', '..');

let cached: NativeBinding | null = null;
let loadError: PolarError | null = null;

export function addonCandidates(): string[] {
  const env = process.env.POLAR_NATIVE;
  return [env, join(projectRoot, 'build', 'polar_native.node'), join(projectRoot, 'build', 'Release', 'polar_native.node')].filter(
    (p): p is string => !!p,
  );
}

/** Loads the addon or throws an error that lists what was tried and how to fix it (DESIGN convention 12). */
export function native(): NativeBinding {
  if (cached) return cached;
  if (loadError) throw loadError;
  const require = createRequire(import.meta.url);
  const tried: string[] = [];
  for (const p of addonCandidates()) {
    if (!existsSync(p)) {
      tried.push(`${p}: not found`);
      continue;
    }
    try {
      cached = require(p) as NativeBinding;
      return cached;
    } catch (e) {
      tried.push(`${p}: ${(e as Error).message.split('\n')[0]}`);
    }
  }
  loadError = new PolarError(
    'native',
    [
      'the native addon (polar_native.node) could not be loaded. Tried:',
      ...tried.map((t) => `  - ${t}`),
      'Possible fixes:',
      '  - run `npm run build:native` (needs cmake and a C++17 compiler; nvcc for the CUDA backend)',
      '  - reinstall with `npm install` from the project root and read the build output',
      '  - set POLAR_NATIVE=/path/to/polar_native.node to use a prebuilt addon',
    ].join('\n'),
  );
  throw loadError;
}

export function nativeAvailable(): { ok: true } | { ok: false; reason: string } {
  try {
    native();
    return { ok: true };
  } catch (e) {
    return { ok: false, reason: (e as Error).message };
  }
}
