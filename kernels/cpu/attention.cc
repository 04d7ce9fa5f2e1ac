// Causal multi-head / grouped-query attention of a batch of new tokens against the session's fp32 KV
// cache. One task per (block of up to QB consecutive new tokens of one sequence, KV group): each K/V row is
// read once for the block's queries of every head of the group (decode: a block of one token). A head that
// the sparse plan skipped for a token costs nothing (its output and norm are zero) and a group that no
// token of the block uses is not read at all. Softmax in fp32 with the max subtracted, as torch's eager
// attention.
#include <algorithm>
#include <cmath>

#include "forward_internal.h"
#include "threadpool.h"

namespace polar {
namespace fwd {

namespace {
constexpr int QB = 16;
}

void attention(const AttnArgs& a) {
  const polar_model_config& c = a.s->m->cfg;
  const int H = c.heads, KV = c.kv_heads, hd = c.head_dim, G = H / KV;
  const int64_t ld = (int64_t)H * hd;
  const float scale = 1.0f / std::sqrt((float)hd);
  const int max_len = a.s->max_len;

  // Blocks of consecutive tokens of the same slot (inputs are contiguous runs with consecutive positions).
  std::vector<int32_t> blk;  // start token of each block; end = next start
  for (int t = 0; t < a.T;) {
    int e = t + 1;
    while (e < a.T && e - t < QB && a.tok_slot[e] == a.tok_slot[t] && a.tok_pos[e] == a.tok_pos[e - 1] + 1) e++;
    blk.push_back(t);
    t = e;
  }
  const int nb = (int)blk.size();
  blk.push_back(a.T);

  polar_parallel_for((int64_t)nb * KV, [&](int64_t b, int64_t e) {
    std::vector<float> sc((size_t)QB * G * max_len);
    std::vector<uint8_t> on((size_t)QB * G);
    for (int64_t it = b; it < e; it++) {
      const int bi = (int)(it / KV), g = (int)(it % KV);
      const int t0 = blk[bi], nt = blk[bi + 1] - t0;
      const int p0 = a.tok_pos[t0];
      const float* K = a.s->kcache.data() + a.s->kv_index(a.tok_slot[t0], a.layer, g);
      const float* V = a.s->vcache.data() + a.s->kv_index(a.tok_slot[t0], a.layer, g);
      int active = 0;
      for (int i = 0; i < nt; i++) {
        const int t = t0 + i;
        for (int j = 0; j < G; j++) {
          const int h = g * G + j;
          const bool use = !a.mask || a.mask[(int64_t)t * H + h];
          on[i * G + j] = use;
          active += use;
          float* o = a.out + t * ld + (int64_t)h * hd;
          std::fill(o, o + hd, 0.f);
          if (!use && a.head_norm) a.head_norm[(int64_t)t * H + h] = 0.f;
        }
      }
      if (!active) continue;
      const int n_keys = p0 + nt;  // token i attends to keys 0..p0+i
      // scores
      for (int kj = 0; kj < n_keys; kj++) {
        const float* kr = K + (int64_t)kj * hd;
        for (int i = std::max(0, kj - p0); i < nt; i++) {
          const float* qt = a.q + (t0 + i) * ld + (int64_t)g * G * hd;
          for (int j = 0; j < G; j++)
            if (on[i * G + j]) sc[(size_t)(i * G + j) * max_len + kj] = dot(qt + (int64_t)j * hd, kr, hd) * scale;
        }
      }
      // softmax over each row's keys 0..p0+i
      for (int i = 0; i < nt; i++)
        for (int j = 0; j < G; j++) {
          if (!on[i * G + j]) continue;
          float* s = sc.data() + (size_t)(i * G + j) * max_len;
          const int n = p0 + i + 1;
          float mx = -INFINITY;
          for (int kj = 0; kj < n; kj++) mx = std::max(mx, s[kj]);
          float sum = 0.f;
          for (int kj = 0; kj < n; kj++) {
            s[kj] = std::exp(s[kj] - mx);
            sum += s[kj];
          }
          const float inv = 1.0f / sum;
          for (int kj = 0; kj < n; kj++) s[kj] *= inv;
        }
      // weighted sum of values
      for (int kj = 0; kj < n_keys; kj++) {
        const float* vr = V + (int64_t)kj * hd;
        for (int i = std::max(0, kj - p0); i < nt; i++) {
          float* ot = a.out + (t0 + i) * ld + (int64_t)g * G * hd;
          for (int j = 0; j < G; j++)
            if (on[i * G + j]) axpy(sc[(size_t)(i * G + j) * max_len + kj], vr, ot + (int64_t)j * hd, hd);
        }
      }
      if (a.head_norm) {
        for (int i = 0; i < nt; i++)
          for (int j = 0; j < G; j++) {
            if (!on[i * G + j]) continue;
            const int h = g * G + j;
            const float* o = a.out + (t0 + i) * ld + (int64_t)h * hd;
            double s2 = 0;
            for (int d = 0; d < hd; d++) s2 += (double)o[d] * o[d];
            a.head_norm[(int64_t)(t0 + i) * H + h] = (float)std::sqrt(s2);
          }
      }
    }
  });
}

}  // namespace fwd
}  // namespace polar
