// Internal C++ side of the model forward (polar/model.h): the model and session structs and the helpers
// that forward.cc, attention.cc, norm.cc, rope.cc and sparse.cc share. Not part of the C API.
#pragma once
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "polar/model.h"
#include "../host/model_config.h"

namespace polar {
namespace fwd {

// A weight as stored: pointer into a mapping (or caller memory), dtype, shape.
struct Tensor {
  const void* p = nullptr;
  polar_dtype dt = POLAR_F32;
  std::vector<int64_t> shape;
  bool present() const { return p != nullptr; }
};

struct Mapping {
  std::string path;
  void* base = nullptr;
  size_t size = 0;
};

struct Layer {
  Tensor q, k, v, o, qb, kb, vb, ob;
  Tensor up, gate, down, upb, gateb, downb;
  std::vector<float> attn_norm_w, attn_norm_b, mlp_norm_w, mlp_norm_b;  // widened to fp32
  // Transposed down projection [ffn, hidden] in the stored dtype, built on first sparse use.
  std::once_flag down_t_once;
  std::vector<uint16_t> down_t16;
  std::vector<float> down_t32;
  const void* down_t() const { return down.dt == POLAR_F32 ? (const void*)down_t32.data() : (const void*)down_t16.data(); }
};

}  // namespace fwd
}  // namespace polar

struct polar_model {
  polar_model_config cfg{};
  std::vector<polar::fwd::Mapping> maps;
  polar::fwd::Tensor tok_emb, pos_emb, proj_in, proj_out, lm_head;
  std::vector<float> final_norm_w, final_norm_b;
  std::vector<std::unique_ptr<polar::fwd::Layer>> layers;
  std::vector<float> inv_freq;  // RoPE, [head_dim / 2]
  ~polar_model();
};

struct polar_session {
  polar_model* m = nullptr;
  int max_seqs = 0, max_len = 0;
  std::vector<int> len;
  // [slot][layer][kv_head][max_len][head_dim]
  std::vector<float> kcache, vcache;
  std::vector<float> rope_cos, rope_sin;  // [max_len][head_dim / 2]
  size_t kv_index(int slot, int layer, int kvh) const {
    const polar_model_config& c = m->cfg;
    return ((((size_t)slot * c.layers + layer) * c.kv_heads + kvh) * (size_t)max_len) * c.head_dim;
  }
};

namespace polar {
namespace fwd {

// ---- small vector helpers (fp32) ----
inline float dot(const float* a, const float* b, int n) {
  int i = 0;
  float s = 0.f;
#if defined(__AVX512F__)
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
  }
  for (; i + 16 <= n; i += 16) acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
  // (GCC 12 warns about an uninitialized variable inside its own _mm512_reduce_add_ps: a false positive)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
  s = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
#pragma GCC diagnostic pop
#elif defined(__AVX2__) && defined(__FMA__)
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  acc0 = _mm256_add_ps(acc0, acc1);
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc0), _mm256_extractf128_ps(acc0, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
  s = _mm_cvtss_f32(h);
#endif
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

// y += a * x
inline void axpy(float a, const float* x, float* y, int n) {
  for (int i = 0; i < n; i++) y[i] += a * x[i];
}

inline float bf16_to_f32(uint16_t b) {
  uint32_t u = (uint32_t)b << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
float f16_to_f32(uint16_t h);

// dst[0..n) = widened src[0..n) (src in dtype dt, possibly unaligned).
void widen(const void* src, polar_dtype dt, int64_t n, float* dst);

// ---- norm.cc ----
// y[t] = (x[t] - mean) / sqrt(var + eps) * w + b   (biased variance, as torch.nn.LayerNorm)
void layer_norm_rows(const float* x, int64_t ldx, int rows, int n, const float* w, const float* b, float eps,
                     float* y, int64_t ldy);
// y[t] = x[t] / sqrt(mean(x^2) + eps) * w   (as LlamaRMSNorm)
void rms_norm_rows(const float* x, int64_t ldx, int rows, int n, const float* w, float eps, float* y, int64_t ldy);

// ---- rope.cc ----
// Inverse frequencies: polar::rope_inv_freq in kernels/host/model_config.h (shared with CUDA).
using polar::rope_inv_freq;
// cos/sin tables [max_len][head_dim/2] for positions 0..max_len-1.
void rope_tables(const std::vector<float>& inv_freq, int max_len, std::vector<float>& cos_t, std::vector<float>& sin_t);
// Rotates n_heads vectors of head_dim in place at one position (rotate_half convention of HF LLaMA).
void rope_apply(float* x, int n_heads, int head_dim, const float* cos_row, const float* sin_row);

// ---- attention.cc ----
// Causal attention of T new tokens against their slots' caches (already holding the new K/V).
struct AttnArgs {
  const polar_session* s;
  int layer;
  int T;
  const int32_t* tok_slot;  // [T]
  const int32_t* tok_pos;   // [T] position of each new token (attends to 0..pos)
  const float* q;           // [T, heads*head_dim]
  float* out;               // [T, heads*head_dim]
  const uint8_t* mask;      // [T, heads] or NULL (all heads); masked heads output zeros
  float* head_norm;         // [T, heads] or NULL
};
void attention(const AttnArgs& a);

// ---- sparse.cc ----
// Top-k of the summed MLP router scores over rows x[T, hidden]; idx gets k indices ascending.
int mlp_router_topk(const float* x, int T, int hidden, int ffn, const polar_sparse_layer& sp, std::vector<int32_t>& idx);
// Per-token head selection by the head router: mask[T, heads].
int head_router_select(const float* x, int T, const polar_model_config& c, const polar_sparse_layer& sp, uint8_t* mask);
// Builds layer.down_t (transposed down projection) once.
void ensure_down_t(const polar_model_config& c, Layer& L);

}  // namespace fwd
}  // namespace polar
