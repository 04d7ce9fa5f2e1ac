// Router models, defined with TensorFlow.js ops on variables (autodiff and the optimizer come from tfjs).
//   MLP router (ReLU models): x [B, d] -> fc1 (no bias) [r, d] -> fc2 (no bias) [ffn, r] -> logits [B, ffn]
//   Head router (every model): x [B, d] -> weight [H, d] + bias [H] -> logits [B, H]
// Weights are stored as nn.Linear stores them ([out, in]) so checkpoints read naturally in PyTorch.
import { tf, type Tensor2D, type Variable } from '../tfjs/tf.ts';
import { Rng } from './rng.ts';

/** PyTorch nn.Linear's default init: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias. */
function linearInit(rng: Rng, out: number, inp: number): Float32Array {
  return rng.uniform(new Float32Array(out * inp), 1 / Math.sqrt(inp));
}

/** A variable that owns a fresh buffer (optimizers may update it in place). */
function ownedVariable(values: Float32Array, shape: number[], name: string): Variable {
  const t = tf.tensor(values, shape, 'float32');
  const v = tf.variable(t, true, `${name}_${variableSerial++}`);
  t.dispose();
  return v;
}
let variableSerial = 0;

export interface RouterModel {
  readonly kind: 'mlp' | 'attn';
  /** trainable variables, in checkpoint order */
  variables(): Variable[];
  /** checkpoint names of variables(), without the `layers.{l}.` prefix */
  names(): string[];
  logits(x: Tensor2D): Tensor2D;
  /** copies of the current values, in variables() order */
  snapshot(): Float32Array[];
  /** overwrites the values (same order and sizes as snapshot()) */
  load(values: Float32Array[]): void;
  dispose(): void;
}

abstract class Base implements RouterModel {
  abstract readonly kind: 'mlp' | 'attn';
  protected abstract vars: Variable[];
  abstract names(): string[];
  abstract logits(x: Tensor2D): Tensor2D;
  variables(): Variable[] {
    return this.vars;
  }
  snapshot(): Float32Array[] {
    return this.vars.map((v) => Float32Array.from(v.dataSync() as Float32Array));
  }
  load(values: Float32Array[]): void {
    if (values.length !== this.vars.length) throw new Error(`router load: expected ${this.vars.length} tensors, received ${values.length}`);
    this.vars.forEach((v, i) => {
      if (values[i].length !== v.size) throw new Error(`router load: ${this.names()[i]}: expected ${v.size} values, received ${values[i].length}`);
      const t = tf.tensor(Float32Array.from(values[i]), v.shape, 'float32');
      v.assign(t);
      t.dispose();
    });
  }
  dispose(): void {
    for (const v of this.vars) v.dispose();
  }
}

export class MlpRouter extends Base {
  readonly kind = 'mlp' as const;
  readonly fc1: Variable; // [r, d]
  readonly fc2: Variable; // [ffn, r]
  protected vars: Variable[];

  constructor(readonly d: number, readonly r: number, readonly ffn: number, rng: Rng) {
    super();
    this.fc1 = ownedVariable(linearInit(rng, r, d), [r, d], 'mlp_fc1');
    this.fc2 = ownedVariable(linearInit(rng, ffn, r), [ffn, r], 'mlp_fc2');
    this.vars = [this.fc1, this.fc2];
  }

  names(): string[] {
    return ['mlp_router.fc1.weight', 'mlp_router.fc2.weight'];
  }

  logits(x: Tensor2D): Tensor2D {
    return tf.tidy(() => tf.matMul(tf.matMul(x, this.fc1 as Tensor2D, false, true), this.fc2 as Tensor2D, false, true));
  }

  flopsPerSample(train: boolean): number {
    const fwd = 2 * (this.d * this.r + this.r * this.ffn);
    // backward: dW2 and dH for fc2, dW1 for fc1 (no gradient for the input)
    return train ? fwd + 2 * (2 * this.r * this.ffn) + 2 * this.d * this.r : fwd;
  }
}

export class HeadRouter extends Base {
  readonly kind = 'attn' as const;
  readonly weight: Variable; // [H, d]
  readonly bias: Variable; // [H]
  protected vars: Variable[];

  constructor(readonly d: number, readonly heads: number, rng: Rng) {
    super();
    this.weight = ownedVariable(linearInit(rng, heads, d), [heads, d], 'attn_weight');
    this.bias = ownedVariable(rng.uniform(new Float32Array(heads), 1 / Math.sqrt(d)), [heads], 'attn_bias');
    this.vars = [this.weight, this.bias];
  }

  names(): string[] {
    return ['attn_router.weight', 'attn_router.bias'];
  }

  logits(x: Tensor2D): Tensor2D {
    return tf.fused.matMul({ a: x, b: this.weight as Tensor2D, transposeB: true, bias: this.bias }) as Tensor2D;
  }

  flopsPerSample(train: boolean): number {
    const fwd = 2 * this.d * this.heads;
    return train ? fwd + 2 * this.d * this.heads : fwd;
  }
}
