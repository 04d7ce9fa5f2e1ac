// Rotary position embeddings of LLaMA: inverse frequencies exactly as transformers computes them
// (_compute_default_rope_parameters and _compute_llama3_parameters, fp32 tensors), cos/sin tables, and the
// rotate_half application (x * cos + rotate_half(x) * sin, halves not interleaved).
#include <cmath>

#include "forward_internal.h"

namespace polar {
namespace fwd {

void rope_tables(const std::vector<float>& inv, int max_len, std::vector<float>& cs, std::vector<float>& sn) {
  const size_t half = inv.size();
  cs.assign((size_t)max_len * half, 0.f);
  sn.assign((size_t)max_len * half, 0.f);
  for (int p = 0; p < max_len; p++) {
    for (size_t i = 0; i < half; i++) {
      const float a = (float)p * inv[i];  // fp32 product, as the fp32 matmul in LlamaRotaryEmbedding
      cs[p * half + i] = (float)std::cos((double)a);
      sn[p * half + i] = (float)std::sin((double)a);
    }
  }
}

void rope_apply(float* x, int n_heads, int hd, const float* c, const float* s) {
  const int half = hd / 2;
  for (int h = 0; h < n_heads; h++) {
    float* v = x + (size_t)h * hd;
    for (int i = 0; i < half; i++) {
      const float a = v[i], b = v[i + half];
      v[i] = a * c[i] - b * s[i];
      v[i + half] = b * c[i] + a * s[i];
    }
  }
}

}  // namespace fwd
}  // namespace polar
