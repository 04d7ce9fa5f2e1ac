// TensorFlow.js backend selection for router training, and the probe behind `polar doctor`.
//
// Order of preference (first that loads wins; `--backend` forces one and fails if it cannot load):
//   tfjs-node-gpu, tfjs-node   TensorFlow's C library through @tensorflow/tfjs-node(-gpu) (optional deps)
//   polar-native               the project's backend: cpu backend + native addon kernels (src/tfjs/native-backend.ts)
//   wasm                       @tensorflow/tfjs-backend-wasm
//   cpu                        plain JavaScript
// No silent fallback (DESIGN 13): whichever is chosen is printed by the caller and recorded in the metrics,
// together with why each preferred one did not load.
import { createRequire } from 'node:module';
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { PolarError, badArg } from '../errors.ts';
import { nativeOps } from '../runtime/ops.ts';
import { nativeAvailable } from '../runtime/binding.ts';
import { tf } from './tf.ts';
import { NATIVE_BACKEND, registerNativeBackend } from './native-backend.ts';

export const BACKEND_CHOICES = ['tfjs-node-gpu', 'tfjs-node', 'polar-native', 'wasm', 'cpu'] as const;
export type BackendChoice = (typeof BACKEND_CHOICES)[number];

export interface BackendProbe {
  name: BackendChoice;
  ok: boolean;
  /** why it does not load (or, when it loads, what it is) */
  reason: string;
  /** the one training would use (the first that loads, in the order of preference) */
  selected?: boolean;
  /** what it is, when it loads */
  note?: string;
}

const require = createRequire(import.meta.url);

/** tfjs backend name each choice registers. */
export function tfBackendName(c: BackendChoice): string {
  return c === 'tfjs-node' || c === 'tfjs-node-gpu' ? 'tensorflow' : c;
}

function firstLine(e: unknown): string {
  return String((e as Error)?.message ?? e).split('\n')[0];
}

// ---- tfjs-node / tfjs-node-gpu ------------------------------------------------------------------------

/**
 * Why a tfjs-node package cannot load, found without requiring it (a failed require still registers its
 * kernels and prints a warning per kernel), or null when its binding is in place.
 */
function tfjsNodeMissing(pkg: string): string | null {
  let pkgDir: string;
  try {
    pkgDir = dirname(require.resolve(`${pkg}/package.json`));
  } catch {
    return `${pkg} is not installed (optional dependency; npm skips it where it cannot be installed)`;
  }
  const libDir = join(pkgDir, 'lib');
  const bindings = existsSync(libDir)
    ? readdirSync(libDir).filter((d) => d.startsWith('napi-v') && existsSync(join(libDir, d, 'tfjs_binding.node')))
    : [];
  const libtf = join(pkgDir, 'deps', 'lib');
  const haveLibtf = existsSync(libtf) && readdirSync(libtf).some((f) => f.startsWith('libtensorflow'));
  if (bindings.length && haveLibtf) return null;
  const missing = [!bindings.length ? 'lib/napi-v*/tfjs_binding.node' : null, !haveLibtf ? 'deps/lib/libtensorflow*.so' : null].filter(Boolean).join(' and ');
  return (
    `${pkg} is installed without its native part (${missing} missing): its install script ` +
    `(scripts/install.js) downloads libtensorflow and the prebuilt binding from storage.googleapis.com, which ` +
    `did not happen here (this project's package.json denies that script in allowScripts so that an offline ` +
    `install succeeds; --ignore-scripts or a failed download have the same effect). Fix, on a machine with ` +
    `network access${pkg.endsWith('gpu') ? ', CUDA 11.2 and cuDNN 8.1' : ''}: \`npm install-scripts approve ${pkg} && npm rebuild ${pkg}\``
  );
}

let tfjsNodeLoaded: BackendChoice | null = null;
const tfjsNodeErrors = new Map<string, string>();

function loadTfjsNode(c: 'tfjs-node' | 'tfjs-node-gpu'): string | null {
  if (tfjsNodeLoaded) return tfjsNodeLoaded === c ? null : `${tfjsNodeLoaded} is loaded already (they share the backend name 'tensorflow')`;
  const pkg = `@tensorflow/${c}`;
  const missing = tfjsNodeMissing(pkg);
  if (missing) return missing;
  if (tfjsNodeErrors.has(c)) return tfjsNodeErrors.get(c)!;
  try {
    require(pkg);
    if (!tf.findBackendFactory('tensorflow')) throw new Error('it did not register the "tensorflow" backend');
    tfjsNodeLoaded = c;
    return null;
  } catch (e) {
    const r = `${pkg} failed to load: ${firstLine(e)}`;
    tfjsNodeErrors.set(c, r);
    return r;
  }
}

// ---- polar-native --------------------------------------------------------------------------------------

