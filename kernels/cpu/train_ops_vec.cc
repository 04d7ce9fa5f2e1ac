// Router-training kernels (polar/train_ops.h), part 1: the element-wise math. Vectorised with one small
// vector vocabulary (AVX-512, AVX2+FMA or scalar, picked by -march) and threaded through the CPU pool.
// exp/log are Cephes-style polynomials (relative error ~1e-7 over the range used), the same on every
// thread, so results do not depend on the thread count.
#include "polar/train_ops.h"

// GCC 12 reports its own AVX-512 intrinsics (the _mm512_undefined_* idiom) as maybe-uninitialized.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "threadpool.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace {

// ---- vector vocabulary ------------------------------------------------------------------------------
#if defined(__AVX512F__)
typedef __m512 V;
constexpr int W = 16;
inline V vset(float x) { return _mm512_set1_ps(x); }
inline V vload(const float* p) { return _mm512_loadu_ps(p); }
inline void vstore(float* p, V x) { _mm512_storeu_ps(p, x); }
inline V vadd(V a, V b) { return _mm512_add_ps(a, b); }
inline V vsub(V a, V b) { return _mm512_sub_ps(a, b); }
inline V vmul(V a, V b) { return _mm512_mul_ps(a, b); }
inline V vdiv(V a, V b) { return _mm512_div_ps(a, b); }
inline V vfma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
inline V vmax(V a, V b) { return _mm512_max_ps(a, b); }
inline V vmin(V a, V b) { return _mm512_min_ps(a, b); }
inline V vsqrt(V a) { return _mm512_sqrt_ps(a); }
inline V vabs(V a) { return _mm512_abs_ps(a); }
inline V vround(V a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
// mask ? b : a
inline V vselect_ge0(V x, V a, V b) { return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ), a, b); }
inline V vgt0_mask01(V x) {
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GT_OQ), _mm512_set1_ps(1.f));
}
inline V vpow2i(V n) {  // 2^n for integral n in [-126, 127]
  __m512i i = _mm512_cvtps_epi32(n);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(i, _mm512_set1_epi32(127)), 23));
}
inline void vfrexp(V x, V& m, V& e) {  // x = m * 2^e, m in [0.5, 1) (x > 0, normal)
  __m512i xi = _mm512_castps_si512(x);
  __m512i ei = _mm512_sub_epi32(_mm512_srli_epi32(xi, 23), _mm512_set1_epi32(126));
  m = _mm512_castsi512_ps(_mm512_or_si512(_mm512_and_si512(xi, _mm512_set1_epi32(0x007fffff)), _mm512_set1_epi32(0x3f000000)));
  e = _mm512_cvtepi32_ps(ei);
}
inline V vlt_select(V a, V b, V x, V y) {  // a < b ? x : y
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_LT_OQ), y, x);
}
inline float vhsum(V x) { return _mm512_reduce_add_ps(x); }
#elif defined(__AVX2__) && defined(__FMA__)
typedef __m256 V;
constexpr int W = 8;
inline V vset(float x) { return _mm256_set1_ps(x); }
inline V vload(const float* p) { return _mm256_loadu_ps(p); }
inline void vstore(float* p, V x) { _mm256_storeu_ps(p, x); }
inline V vadd(V a, V b) { return _mm256_add_ps(a, b); }
inline V vsub(V a, V b) { return _mm256_sub_ps(a, b); }
inline V vmul(V a, V b) { return _mm256_mul_ps(a, b); }
inline V vdiv(V a, V b) { return _mm256_div_ps(a, b); }
inline V vfma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
inline V vmax(V a, V b) { return _mm256_max_ps(a, b); }
inline V vmin(V a, V b) { return _mm256_min_ps(a, b); }
inline V vsqrt(V a) { return _mm256_sqrt_ps(a); }
inline V vabs(V a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.f), a); }
inline V vround(V a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
inline V vselect_ge0(V x, V a, V b) { return _mm256_blendv_ps(a, b, _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ)); }
inline V vgt0_mask01(V x) { return _mm256_and_ps(_mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GT_OQ), _mm256_set1_ps(1.f)); }
inline V vpow2i(V n) {
  __m256i i = _mm256_cvtps_epi32(n);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(i, _mm256_set1_epi32(127)), 23));
}
inline void vfrexp(V x, V& m, V& e) {
  __m256i xi = _mm256_castps_si256(x);
  __m256i ei = _mm256_sub_epi32(_mm256_srli_epi32(xi, 23), _mm256_set1_epi32(126));
  m = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(xi, _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(0x3f000000)));
  e = _mm256_cvtepi32_ps(ei);
}
inline V vlt_select(V a, V b, V x, V y) { return _mm256_blendv_ps(y, x, _mm256_cmp_ps(a, b, _CMP_LT_OQ)); }
inline float vhsum(V x) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#else
typedef float V;
constexpr int W = 1;
inline V vset(float x) { return x; }
inline V vload(const float* p) { return *p; }
inline void vstore(float* p, V x) { *p = x; }
inline V vadd(V a, V b) { return a + b; }
inline V vsub(V a, V b) { return a - b; }
inline V vmul(V a, V b) { return a * b; }
inline V vdiv(V a, V b) { return a / b; }
inline V vfma(V a, V b, V c) { return a * b + c; }
inline V vmax(V a, V b) { return a > b ? a : b; }
inline V vmin(V a, V b) { return a < b ? a : b; }
inline V vsqrt(V a) { return std::sqrt(a); }
inline V vabs(V a) { return std::fabs(a); }
inline V vround(V a) { return std::nearbyint(a); }
inline V vselect_ge0(V x, V a, V b) { return x >= 0.f ? b : a; }
inline V vgt0_mask01(V x) { return x > 0.f ? 1.f : 0.f; }
inline V vpow2i(V n) {
  int32_t i = (int32_t(n) + 127) << 23;
  float f;
  std::memcpy(&f, &i, 4);
  return f;
}
inline void vfrexp(V x, V& m, V& e) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  int32_t ei = int32_t(u >> 23) - 126;
  u = (u & 0x007fffffu) | 0x3f000000u;
  std::memcpy(&m, &u, 4);
  e = float(ei);
}
inline V vlt_select(V a, V b, V x, V y) { return a < b ? x : y; }
inline float vhsum(V x) { return x; }
#endif

