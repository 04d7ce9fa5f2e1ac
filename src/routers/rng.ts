// Seeded randomness of router training: weight init, per-epoch shuffles and the validation split. Every
// stream is derived from (seed, purpose, layer, epoch) by hashing, so a resumed run draws exactly what an
// uninterrupted run would have drawn, with no generator state to save.

/** 32-bit FNV-1a over the decimal text of the parts, then a murmur3 finaliser. */
export function hash32(...parts: (string | number)[]): number {
  let h = 0x811c9dc5;
  const s = parts.join('\u0000');
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return fmix32(h >>> 0);
}

export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** xoshiro128** — small, fast, good statistical quality; seeded through splitmix32. */
export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(seed: number) {
    let x = seed >>> 0;
    const next = () => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s0 = next();
    this.s1 = next();
    this.s2 = next();
    this.s3 = next();
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  static for(...parts: (string | number)[]): Rng {
    return new Rng(hash32(...parts));
  }

  /** uniform uint32 */
  u32(): number {
    const r = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return r;
  }

  /** uniform in [0, 1) with 32 random bits */
  float(): number {
    return this.u32() / 4294967296;
  }

  /** uniform integer in [0, n) (n <= 2^32), without modulo bias */
  below(n: number): number {
    if (n <= 1) return 0;
    const lim = 4294967296 - (4294967296 % n);
    for (;;) {
      const v = this.u32();
      if (v < lim) return v % n;
    }
  }

  /** fills with uniform values in [-bound, bound) */
  uniform(out: Float32Array, bound: number): Float32Array {
    for (let i = 0; i < out.length; i++) out[i] = (this.float() * 2 - 1) * bound;
    return out;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** True when a sequence belongs to the validation split: a seeded hash of its id, not its position. */
export function isValidationSeq(seed: number, seqId: number, fraction: number): boolean {
  if (fraction <= 0) return false;
  return hash32('val', seed, seqId) / 4294967296 < fraction;
}
