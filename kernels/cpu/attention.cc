// Causal multi-head / grouped-query attention of a batch of new tokens against the session's fp32 KV
// cache. One task per (token, KV group): the group's query heads share each K/V row read, and a head that
// the sparse plan skipped costs nothing (its output and norm are zero). Softmax in fp32 with the max
// subtracted, as torch's eager attention.
#include <algorithm>
#include <cmath>

#include "forward_internal.h"
#include "threadpool.h"

namespace polar {
namespace fwd {

void attention(const AttnArgs& a) {
  const polar_model_config& c = a.s->m->cfg;
  const int H = c.heads, KV = c.kv_heads, hd = c.head_dim, G = H / KV;
  const int64_t ld = (int64_t)H * hd;
  const float scale = 1.0f / std::sqrt((float)hd);
  const int max_len = a.s->max_len;
  const int64_t items = (int64_t)a.T * KV;
  // Cost of an item grows with its position; small grains let the pool balance prefill's triangle.
  polar_parallel_for(items, [&](int64_t b, int64_t e) {
    std::vector<float> sc((size_t)G * max_len);
    std::vector<int> hs(G);
    for (int64_t it = b; it < e; it++) {
      const int t = (int)(it / KV), g = (int)(it % KV);
      const int n = a.tok_pos[t] + 1;
      const float* K = a.s->kcache.data() + a.s->kv_index(a.tok_slot[t], a.layer, g);
      const float* V = a.s->vcache.data() + a.s->kv_index(a.tok_slot[t], a.layer, g);
      int nh = 0;
      for (int j = 0; j < G; j++) {
        const int h = g * G + j;
        float* o = a.out + t * ld + (int64_t)h * hd;
        if (a.mask && !a.mask[(int64_t)t * H + h]) {
          std::fill(o, o + hd, 0.f);
          if (a.head_norm) a.head_norm[(int64_t)t * H + h] = 0.f;
          continue;
        }
        hs[nh++] = h;
      }
      if (!nh) continue;
      // scores
      for (int j = 0; j < n; j++) {
        const float* kr = K + (int64_t)j * hd;
        for (int u = 0; u < nh; u++) sc[(size_t)u * max_len + j] = dot(a.q + t * ld + (int64_t)hs[u] * hd, kr, hd) * scale;
      }
      for (int u = 0; u < nh; u++) {
        float* s = sc.data() + (size_t)u * max_len;
        float mx = -INFINITY;
        for (int j = 0; j < n; j++) mx = std::max(mx, s[j]);
        float sum = 0.f;
        for (int j = 0; j < n; j++) {
          s[j] = std::exp(s[j] - mx);
          sum += s[j];
        }
        const float inv = 1.0f / sum;
        for (int j = 0; j < n; j++) s[j] *= inv;
        float* o = a.out + t * ld + (int64_t)hs[u] * hd;
        std::fill(o, o + hd, 0.f);
      }
      for (int j = 0; j < n; j++) {
        const float* vr = V + (int64_t)j * hd;
        for (int u = 0; u < nh; u++) axpy(sc[(size_t)u * max_len + j], vr, a.out + t * ld + (int64_t)hs[u] * hd, hd);
      }
      if (a.head_norm) {
        for (int u = 0; u < nh; u++) {
          const float* o = a.out + t * ld + (int64_t)hs[u] * hd;
          double s2 = 0;
          for (int i = 0; i < hd; i++) s2 += (double)o[i] * o[i];
          a.head_norm[(int64_t)t * H + hs[u]] = (float)std::sqrt(s2);
        }
      }
    }
  });
}

}  // namespace fwd
}  // namespace polar