// e^x, Cephes expf: |rel err| < 2e-7 on [-87, 88]; inputs clamped there.
inline V vexp(V x) {
  x = vmin(vmax(x, vset(-87.3f)), vset(88.3f));
  V fx = vround(vmul(x, vset(1.44269504088896341f)));
  x = vfma(fx, vset(-0.693359375f), x);
  x = vfma(fx, vset(2.12194440e-4f), x);
  V p = vset(1.9875691500e-4f);
  p = vfma(p, x, vset(1.3981999507e-3f));
  p = vfma(p, x, vset(8.3334519073e-3f));
  p = vfma(p, x, vset(4.1665795894e-2f));
  p = vfma(p, x, vset(1.6666665459e-1f));
  p = vfma(p, x, vset(5.0000001201e-1f));
  V y = vfma(vmul(p, x), x, vadd(x, vset(1.f)));
  return vmul(y, vpow2i(fx));
}

// ln(x) for normal x > 0, Cephes logf.
inline V vlog(V x) {
  V m, e;
  vfrexp(x, m, e);
  // m in [0.5, 1): if m < sqrt(1/2) use 2m - 1 and e - 1, else m - 1.
  V small = vlt_select(m, vset(0.707106781186547524f), vset(1.f), vset(0.f));
  e = vsub(e, small);
  V t = vsub(vadd(m, vmul(m, small)), vset(1.f));
  V z = vmul(t, t);
  V p = vset(7.0376836292e-2f);
  p = vfma(p, t, vset(-1.1514610310e-1f));
  p = vfma(p, t, vset(1.1676998740e-1f));
  p = vfma(p, t, vset(-1.2420140846e-1f));
  p = vfma(p, t, vset(1.4249322787e-1f));
  p = vfma(p, t, vset(-1.6668057665e-1f));
  p = vfma(p, t, vset(2.0000714765e-1f));
  p = vfma(p, t, vset(-2.4999993993e-1f));
  p = vfma(p, t, vset(3.3333331174e-1f));
  V y = vmul(vmul(p, t), z);
  y = vfma(e, vset(-2.12194440e-4f), y);
  y = vfma(z, vset(-0.5f), y);
  V r = vadd(t, y);
  return vfma(e, vset(0.693359375f), r);
}

