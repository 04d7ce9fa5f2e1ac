// Polar Sparsity's selection step on the CPU: router inference (fp32 GEMMs of polar_linear), the
// batch-union top-k of MLP neurons, each token's own top-k KV groups, and the transposed down projection
// that the selective down-projection (polar_linear_t) reads one neuron row at a time.
#include <algorithm>
#include <cmath>

#include "forward_internal.h"
#include "polar/gemm.h"

namespace polar {
namespace fwd {

namespace {
int linear_f32(int m, int n, int k, const float* x, const float* w, const float* bias, float* y) {
  polar_linear_params p{};
  p.m = m;
  p.n = n;
  p.k = k;
  p.x = x;
  p.ldx = k;
  p.w = w;
  p.wdt = POLAR_F32;
  p.ldw = k;
  p.rows = nullptr;
  p.bias = bias;
  p.bdt = POLAR_F32;
  p.y = y;
  p.ldy = n;
  p.accumulate = 0;
  p.act = 0;
  return polar_linear(&p);
}

// Indices of the k largest scores (ties: lower index first), returned ascending.
void topk_ascending(const float* score, int n, int k, std::vector<int32_t>& out) {
  std::vector<int32_t> ord(n);
  for (int i = 0; i < n; i++) ord[i] = i;
  auto better = [score](int32_t a, int32_t b) { return score[a] > score[b] || (score[a] == score[b] && a < b); };
  if (k < n) std::nth_element(ord.begin(), ord.begin() + k, ord.end(), better);
  ord.resize(k);
  std::sort(ord.begin(), ord.end());
  out.swap(ord);
}
}  // namespace

int mlp_router_topk(const float* x, int T, int hidden, int ffn, const polar_sparse_layer& sp, std::vector<int32_t>& idx) {
  const int r = sp.mlp_rank;
  std::vector<float> h((size_t)T * r), s((size_t)T * ffn);
  if (linear_f32(T, r, hidden, x, sp.mlp_fc1, nullptr, h.data())) return -1;
  if (linear_f32(T, ffn, r, h.data(), sp.mlp_fc2, nullptr, s.data())) return -1;
  std::vector<float> sum(ffn, 0.f);
  for (int t = 0; t < T; t++) {
    const float* st = s.data() + (size_t)t * ffn;
    if (sp.mlp_score == POLAR_MLP_SCORE_SIGMOID) {
      for (int i = 0; i < ffn; i++) sum[i] += 1.0f / (1.0f + std::exp(-st[i]));
    } else {
      for (int i = 0; i < ffn; i++) sum[i] += st[i];
    }
  }
  topk_ascending(sum.data(), ffn, std::min(std::max(sp.mlp_k, 0), ffn), idx);
  return 0;
}

int head_router_select(const float* x, int T, const polar_model_config& c, const polar_sparse_layer& sp, uint8_t* mask) {
  const int H = c.heads, KV = c.kv_heads, G = H / KV, U = sp.attn_units;
  std::vector<float> s((size_t)T * U);
  if (linear_f32(T, U, c.hidden, x, sp.attn_w, sp.attn_b, s.data())) return -1;
  const int k = std::min(std::max(sp.attn_k, 0), KV);
  std::vector<float> gs(KV);
  std::vector<int32_t> keep;
  for (int t = 0; t < T; t++) {
    const float* st = s.data() + (size_t)t * U;
    if (U == KV) {
      std::copy(st, st + KV, gs.begin());
    } else {  // U == H: a group's score is the sum of its query heads' scores
      for (int g = 0; g < KV; g++) {
        float a = 0.f;
        for (int j = 0; j < G; j++) a += st[g * G + j];
        gs[g] = a;
      }
    }
    topk_ascending(gs.data(), KV, k, keep);
    uint8_t* mt = mask + (size_t)t * H;
    std::fill(mt, mt + H, 0);
    for (int32_t g : keep)
      for (int j = 0; j < G; j++) mt[g * G + j] = 1;
  }
  return 0;
}

void ensure_down_t(const polar_model_config& c, Layer& L) {
  std::call_once(L.down_t_once, [&] {
    const int H = c.hidden, F = c.ffn;  // down is [H, F]
    if (L.down.dt == POLAR_F32) {
      const float* src = (const float*)L.down.p;
      L.down_t32.resize((size_t)F * H);
      for (int i = 0; i < H; i++)
        for (int j = 0; j < F; j++) L.down_t32[(size_t)j * H + i] = src[(size_t)i * F + j];
    } else {
      const uint8_t* src = (const uint8_t*)L.down.p;  // may be unaligned
      L.down_t16.resize((size_t)F * H);
      for (int i = 0; i < H; i++)
        for (int j = 0; j < F; j++) std::memcpy(&L.down_t16[(size_t)j * H + i], src + ((size_t)i * F + j) * 2, 2);
    }
  });
}

}  // namespace fwd
}  // namespace polar
