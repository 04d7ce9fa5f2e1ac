// Vector vocabulary of the CPU GEMMs: one set of names over AVX-512, AVX2+FMA and plain C++, so that the
// kernels are written once (templates) and the build's -march picks the width. Internal header.
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__AVX512F__) || defined(__AVX2__) || defined(__AVX__)
// GCC 12's AVX-512 intrinsics self-initialize their "undefined" vectors and warn about it wherever they
// are inlined (GCC bug 105593, fixed in 13): silence only that.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#endif

namespace polar {
namespace gemm {

// Storage types of the weights; distinct types so that templates can dispatch on them.
struct f16 { uint16_t bits; };
struct bf16 { uint16_t bits; };

inline float to_f32(float x) { return x; }
inline float to_f32(bf16 x) {
  uint32_t u = uint32_t(x.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float to_f32(f16 x) {
#if defined(__F16C__)
  return _cvtsh_ss(x.bits);
#else
  // IEEE half -> single by hand (subnormals renormalized, inf/nan kept).
  uint32_t h = x.bits, sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ffu, u;
  if (exp == 0x1f) {
    u = sign | 0x7f800000u | (man << 13);
  } else if (exp != 0) {
    u = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    u = sign;
  } else {
    int e = -1;
    do { ++e; man <<= 1; } while ((man & 0x400u) == 0);
    u = sign | (uint32_t(112 - e) << 23) | ((man & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

#if defined(__AVX512F__)
#define POLAR_GEMM_ISA "avx512"
typedef __m512 vf;
constexpr int VW = 16;
inline vf v_zero() { return _mm512_setzero_ps(); }
inline vf v_set1(float x) { return _mm512_set1_ps(x); }
inline vf v_load(const float* p) { return _mm512_loadu_ps(p); }
inline void v_store(float* p, vf x) { _mm512_storeu_ps(p, x); }
inline vf v_fma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
inline vf v_add(vf a, vf b) { return _mm512_add_ps(a, b); }
inline vf v_mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
inline vf v_max(vf a, vf b) { return _mm512_max_ps(a, b); }
inline float v_hsum(vf x) { return _mm512_reduce_add_ps(x); }
inline vf v_loadw(const float* p) { return _mm512_loadu_ps(p); }
inline vf v_loadw(const f16* p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)p)); }
inline vf v_loadw(const bf16* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p)), 16));
}
#elif defined(__AVX2__) && defined(__FMA__)
#define POLAR_GEMM_ISA "avx2"
typedef __m256 vf;
constexpr int VW = 8;
inline vf v_zero() { return _mm256_setzero_ps(); }
inline vf v_set1(float x) { return _mm256_set1_ps(x); }
inline vf v_load(const float* p) { return _mm256_loadu_ps(p); }
inline void v_store(float* p, vf x) { _mm256_storeu_ps(p, x); }
inline vf v_fma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
inline vf v_add(vf a, vf b) { return _mm256_add_ps(a, b); }
inline vf v_mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
inline vf v_max(vf a, vf b) { return _mm256_max_ps(a, b); }
inline float v_hsum(vf x) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline vf v_loadw(const float* p) { return _mm256_loadu_ps(p); }
inline vf v_loadw(const bf16* p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p)), 16));
}
#if defined(__F16C__)
inline vf v_loadw(const f16* p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p)); }
#else
inline vf v_loadw(const f16* p) {
  alignas(32) float t[8];
  for (int i = 0; i < 8; ++i) t[i] = to_f32(p[i]);
  return _mm256_load_ps(t);
}
#endif
#else
// Portable fallback: a "vector" of one float; the compiler may still vectorize the loops around it.
#define POLAR_GEMM_ISA "scalar"
typedef float vf;
constexpr int VW = 1;
inline vf v_zero() { return 0.f; }
inline vf v_set1(float x) { return x; }
inline vf v_load(const float* p) { return *p; }
inline void v_store(float* p, vf x) { *p = x; }
inline vf v_fma(vf a, vf b, vf c) { return a * b + c; }
inline vf v_add(vf a, vf b) { return a + b; }
inline vf v_mul(vf a, vf b) { return a * b; }
inline vf v_max(vf a, vf b) { return a > b ? a : b; }
inline float v_hsum(vf x) { return x; }
template <class T>
inline vf v_loadw(const T* p) { return to_f32(*p); }
#endif

// Converts n elements to fp32 (packing tails, scalar paths).
template <class T>
inline void widen(const T* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + VW <= n; i += VW) v_store(dst + i, v_loadw(src + i));
  for (; i < n; ++i) dst[i] = to_f32(src[i]);
}

}  // namespace gemm
}  // namespace polar
