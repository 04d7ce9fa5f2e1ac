// The project's one import of TensorFlow.js. The union package brings tfjs-core with every op's gradient
// registered, the layers API and the plain `cpu` backend; tfjs-backend-wasm and tfjs-node are loaded on
// demand by src/tfjs/backends.ts (importing them has side effects: wasm installs process handlers).
import * as tf from '@tensorflow/tfjs';

// Production mode: no debug checks, and no "install tfjs-node" banners or duplicate-kernel warnings
// (backends.ts reports what loads and why not, in one place).
tf.env().set('PROD', true);

export { tf };
export type { Tensor, Tensor1D, Tensor2D, Scalar, Variable, Rank, TensorInfo, NamedTensorMap, KernelConfig, KernelFunc } from '@tensorflow/tfjs';
