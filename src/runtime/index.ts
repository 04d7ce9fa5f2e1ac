// The runtime: typed API (types.ts), the CPU backend over the native addon (model.ts), sparse forward (sparse.ts).
export type * from './types.ts';
export { openRuntimeModel, type OpenRuntimeOptions } from './model.ts';
export type {
  SparsePlan,
  SparseLayerPlan,
  SparseForwardOptions,
  SparseLayerOverride,
  SparseLayerReport,
  MlpRouterWeights,
  HeadRouterWeights,
  MlpScore,
  TopK,
} from './sparse.ts';
export { native, nativeAvailable } from './binding.ts';
export { cudaModelInfo, type CudaModelInfo } from './cuda.ts';
