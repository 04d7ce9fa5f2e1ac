// IEEE 754 half precision <-> single precision, for the fp16 columns of the activation shards.
// f32 -> f16 rounds to nearest, ties to even (what numpy/PyTorch `.half()` do), so a PyTorch writer and this
// one produce the same bits. f16 -> f32 is exact (a 65536-entry table).

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** bits of the nearest fp16 to the fp32 whose bits are `bits` (round to nearest even; NaN stays NaN). */
export function f32BitsToF16(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  let mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 112; // exponent rebiased for fp16 (127 - 15)
  if (e >= 0x1f) return sign | 0x7c00; // overflow -> inf
  if (e <= 0) {
    // fp16 subnormal (or zero): value = m * 2^-24
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && (half & 1) !== 0)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1) !== 0)) half++; // a carry into the exponent is correct
  return sign | half;
}

export function toF16(x: number): number {
  f32[0] = x;
  return f32BitsToF16(u32[0]);
}

/** fp32 array -> fp16 bits (new array, or written into `out`). */
export function f32ToF16Array(src: Float32Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < bits.length; i++) out[i] = f32BitsToF16(bits[i]);
  return out;
}

let table: Float32Array | null = null;

function f16Table(): Float32Array {
  if (table) return table;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >>> 10) & 0x1f;
    const m = h & 0x3ff;
    if (e === 0) t[h] = s * m * 2 ** -24;
    else if (e === 0x1f) t[h] = m ? NaN : s * Infinity;
    else t[h] = s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return (table = t);
}

export function fromF16(h: number): number {
  return f16Table()[h & 0xffff];
}

/** fp16 bits -> fp32 (new array, or written into `out`). */
export function f16ToF32Array(src: Uint16Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  const t = f16Table();
  for (let i = 0; i < src.length; i++) out[i] = t[src[i]];
  return out;
}
