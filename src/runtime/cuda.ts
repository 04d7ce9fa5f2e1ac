// The CUDA backend of the runtime: the same RuntimeModel/RuntimeSession as the CPU backend (model.ts does
// every argument check and builds the same native request), over the CUDA glue (native/cuda_glue.cc ->
// kernels/cuda/forward.cu): weights uploaded once to the GPU (fp16/bf16 as stored; fp32 checkpoints as
// fp16 unless opts.cudaDtype is 'bf16'), KV cache on the GPU. No silent fallback: when the addon was built
// without CUDA or no GPU is usable, opening the model fails and says why.
import { badArg, PolarError } from '../errors.ts';
import type { LoadedModel } from '../model/index.ts';
import { native } from './binding.ts';
import { CpuModel, isInt, nativeError, nativeModelConfig, type NativeHandle, type NativeSessionOps, type NativeWeightDesc, type OpenRuntimeOptions } from './model.ts';
import type { RuntimeModel } from './types.ts';

export interface CudaModelInfo {
  /** dtype of the weights on the GPU */
  dtype: 'f16' | 'bf16';
  /** GPU memory taken by the weights */
  weightBytes: number;
}

/** Opens a model on the CUDA backend (openRuntimeModel(model, { backend: 'cuda' }) lands here). */
export function openCudaModel(model: LoadedModel, opts: OpenRuntimeOptions = {}): RuntimeModel {
  const device = opts.device ?? 0;
  if (!isInt(device) || device < 0 || device > 1023) throw badArg('runtime device', 'a CUDA device ordinal (integer >= 0)', opts.device);
  const dtype = opts.cudaDtype ?? 'f16';
  if (dtype !== 'f16' && dtype !== 'bf16') throw badArg('runtime cudaDtype', '"f16" or "bf16"', opts.cudaDtype);
  const nb = native();
  if (!nb.buildInfo().cudaBuilt) {
    throw new PolarError('unsupported', 'runtime backend "cuda": the native addon was built without the CUDA backend (no nvcc at build time); rebuild with `npm run build:native` where the CUDA toolkit is installed, or use backend "cpu"');
  }
  const weights: NativeWeightDesc[] = model.weights.map((w) => ({ name: w.name, file: w.file, offset: w.offset, nbytes: w.nbytes, dtype: w.dtype, shape: w.shape }));
  let handle: NativeHandle;
  try {
    handle = nb.cudaModelCreate(nativeModelConfig(model.spec), weights, { device, dtype });
  } catch (e) {
    throw nativeError(e, `${model.dir}: loading the model onto the GPU (CUDA backend)`);
  }
  const ops: NativeSessionOps = {
    backend: 'cuda',
    modelFree: (m) => nb.cudaModelFree(m),
    sessionCreate: (m, a, b) => nb.cudaSessionCreate(m, a, b),
    sessionFree: (s) => nb.cudaSessionFree(s),
    sessionReset: (s, slot) => nb.cudaSessionReset(s, slot),
    sessionForward: (s, req) => nb.cudaSessionForward(s, req),
  };
  return new CpuModel(model.spec, handle, ops);
}

/** dtype and GPU bytes of a model opened with the CUDA backend (for logs and benchmarks). */
export function cudaModelInfo(rt: RuntimeModel): CudaModelInfo {
  if (rt.backend !== 'cuda' || !(rt instanceof CpuModel)) throw badArg('cudaModelInfo model', 'a runtime model of the CUDA backend', rt.backend);
  return native().cudaModelInfo(rt.nativeHandle());
}