// Tails (fewer than W elements) go through a zero-padded vector, so a value's result does not depend on
// its position in the array.
constexpr int64_t kGrainElems = 16384;   // elements per parallel task (element-wise kernels)
constexpr int64_t kReduceChunk = 4096;   // fixed reduction chunk (determinism)

struct Tail {
  // Copies up to W floats into a zero-padded vector.
  static V load(const float* p, int64_t n) {
    alignas(64) float t[W];
    for (int i = 0; i < W; ++i) t[i] = i < n ? p[i] : 0.f;
    return vload(t);
  }
  static void store(float* p, V x, int64_t n) {
    alignas(64) float t[W];
    vstore(t, x);
    for (int64_t i = 0; i < n; ++i) p[i] = t[i];
  }
};

// softplus(x) = max(x, 0) + log(1 + exp(-|x|)); sigmoid from the same exp.
struct SpSig {
  V sp, sig;
};
inline SpSig softplus_sigmoid(V z) {
  V e = vexp(vsub(vset(0.f), vabs(z)));
  V one = vset(1.f);
  V l = vlog(vadd(one, e));
  V inv = vdiv(one, vadd(one, e));
  SpSig r;
  r.sp = vadd(vmax(z, vset(0.f)), l);
  r.sig = vselect_ge0(z, vmul(e, inv), inv);  // z >= 0: 1/(1+e); else e/(1+e)
  return r;
}

inline V bce_body(V z, V y, V pw, V nw, V gs, V& loss, bool want_grad) {
  SpSig s = softplus_sigmoid(z);
  V one = vset(1.f);
  V ny = vsub(one, y);
  V pwy = vmul(pw, y), nwny = vmul(nw, ny);
  // softplus(-z) = softplus(z) - z
  loss = vfma(pwy, vsub(s.sp, z), vmul(nwny, s.sp));
  if (!want_grad) return vset(0.f);
  return vmul(gs, vfma(pwy, vsub(s.sig, one), vmul(nwny, s.sig)));
}

}  // namespace

extern "C" int polar_bce_logits(const polar_bce_params* p) {
  if (!p || p->n < 0 || (p->n > 0 && (!p->logits || !p->labels)) || !p->loss_sum)
    return polar_set_error("polar_bce_logits: bad parameters");
  const int64_t n = p->n;
  const int64_t nchunks = (n + kReduceChunk - 1) / kReduceChunk;
  std::vector<double> part(size_t(nchunks > 0 ? nchunks : 1), 0.0);
  const V pw = vset(p->pos_weight), nw = vset(p->neg_weight), gs = vset(p->grad_scale);
  const bool want_grad = p->grad != nullptr;
  polar_parallel_for(nchunks, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      const int64_t b = c * kReduceChunk, e = b + kReduceChunk < n ? b + kReduceChunk : n;
      V acc = vset(0.f);
      int64_t i = b;
      for (; i + W <= e; i += W) {
        V loss;
        V g = bce_body(vload(p->logits + i), vload(p->labels + i), pw, nw, gs, loss, want_grad);
        acc = vadd(acc, loss);
        if (want_grad) vstore(p->grad + i, g);
      }
      if (i < e) {
        const int64_t r = e - i;
        V loss;
        // pad: label 0, logit -inf-ish gives zero loss contribution for negatives only when nw = 0, so
        // mask the padded lanes out explicitly.
        V g = bce_body(Tail::load(p->logits + i, r), Tail::load(p->labels + i, r), pw, nw, gs, loss, want_grad);
        alignas(64) float t[W];
        vstore(t, loss);
        for (int j = int(r); j < W; ++j) t[j] = 0.f;
        acc = vadd(acc, vload(t));
        if (want_grad) Tail::store(p->grad + i, g, r);
      }
      part[size_t(c)] = double(vhsum(acc));
    }
  }, 4);
  double s = 0.0;
  for (int64_t c = 0; c < nchunks; ++c) s += part[size_t(c)];
  *p->loss_sum = s;
  return 0;
}

