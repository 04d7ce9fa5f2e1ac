// The routers' loss: weighted binary cross-entropy on logits (the paper's: positives weighted 1 - w,
// negatives w, w = mean label + 0.005), mean over all elements. Defined with tf.customGrad so that the
// backward pass is one fused expression; on a backend that has the fused kernel (polar-native) forward and
// backward are one native pass, elsewhere they are plain tfjs ops.
import { tf, type Scalar, type Tensor, type Tensor2D } from '../tfjs/tf.ts';
import { WEIGHTED_BCE_KERNEL } from '../tfjs/native-backend.ts';

/** w of the paper: the positive-class rate plus 0.005 (clamped to [0.005, 0.995]). */
export function negativeWeight(meanLabel: number): number {
  return Math.min(0.995, Math.max(0.005, meanLabel + 0.005));
}

const fusedFor = new Map<string, boolean>();
function hasFusedKernel(): boolean {
  const b = tf.getBackend();
  let v = fusedFor.get(b);
  if (v === undefined) {
    v = tf.getKernel(WEIGHTED_BCE_KERNEL, b) !== undefined;
    fusedFor.set(b, v);
  }
  return v;
}

/**
 * mean_i [ posWeight * y_i * softplus(-z_i) + negWeight * (1 - y_i) * softplus(z_i) ]
 */
export function weightedBce(logits: Tensor2D, labels: Tensor2D, posWeight: number, negWeight: number): Scalar {
  // Only the logits are an input of the custom op: the labels are constants (no gradient is built for them).
  const y = labels;
  const body = (z: Tensor, save: (ts: Tensor[]) => void) => {
    if (hasFusedKernel()) {
      const [loss, grad] = tf.engine().runKernel(WEIGHTED_BCE_KERNEL, { logits: z, labels: y }, { posWeight, negWeight } as never) as unknown as Tensor[];
      save([grad]);
      return {
        value: loss,
        // dy is the scalar seed of backprop (1 when the loss is differentiated directly): skip the product
        gradFunc: (dy: Tensor, saved: Tensor[]) => (dy.size === 1 && (dy.dataSync() as Float32Array)[0] === 1 ? saved[0].clone() : tf.mul(saved[0], dy)),
      };
    }
    const n = z.size;
    const sp = tf.softplus(z);
    const spNeg = tf.sub(sp, z);
    const pos = tf.mul(y, posWeight);
    const neg = tf.mul(tf.sub(1, y), negWeight);
    const value = tf.div(tf.sum(tf.add(tf.mul(pos, spNeg), tf.mul(neg, sp))), n);
    save([z]);
    return {
      value: value as Scalar,
      gradFunc: (dy: Tensor, saved: Tensor[]) => {
        const [zz] = saved;
        const yy = y;
        const s = tf.sigmoid(zz);
        const p = tf.mul(yy, posWeight);
        const q = tf.mul(tf.sub(1, yy), negWeight);
        const g = tf.div(tf.add(tf.mul(p, tf.sub(s, 1)), tf.mul(q, s)), n);
        return tf.mul(g, dy);
      },
    };
  };
  const f = tf.customGrad(body as unknown as Parameters<typeof tf.customGrad>[0]);
  return f(logits) as Scalar;
}