function loadNative(): string | null {
  if (tf.findBackendFactory(NATIVE_BACKEND)) return null;
  const avail = nativeAvailable();
  if (!avail.ok) return avail.reason;
  const ops = nativeOps();
  if (!ops) return 'the native addon loads but lacks the tensor kernels (sgemm, adamw, ...): rebuild it with `npm run build:native`';
  registerNativeBackend(ops);
  return null;
}

// ---- wasm ----------------------------------------------------------------------------------------------

let wasmImported: Promise<string | null> | null = null;
function loadWasm(): Promise<string | null> {
  wasmImported ??= import('@tensorflow/tfjs-backend-wasm').then(
    () => (tf.findBackendFactory('wasm') ? null : '@tensorflow/tfjs-backend-wasm did not register the "wasm" backend'),
    (e) => `@tensorflow/tfjs-backend-wasm failed to import: ${firstLine(e)}`,
  );
  return wasmImported;
}

// ---- common --------------------------------------------------------------------------------------------

async function register(c: BackendChoice): Promise<string | null> {
  switch (c) {
    case 'tfjs-node':
    case 'tfjs-node-gpu':
      return loadTfjsNode(c);
    case 'polar-native':
      return loadNative();
    case 'wasm':
      return loadWasm();
    case 'cpu':
      return tf.findBackendFactory('cpu') ? null : 'the cpu backend is not registered (broken @tensorflow/tfjs install)';
  }
}

/** Registers, initialises and activates a backend; returns why it failed, or null. */
async function activate(c: BackendChoice): Promise<string | null> {
  const why = await register(c);
  if (why) return why;
  const name = tfBackendName(c);
  try {
    const ok = await tf.setBackend(name);
    if (!ok || tf.getBackend() !== name) return `tf.setBackend('${name}') failed to initialise the backend`;
    // a smoke test: one small product
    const y = tf.tidy(() => tf.matMul(tf.ones([2, 3]), tf.ones([3, 2])).sum());
    const v = (await y.data())[0];
    y.dispose();
    if (v !== 12) return `the backend computed a wrong result in its smoke test (${v} instead of 12)`;
    return null;
  } catch (e) {
    return `initialising '${name}' failed: ${firstLine(e)}`;
  }
}

export interface SelectedBackend {
  /** the choice that loaded (what metrics record) */
  name: BackendChoice;
  /** the tfjs backend name now active */
  tfName: string;
  /** every preferred choice that was tried before it, and why it did not load */
  skipped: BackendProbe[];
}

/**
 * Activates the forced backend (failing with every reason if it cannot load) or the first one in the
 * order of preference that loads.
 */
export async function selectBackend(forced?: string): Promise<SelectedBackend> {
  if (forced !== undefined) {
    if (!(BACKEND_CHOICES as readonly string[]).includes(forced)) throw badArg('--backend', `one of ${BACKEND_CHOICES.join(', ')}`, forced);
    const c = forced as BackendChoice;
    const why = await activate(c);
    if (why) throw new PolarError('unsupported', `--backend ${c}: the backend cannot be loaded: ${why}`, { field: '--backend' });
    return { name: c, tfName: tfBackendName(c), skipped: [] };
  }
  const skipped: BackendProbe[] = [];
  for (const c of BACKEND_CHOICES) {
    const why = await activate(c);
    if (!why) return { name: c, tfName: tfBackendName(c), skipped };
    skipped.push({ name: c, ok: false, reason: why });
  }
  throw new PolarError('unsupported', `no TensorFlow.js backend could be loaded:\n${skipped.map((s) => `  - ${s.name}: ${s.reason}`).join('\n')}`);
}

/**
 * For `polar doctor`: which backends load and why the others do not. Leaves the active backend as it was.
 * wasm is only imported when `includeWasm` (importing it installs process-wide error handlers).
 */
export async function probeBackends(opts: { includeWasm?: boolean } = {}): Promise<BackendProbe[]> {
  const before = tf.getBackend();
  const out: BackendProbe[] = [];
  for (const c of BACKEND_CHOICES) {
    if (c === 'wasm' && opts.includeWasm === false) {
      out.push({ name: c, ok: false, reason: 'not probed (importing it installs process-wide handlers)' });
      continue;
    }
    const why = await activate(c);
    const ok = !why;
    out.push({ name: c, ok, reason: why ?? describeLoaded(c), note: ok ? describeLoaded(c) : undefined, selected: ok && !out.some((p) => p.ok) });
  }
  if (before && tf.getBackend() !== before) await tf.setBackend(before);
  return out;
}

function describeLoaded(c: BackendChoice): string {
  switch (c) {
    case 'tfjs-node':
    case 'tfjs-node-gpu':
      return `TensorFlow C library via @tensorflow/${c}`;
    case 'polar-native':
      return 'cpu backend with native addon kernels (sgemm, fused BCE, AdamW, element-wise)';
    case 'wasm':
      return 'WebAssembly (XNNPACK)';
    case 'cpu':
      return 'plain JavaScript';
  }
}
