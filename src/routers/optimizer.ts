// AdamW for TensorFlow.js (tfjs ships Adam with L2 only, not decoupled weight decay), PyTorch's formula:
//   w -= lr * wd * w;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   w -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// On a backend that owns host memory and offers adamwInPlace (polar-native) each variable is updated in
// one native pass, in place; elsewhere the update is composed of tfjs ops.
import { tf, type NamedTensorMap, type Tensor, type Variable } from '../tfjs/tf.ts';
import { hasInPlaceAdamW } from '../tfjs/native-backend.ts';

export interface AdamWConfig {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

export const ADAMW_DEFAULTS: AdamWConfig = { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };

interface Slot {
  m: Variable;
  v: Variable;
}

export class AdamW extends tf.Optimizer {
  static get className() {
    return 'PolarAdamW';
  }
  readonly cfg: AdamWConfig;
  /** steps taken (the bias-correction exponent of the next step is step + 1) */
  step = 0;
  private slots = new Map<string, Slot>();

  constructor(cfg: Partial<AdamWConfig> = {}) {
    super();
    this.cfg = { ...ADAMW_DEFAULTS, ...cfg };
  }

  private slot(v: Variable): Slot {
    let s = this.slots.get(v.name);
    if (!s) {
      const mk = (tag: string) => {
        const t = tf.tensor(new Float32Array(v.size), v.shape, 'float32');
        const x = tf.variable(t, false, `${v.name}/${tag}`);
        t.dispose();
        return x;
      };
      s = { m: mk('m'), v: mk('v') };
      this.slots.set(v.name, s);
    }
    return s;
  }

  override applyGradients(variableGradients: NamedTensorMap | { name: string; tensor: Tensor }[]): void {
    const list = Array.isArray(variableGradients)
      ? variableGradients.map((g) => [g.name, g.tensor] as const)
      : Object.entries(variableGradients);
    this.step += 1;
    const t = this.step;
    const { lr, beta1, beta2, eps, weightDecay } = this.cfg;
    const backend = tf.backend();
    const vars = tf.engine().registeredVariables;
    for (const [name, g] of list) {
      const w = vars[name];
      if (!w) throw new Error(`AdamW: no variable named ${name}`);
      if (!g) continue;
      const s = this.slot(w);
      if (hasInPlaceAdamW(backend) && backend.adamwInPlace(w, g, s.m, s.v, { lr, beta1, beta2, eps, weightDecay, step: t })) continue;
      tf.tidy(() => {
        const m = tf.add(tf.mul(s.m, beta1), tf.mul(g, 1 - beta1));
        const v = tf.add(tf.mul(s.v, beta2), tf.mul(tf.square(g), 1 - beta2));
        const stepSize = lr / (1 - beta1 ** t);
        const denom = tf.add(tf.mul(tf.sqrt(v), 1 / Math.sqrt(1 - beta2 ** t)), eps);
        const nw = tf.sub(tf.mul(w, 1 - lr * weightDecay), tf.mul(tf.div(m, denom), stepSize));
        s.m.assign(m);
        s.v.assign(v);
        w.assign(nw);
      });
    }
    this.incrementIterations();
  }

  /** Moments for checkpoints, in the order of `vars`. */
  moments(vars: Variable[]): { m: Float32Array; v: Float32Array }[] {
    return vars.map((w) => {
      const s = this.slot(w);
      return { m: Float32Array.from(s.m.dataSync() as Float32Array), v: Float32Array.from(s.v.dataSync() as Float32Array) };
    });
  }

  /** Restores moments and the step count (resume). */
  restore(vars: Variable[], moments: { m: Float32Array; v: Float32Array }[], step: number): void {
    vars.forEach((w, i) => {
      const s = this.slot(w);
      const m = tf.tensor(Float32Array.from(moments[i].m), w.shape, 'float32');
      const v = tf.tensor(Float32Array.from(moments[i].v), w.shape, 'float32');
      s.m.assign(m);
      s.v.assign(v);
      m.dispose();
      v.dispose();
    });
    this.step = step;
  }

  override dispose(): void {
    for (const s of this.slots.values()) {
      s.m.dispose();
      s.v.dispose();
    }
    this.slots.clear();
    super.dispose();
  }

  override async getWeights(): Promise<{ name: string; tensor: Tensor }[]> {
    return [];
  }
  override async setWeights(): Promise<void> {}
  override getConfig() {
    return { ...this.cfg };
  }
}