extern "C" int polar_adamw(const polar_adamw_params* p) {
  if (!p || p->n < 0 || (p->n > 0 && (!p->w || !p->g || !p->m || !p->v)) || p->step < 1)
    return polar_set_error("polar_adamw: bad parameters (step must be >= 1)");
  const double bc1 = 1.0 - std::pow(double(p->beta1), double(p->step));
  const double bc2 = 1.0 - std::pow(double(p->beta2), double(p->step));
  const float step_size = float(double(p->lr) / bc1);
  const float inv_sqrt_bc2 = float(1.0 / std::sqrt(bc2));
  const float decay = 1.f - p->lr * p->weight_decay;
  const V vb1 = vset(p->beta1), vb2 = vset(p->beta2), v1b1 = vset(1.f - p->beta1), v1b2 = vset(1.f - p->beta2);
  const V vss = vset(step_size), vibc2 = vset(inv_sqrt_bc2), veps = vset(p->eps), vdecay = vset(decay);
  float* w = p->w;
  float* m = p->m;
  float* v = p->v;
  const float* g = p->g;
  polar_parallel_for(p->n, [&](int64_t b, int64_t e) {
    int64_t i = b;
    auto body = [&](V wi, V gi, V mi, V vi, V& wo, V& mo, V& vo) {
      mo = vfma(vb1, mi, vmul(v1b1, gi));
      vo = vfma(vb2, vi, vmul(v1b2, vmul(gi, gi)));
      V denom = vfma(vsqrt(vo), vibc2, veps);
      wo = vsub(vmul(wi, vdecay), vdiv(vmul(vss, mo), denom));
    };
    for (; i + W <= e; i += W) {
      V wo, mo, vo;
      body(vload(w + i), vload(g + i), vload(m + i), vload(v + i), wo, mo, vo);
      vstore(w + i, wo);
      vstore(m + i, mo);
      vstore(v + i, vo);
    }
    if (i < e) {
      const int64_t r = e - i;
      V wo, mo, vo;
      body(Tail::load(w + i, r), Tail::load(g + i, r), Tail::load(m + i, r), Tail::load(v + i, r), wo, mo, vo);
      Tail::store(w + i, wo, r);
      Tail::store(m + i, mo, r);
      Tail::store(v + i, vo, r);
    }
  }, kGrainElems);
  return 0;
}

