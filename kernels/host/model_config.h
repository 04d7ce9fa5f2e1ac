// Host-side facts of a model config that the CPU and CUDA backends share: the config checks and the RoPE
// inverse frequencies (both backends must rotate identically). Header-only, plain C++, so that the CPU
// library and the CUDA library each compile it without depending on the other.
#pragma once
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "polar/model.h"

namespace polar {

// Empty when the config is usable by either backend, else the message (backend-specific limits are
// checked by the backend after this).
inline std::string model_config_error(const polar_model_config& c) {
  char buf[256];
  auto pos = [&](const char* what, long long v) -> bool {
    if (v >= 1) return false;
    std::snprintf(buf, sizeof buf, "config.%s: expected an integer >= 1, received %lld", what, v);
    return true;
  };
  if (pos("layers", c.layers) || pos("hidden", c.hidden) || pos("heads", c.heads) || pos("kv_heads", c.kv_heads) ||
      pos("head_dim", c.head_dim) || pos("ffn", c.ffn) || pos("vocab", c.vocab) || pos("max_positions", c.max_positions) ||
      pos("embed_dim", c.embed_dim))
    return buf;
  if (c.family != POLAR_FAMILY_OPT && c.family != POLAR_FAMILY_LLAMA) {
    std::snprintf(buf, sizeof buf, "config.family: expected OPT (0) or LLAMA (1), received %d", (int)c.family);
    return buf;
  }
  if (c.heads % c.kv_heads) {
    std::snprintf(buf, sizeof buf, "config.kv_heads: expected a divisor of heads %d, received %d", c.heads, c.kv_heads);
    return buf;
  }
  if (c.family == POLAR_FAMILY_OPT) {
    if ((long long)c.heads * c.head_dim != c.hidden) {
      std::snprintf(buf, sizeof buf, "config.head_dim: expected hidden / heads, received %d", c.head_dim);
      return buf;
    }
    if (c.kv_heads != c.heads) {
      std::snprintf(buf, sizeof buf, "config.kv_heads: expected heads (OPT has no GQA), received %d", c.kv_heads);
      return buf;
    }
  } else {
    if (c.rope == POLAR_ROPE_NONE) return "config.rope: expected DEFAULT or LLAMA3 for LLaMA, received NONE";
    if (c.head_dim % 2) {
      std::snprintf(buf, sizeof buf, "config.head_dim: expected an even number (RoPE), received %d", c.head_dim);
      return buf;
    }
    if (!(c.rope_theta > 0)) return "config.rope_theta: expected > 0";
    if (c.rope == POLAR_ROPE_LLAMA3 && (!(c.rope_factor > 0) || !(c.rope_high_freq_factor != c.rope_low_freq_factor) ||
                                        c.rope_original_max_positions < 1 || !(c.rope_low_freq_factor > 0)))
      return "config.rope_*: expected factor > 0, low_freq_factor > 0, high_freq_factor != low_freq_factor, original_max_positions >= 1";
  }
  if (!(c.norm_eps >= 0)) return "config.norm_eps: expected >= 0";
  return std::string();
}

// Inverse frequencies [head_dim/2] exactly as transformers computes them in fp32
// (_compute_default_rope_parameters and _compute_llama3_parameters).
inline void rope_inv_freq(const polar_model_config& c, std::vector<float>& inv) {
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
  // the wavelength bounds are python floats (double) in transformers, compared with fp32 tensors
  const double low_wl_d = (double)c.rope_original_max_positions / (double)low;
  const double high_wl_d = (double)c.rope_original_max_positions / (double)high;
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

}  // namespace polar
