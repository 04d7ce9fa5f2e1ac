// Rotary position embeddings of LLaMA: inverse frequencies exactly as transformers computes them
// (_compute_default_rope_parameters and _compute_llama3_parameters, fp32 tensors), cos/sin tables, and the
// rotate_half application (x * cos + rotate_half(x) * sin, halves not interleaved).
#include <cmath>

#include "forward_internal.h"

namespace polar {
namespace fwd {

void rope_inv_freq(const polar_model_config& c, std::vector<float>& inv) {
  const int half = c.head_dim / 2;
  inv.assign(half, 0.f);
  // inv_freq = 1 / (base ** (arange(0, dim, 2).float() / dim)), fp32
  for (int i = 0; i < half; i++) {
    const float e = (float)(2 * i) / (float)c.head_dim;
    const float p = (float)std::pow((double)c.rope_theta, (double)e);
    inv[i] = 1.0f / p;
  }
  if (c.rope != POLAR_ROPE_LLAMA3) return;
  const float factor = c.rope_factor;
  const float low = c.rope_low_freq_factor, high = c.rope_high_freq_factor;
  const float old_ctx = (float)c.rope_original_max_positions;
  const float low_wl = old_ctx / low;   // python floats (double) in transformers; compared with fp32 tensors
  const float high_wl = old_ctx / high;
  const double low_wl_d = (double)c.rope_original_max_positions / (double)low;
  const double high_wl_d = (double)c.rope_original_max_positions / (double)high;
  (void)low_wl;
  (void)high_wl;
  const float two_pi = (float)(2 * M_PI);
  for (int i = 0; i < half; i++) {
    const float f = inv[i];
    const float wavelen = two_pi / f;
    // inv_freq_llama = where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    const float fl = ((double)wavelen > low_wl_d) ? f / factor : f;
    // smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    const float smooth = (old_ctx / wavelen - low) / (high - low);
    const float smoothed = (1.0f - smooth) * fl / factor + smooth * fl;
    const bool medium = !((double)wavelen < high_wl_d) && !((double)wavelen > low_wl_d);
    inv[i] = medium ? smoothed : fl;
  }
}

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