namespace {
template <int OP>
inline V binop(V a, V b) {
  if constexpr (OP == POLAR_OP_ADD) return vadd(a, b);
  else if constexpr (OP == POLAR_OP_SUB) return vsub(a, b);
  else if constexpr (OP == POLAR_OP_MUL) return vmul(a, b);
  else if constexpr (OP == POLAR_OP_DIV) return vdiv(a, b);
  else if constexpr (OP == POLAR_OP_MAX) return vmax(a, b);
  else if constexpr (OP == POLAR_OP_MIN) return vmin(a, b);
  else {
    V d = vsub(a, b);
    return vmul(d, d);
  }
}

// One row segment [c0, c1) of row r: operands given as (pointer to row start, mode).
template <int OP>
inline void binary_row(const float* a, int am, const float* b, int bm, float* out, int64_t c0, int64_t c1) {
  int64_t c = c0;
  const V as = am == POLAR_BC_SCALAR ? vset(*a) : vset(0.f);
  const V bs = bm == POLAR_BC_SCALAR ? vset(*b) : vset(0.f);
  for (; c + W <= c1; c += W) {
    V va = am == POLAR_BC_SCALAR ? as : vload(a + c);
    V vb = bm == POLAR_BC_SCALAR ? bs : vload(b + c);
    vstore(out + c, binop<OP>(va, vb));
  }
  if (c < c1) {
    const int64_t r = c1 - c;
    V va = am == POLAR_BC_SCALAR ? as : Tail::load(a + c, r);
    V vb = bm == POLAR_BC_SCALAR ? bs : Tail::load(b + c, r);
    Tail::store(out + c, binop<OP>(va, vb), r);
  }
}

template <int OP>
void binary_impl(const polar_binary_params* p) {
  const int64_t rows = p->rows, cols = p->cols;
  // Rows are the parallel unit; a single long row is split into column segments.
  const int64_t seg = cols >= 2 * kGrainElems ? kGrainElems : cols;
  const int64_t nseg = (cols + seg - 1) / seg;
  const int64_t rows_per_task = seg >= kGrainElems ? 1 : (kGrainElems + seg - 1) / seg;
  polar_parallel_for(rows * nseg, [&](int64_t tb, int64_t te) {
    for (int64_t t = tb; t < te; ++t) {
      const int64_t r = t / nseg, s = t % nseg;
      const int64_t c0 = s * seg, c1 = c0 + seg < cols ? c0 + seg : cols;
      auto row_ptr = [&](const float* x, int mode) -> std::pair<const float*, int> {
        switch (mode) {
          case POLAR_BC_FULL: return {x + r * cols, POLAR_BC_FULL};
          case POLAR_BC_ROW: return {x, POLAR_BC_FULL};
          case POLAR_BC_COL: return {x + r, POLAR_BC_SCALAR};
          default: return {x, POLAR_BC_SCALAR};
        }
      };
      auto a = row_ptr(p->a, p->a_mode);
      auto b = row_ptr(p->b, p->b_mode);
      binary_row<OP>(a.first, a.second, b.first, b.second, p->out + r * cols, c0, c1);
    }
  }, rows_per_task);
}
}  // namespace

extern "C" int polar_binary(const polar_binary_params* p) {
  if (!p || p->rows < 0 || p->cols < 0 || !p->a || !p->b || !p->out || p->a_mode < 0 || p->a_mode > 3 ||
      p->b_mode < 0 || p->b_mode > 3)
    return polar_set_error("polar_binary: bad parameters");
  if (p->rows == 0 || p->cols == 0) return 0;
  switch (p->op) {
    case POLAR_OP_ADD: binary_impl<POLAR_OP_ADD>(p); break;
    case POLAR_OP_SUB: binary_impl<POLAR_OP_SUB>(p); break;
    case POLAR_OP_MUL: binary_impl<POLAR_OP_MUL>(p); break;
    case POLAR_OP_DIV: binary_impl<POLAR_OP_DIV>(p); break;
    case POLAR_OP_MAX: binary_impl<POLAR_OP_MAX>(p); break;
    case POLAR_OP_MIN: binary_impl<POLAR_OP_MIN>(p); break;
    case POLAR_OP_SQDIFF: binary_impl<POLAR_OP_SQDIFF>(p); break;
    default: return polar_set_error("polar_binary: unknown op %d", p->op);
  }
  return 0;
}

namespace {
template <int OP>
inline V unop(V x) {
  if constexpr (OP == POLAR_UN_SIGMOID) {
    V e = vexp(vsub(vset(0.f), vabs(x)));
    V inv = vdiv(vset(1.f), vadd(vset(1.f), e));
    return vselect_ge0(x, vmul(e, inv), inv);
  } else if constexpr (OP == POLAR_UN_RELU) {
    return vmax(x, vset(0.f));
  } else if constexpr (OP == POLAR_UN_NEG) {
    return vsub(vset(0.f), x);
  } else if constexpr (OP == POLAR_UN_EXP) {
    return vexp(x);
  } else if constexpr (OP == POLAR_UN_SQRT) {
    return vsqrt(x);
  } else if constexpr (OP == POLAR_UN_SQUARE) {
    return vmul(x, x);
  } else if constexpr (OP == POLAR_UN_ABS) {
    return vabs(x);
  } else if constexpr (OP == POLAR_UN_SOFTPLUS) {
    return softplus_sigmoid(x).sp;
  } else {
    return vgt0_mask01(x);
  }
}

template <int OP>
void unary_impl(const polar_unary_params* p) {
  polar_parallel_for(p->n, [&](int64_t b, int64_t e) {
    int64_t i = b;
    for (; i + W <= e; i += W) vstore(p->out + i, unop<OP>(vload(p->x + i)));
    if (i < e) Tail::store(p->out + i, unop<OP>(Tail::load(p->x + i, e - i)), e - i);
  }, kGrainElems);
}

// log needs exact edge semantics (0 -> -inf, negatives -> NaN, inf, subnormals): the vector path covers
// normal positive inputs; the rest go through std::log.
void log_impl(const polar_unary_params* p) {
  polar_parallel_for(p->n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      float x = p->x[i];
      if (!(x >= 1.17549435e-38f && x < 3.4e38f)) {
        p->out[i] = std::log(x);
        continue;
      }
      // scalar path through the same polynomial (W-lane vector of one value)
      alignas(64) float t[W];
      for (int j = 0; j < W; ++j) t[j] = x;
      vstore(t, vlog(vload(t)));
      p->out[i] = t[0];
    }
  }, kGrainElems);
}
}  // namespace

extern "C" int polar_unary(const polar_unary_params* p) {
  if (!p || p->n < 0 || (p->n > 0 && (!p->x || !p->out))) return polar_set_error("polar_unary: bad parameters");
  switch (p->op) {
    case POLAR_UN_SIGMOID: unary_impl<POLAR_UN_SIGMOID>(p); break;
    case POLAR_UN_RELU: unary_impl<POLAR_UN_RELU>(p); break;
    case POLAR_UN_NEG: unary_impl<POLAR_UN_NEG>(p); break;
    case POLAR_UN_EXP: unary_impl<POLAR_UN_EXP>(p); break;
    case POLAR_UN_LOG: log_impl(p); break;
    case POLAR_UN_SQRT: unary_impl<POLAR_UN_SQRT>(p); break;
    case POLAR_UN_SQUARE: unary_impl<POLAR_UN_SQUARE>(p); break;
    case POLAR_UN_ABS: unary_impl<POLAR_UN_ABS>(p); break;
    case POLAR_UN_SOFTPLUS: unary_impl<POLAR_UN_SOFTPLUS>(p); break;
    case POLAR_UN_STEP: unary_impl<POLAR_UN_STEP>(p); break;
    default: return polar_set_error("polar_unary: unknown op %d", p->op);
  }
  return 0;
}

extern "C" int polar_bias_act(const polar_bias_act_params* p) {
  if (!p || p->rows < 0 || p->cols < 0 || !p->y || p->ldy < p->cols || (p->act != 0 && p->act != 1))
    return polar_set_error("polar_bias_act: bad parameters");
  const int64_t cols = p->cols;
  const int64_t rows_per_task = cols >= kGrainElems ? 1 : (kGrainElems + cols - 1) / (cols > 0 ? cols : 1);
  polar_parallel_for(p->rows, [&](int64_t rb, int64_t re) {
    for (int64_t r = rb; r < re; ++r) {
      float* y = p->y + r * p->ldy;
      int64_t c = 0;
      const V zero = vset(0.f);
      for (; c + W <= cols; c += W) {
        V v = vload(y + c);
        if (p->bias) v = vadd(v, vload(p->bias + c));
        if (p->act == 1) v = vmax(v, zero);
        vstore(y + c, v);
      }
      for (; c < cols; ++c) {
        float v = y[c] + (p->bias ? p->bias[c] : 0.f);
        y[c] = p->act == 1 && v < 0.f ? 0.f : v;
      }
    }
  }, rows_per_task);
  return 0;
}

extern "C" int polar_col_sum(const polar_col_sum_params* p) {
  if (!p || p->rows < 0 || p->cols < 0 || (p->rows * p->cols > 0 && !p->x) || !p->out)
    return polar_set_error("polar_col_sum: bad parameters");
  const int64_t rows = p->rows, cols = p->cols;
  // Parallel over column blocks; each column sums its rows in order (same bits for any thread count).
  const int64_t blk = 16 * W;
  const int64_t nblk = (cols + blk - 1) / blk;
  polar_parallel_for(nblk, [&](int64_t bb, int64_t be) {
    for (int64_t bi = bb; bi < be; ++bi) {
      const int64_t c0 = bi * blk, c1 = c0 + blk < cols ? c0 + blk : cols;
      for (int64_t c = c0; c < c1; ++c) p->out[c] = 0.f;
      for (int64_t r = 0; r < rows; ++r) {
        const float* x = p->x + r * cols;
        int64_t c = c0;
        for (; c + W <= c1; c += W) vstore(p->out + c, vadd(vload(p->out + c), vload(x + c)));
        for (; c < c1; ++c) p->out[c] += x[c];
      }
    }
  }, rows * blk >= kGrainElems ? 1 : (kGrainElems + rows * blk - 1) / (rows * blk > 0 ? rows * blk : 1));
  return 0;
}

extern "C" int polar_row_sum(const polar_col_sum_params* p) {
  if (!p || p->rows < 0 || p->cols < 0 || (p->rows * p->cols > 0 && !p->x) || !p->out)
    return polar_set_error("polar_row_sum: bad parameters");
  const int64_t cols = p->cols;
  polar_parallel_for(p->rows, [&](int64_t rb, int64_t re) {
    for (int64_t r = rb; r < re; ++r) {
      const float* x = p->x + r * cols;
      V acc = vset(0.f);
      int64_t c = 0;
      for (; c + W <= cols; c += W) acc = vadd(acc, vload(x + c));
      float s = vhsum(acc);
      for (; c < cols; ++c) s += x[c];
      p->out[r] = s;
    }
  }, cols >= kGrainElems ? 1 : (kGrainElems + cols - 1) / (cols > 0 ? cols : 1));
  return 0;
}

extern "C" int polar_unpack_bits(const polar_unpack_bits_params* p) {
  if (!p || p->rows < 0 || p->cols < 0 || p->stride * 8 < p->cols || (p->rows > 0 && (!p->bits || !p->out)))
    return polar_set_error("polar_unpack_bits: bad parameters");
  const int64_t cols = p->cols;
  polar_parallel_for(p->rows, [&](int64_t rb, int64_t re) {
    for (int64_t r = rb; r < re; ++r) {
      const uint8_t* b = p->bits + r * p->stride;
      float* o = p->out + r * cols;
      int64_t c = 0;
      for (; c + 8 <= cols; c += 8) {
        const unsigned byte = b[c >> 3];
        for (int j = 0; j < 8; ++j) o[c + j] = float((byte >> j) & 1u);
      }
      for (; c < cols; ++c) o[c] = float((b[c >> 3] >> (c & 7)) & 1u);
    }
  }, cols >= kGrainElems ? 1 : (kGrainElems + cols - 1) / (cols > 0 ? cols : 1));
  return 0;
}
