// Decode attention over a strided KV cache (bshd or head-major bhsd): selective (kept KV groups per sequence) or dense.
//
// One CTA per (split of the context, kept group j, sequence b); 4 warps. A group's query heads (1 for MHA,
// q_heads/kv_heads for GQA, padded to the 16 rows of an m16n8k16 MMA) are processed together against a
// single read of the group's K and V, which stream through a cp.async pipeline of 2 or 3 stages (three or two
// CTAs per SM; plan_attn picks) in tiles of 64 positions (each warp owns 16 positions of a tile: S = Q K^T and
// O += P V on tensor cores, online softmax in fp32 in the exp2 domain). The 4 warps' states are merged in shared
// memory; with several splits each CTA writes (o / l, log2-sum-exp) to the workspace and the last CTA of the
// (b, j) item merges them. Query heads of groups that are not kept are zeroed by the CTA (b, j = 0, split 0).
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "common.cuh"
#include "sel_gemm.cuh"  // pdl_on()

namespace polar_cuda {
namespace {

constexpr int AT_D = 128;       // head dim
constexpr int AT_TILE = 64;     // positions per pipeline stage
constexpr int AT_THREADS = 128;
constexpr int AT_KV_BYTES = AT_TILE * AT_D * 2;              // one of K or V per stage (16 KB)
constexpr int AT_STAGE_BYTES = 2 * AT_KV_BYTES;
constexpr int AT_Q_BYTES = 16 * AT_D * 2;
// shared memory of the kernel with st pipeline stages (2: three CTAs per SM fit, 3: two)
constexpr int at_smem(int st) { return st * AT_STAGE_BYTES + AT_Q_BYTES; }
constexpr int AT_OLD = AT_D + 4;  // merge tile row (floats)
static_assert(4 * 16 * AT_OLD * 4 + 2 * 4 * 16 * 4 <= 2 * AT_STAGE_BYTES, "merge tile fits in the pipeline buffers");

struct AttnArgs {
  const void* q;
  int64_t q_bs, q_hs;
  const void* k;
  int64_t k_bs, k_ss, k_hs;
  const void* v;
  int64_t v_bs, v_ss, v_hs;
  void* o;
  int64_t o_bs, o_hs;
  const int32_t* seqlens;
  int max_seq;
  const int32_t* idx;
  int n_sel;
  int64_t idx_stride;
  int hkv, hpg;
  float scale_log2;
  int splits, tiles_per_split;
  float* ws;  // [items][splits][hpg][D] o, then [items][splits][hpg] lse
  unsigned* counters;
  int64_t lse_offset;  // floats from ws to the lse block
};

template <typename T, int ST>
__global__ void __launch_bounds__(AT_THREADS) attn_decode_kernel(const AttnArgs a) {
  extern __shared__ __align__(128) char smem[];
  __shared__ uint32_t sel_mask[32];
  __shared__ int s_last;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int split = blockIdx.x, j = blockIdx.y, b = blockIdx.z;
  const int hpg = a.hpg;
  T* out = static_cast<T*>(a.o);
  griddep_wait_and_release();  // q, idx and the cache were written by earlier kernels

  // zero the query heads of the groups that sequence b does not keep
  if (a.idx != nullptr && j == 0 && split == 0) {
    if (tid < 32) sel_mask[tid] = 0;
    __syncthreads();
    for (int e = tid; e < a.n_sel; e += AT_THREADS) {
      const int gsel = a.idx[(int64_t)b * a.idx_stride + e];
      if (gsel >= 0 && gsel < a.hkv) atomicOr(&sel_mask[gsel >> 5], 1u << (gsel & 31));
    }
    __syncthreads();
    const int nh = a.hkv * hpg;
    for (int e = tid; e < nh * (AT_D / 8); e += AT_THREADS) {
      const int h = e / (AT_D / 8), c = e % (AT_D / 8);
      const int gg = h / hpg;
      if (!((sel_mask[gg >> 5] >> (gg & 31)) & 1u)) {
        V8 z = {{0u, 0u, 0u, 0u}};
        *reinterpret_cast<V8*>(out + (int64_t)b * a.o_bs + (int64_t)h * a.o_hs + c * 8) = z;
      }
    }
  }
  const int grp = a.idx ? a.idx[(int64_t)b * a.idx_stride + j] : j;
  if (grp < 0 || grp >= a.hkv) return;  // padding entry: uniform over the item's CTAs

  int len = a.seqlens ? a.seqlens[b] : a.max_seq;
  len = max(0, min(len, a.max_seq));
  const int p0 = split * a.tiles_per_split * AT_TILE;
  const int p1 = min(len, p0 + a.tiles_per_split * AT_TILE);
  const int ntiles = p1 > p0 ? (p1 - p0 + AT_TILE - 1) / AT_TILE : 0;

  const uint32_t sbase = smem_u32(smem);
  const uint32_t sq = sbase + ST * AT_STAGE_BYTES;
  const T* K = static_cast<const T*>(a.k) + (int64_t)b * a.k_bs + (int64_t)grp * a.k_hs;
  const T* V = static_cast<const T*>(a.v) + (int64_t)b * a.v_bs + (int64_t)grp * a.v_hs;
  const int ch = tid & 15;  // 16-byte chunk of a 256-byte row

  auto load_tile = [&](int t, int slot) {
    const uint32_t sk = sbase + slot * AT_STAGE_BYTES, sv = sk + AT_KV_BYTES;
#pragma unroll
    for (int i = 0; i < AT_TILE * 16 / AT_THREADS; ++i) {
      const int r = (tid >> 4) + i * (AT_THREADS / 16);
      const int pos = p0 + t * AT_TILE + r;
      const bool v = pos < p1;
      const uint32_t off = r * 256 + ((ch ^ (r & 7)) << 4);
      cp_async16(sk + off, v ? K + (int64_t)pos * a.k_ss + ch * 8 : K, v);
      cp_async16(sv + off, v ? V + (int64_t)pos * a.v_ss + ch * 8 : V, v);
    }
  };

  // Q rows (query heads of the group, zero rows past hpg) go with the first stage's group
  {
    const T* Q = static_cast<const T*>(a.q) + (int64_t)b * a.q_bs + (int64_t)grp * hpg * a.q_hs;
#pragma unroll
    for (int i = 0; i < 16 * 16 / AT_THREADS; ++i) {
      const int r = (tid >> 4) + i * (AT_THREADS / 16);
      const bool v = r < hpg;
      cp_async16(sq + r * 256 + ((ch ^ (r & 7)) << 4), v ? Q + (int64_t)r * a.q_hs + ch * 8 : Q, v);
    }
  }
#pragma unroll
  for (int s = 0; s < ST - 1; ++s) {
    if (s < ntiles) load_tile(s, s);
    cp_async_commit();
  }

  float m_r[2] = {-INFINITY, -INFINITY};  // running max (log2 domain) of rows g, g+8
  float l_r[2] = {0.f, 0.f};              // this thread's partial row sums
  float o[AT_D / 8][4];
#pragma unroll
  for (int i = 0; i < AT_D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  uint32_t qf[AT_D / 16][4];

  for (int t = 0; t < ntiles; ++t) {
    cp_async_wait<ST - 2>();
    __syncthreads();
    if (t == 0) {
#pragma unroll
      for (int ks = 0; ks < AT_D / 16; ++ks) {
        const int row = lane & 15, c = ks * 2 + (lane >> 4);
        ldsm_x4(sq + row * 256 + ((c ^ (row & 7)) << 4), qf[ks][0], qf[ks][1], qf[ks][2], qf[ks][3]);
      }
    }
    {
      const int tn = t + ST - 1;
      if (tn < ntiles) load_tile(tn, tn % ST);
      cp_async_commit();
    }
    const uint32_t sk = sbase + (t % ST) * AT_STAGE_BYTES, sv = sk + AT_KV_BYTES;
    // S = Q K^T for this warp's 16 positions (two n8 tiles)
    float s[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
    for (int ks = 0; ks < AT_D / 16; ++ks) {
      const int mat = lane >> 3;
      const int r = warp * 16 + (mat >> 1) * 8 + (lane & 7);
      const int c = ks * 2 + (mat & 1);
      uint32_t b0, b1, b2, b3;
      ldsm_x4(sk + r * 256 + ((c ^ (r & 7)) << 4), b0, b1, b2, b3);
      mma16816<T>(s[0], qf[ks], b0, b1);
      mma16816<T>(s[1], qf[ks], b2, b3);
    }
    // online softmax (rows g: s[.][0..1], g+8: s[.][2..3])
    const int pbase = p0 + t * AT_TILE + warp * 16 + (lane & 3) * 2;
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < 2; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int pos = pbase + nt * 8 + (i & 1);
        const float x = pos < p1 ? s[nt][i] * a.scale_log2 : -INFINITY;
        s[nt][i] = x;
        mx[i >> 1] = fmaxf(mx[i >> 1], x);
      }
    float alpha[2], base[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      const float mn = fmaxf(m_r[r], mx[r]);
      base[r] = mn == -INFINITY ? 0.f : mn;
      alpha[r] = exp2f(m_r[r] - base[r]);
      m_r[r] = mn;
      l_r[r] *= alpha[r];
    }
#pragma unroll
    for (int nt = 0; nt < 2; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float p = exp2f(s[nt][i] - base[i >> 1]);
        s[nt][i] = p;
        l_r[i >> 1] += p;
      }
#pragma unroll
    for (int dt = 0; dt < AT_D / 8; ++dt) {
      o[dt][0] *= alpha[0];
      o[dt][1] *= alpha[0];
      o[dt][2] *= alpha[1];
      o[dt][3] *= alpha[1];
    }
    uint32_t pa[4];
    pa[0] = Dt<T>::pack(s[0][0], s[0][1]);
    pa[1] = Dt<T>::pack(s[0][2], s[0][3]);
    pa[2] = Dt<T>::pack(s[1][0], s[1][1]);
    pa[3] = Dt<T>::pack(s[1][2], s[1][3]);
    // O += P V
#pragma unroll
    for (int np = 0; np < AT_D / 16; ++np) {
      const int mat = lane >> 3;
      const int r = warp * 16 + (mat & 1) * 8 + (lane & 7);
      const int c = np * 2 + (mat >> 1);
      uint32_t v0, v1, v2, v3;
      ldsm_x4_t(sv + r * 256 + ((c ^ (r & 7)) << 4), v0, v1, v2, v3);
      mma16816<T>(o[2 * np], pa, v0, v1);
      mma16816<T>(o[2 * np + 1], pa, v2, v3);
    }
  }
  cp_async_wait<0>();
  __syncthreads();

  // merge the 4 warps
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l_r[r] += __shfl_xor_sync(0xffffffffu, l_r[r], 1);
    l_r[r] += __shfl_xor_sync(0xffffffffu, l_r[r], 2);
  }
  float* sO = reinterpret_cast<float*>(smem);           // [4][16][AT_OLD]
  float* sM = sO + 4 * 16 * AT_OLD;                      // [4][16]
  float* sL = sM + 4 * 16;                               // [4][16]
  const int g = lane >> 2;
  if ((lane & 3) == 0) {
    sM[warp * 16 + g] = m_r[0];
    sM[warp * 16 + g + 8] = m_r[1];
    sL[warp * 16 + g] = l_r[0];
    sL[warp * 16 + g + 8] = l_r[1];
  }
#pragma unroll
  for (int dt = 0; dt < AT_D / 8; ++dt) {
    const int d = dt * 8 + (lane & 3) * 2;
    *reinterpret_cast<float2*>(sO + (warp * 16 + g) * AT_OLD + d) = make_float2(o[dt][0], o[dt][1]);
    *reinterpret_cast<float2*>(sO + (warp * 16 + g + 8) * AT_OLD + d) = make_float2(o[dt][2], o[dt][3]);
  }
  __syncthreads();

  const int item = b * gridDim.y + j;
  for (int e = tid; e < hpg * AT_D; e += AT_THREADS) {
    const int r = e / AT_D, d = e % AT_D;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < 4; ++w) M = fmaxf(M, sM[w * 16 + r]);
    float L = 0.f, acc = 0.f;
    if (M != -INFINITY) {
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        const float sc = exp2f(sM[w * 16 + r] - M);
        L += sL[w * 16 + r] * sc;
        acc += sO[(w * 16 + r) * AT_OLD + d] * sc;
      }
    }
    const float val = L > 0.f ? acc / L : 0.f;
    if (gridDim.x == 1) {
      out[(int64_t)b * a.o_bs + (int64_t)(grp * hpg + r) * a.o_hs + d] = Dt<T>::t(val);
    } else {
      a.ws[(((int64_t)item * gridDim.x + split) * hpg + r) * AT_D + d] = val;
      if (d == 0) a.ws[a.lse_offset + ((int64_t)item * gridDim.x + split) * hpg + r] = L > 0.f ? M + __log2f(L) : -INFINITY;
    }
  }
  if (gridDim.x == 1) return;

  // last CTA of the item merges the splits (log-sum-exp weights)
  __threadfence();
  __syncthreads();
  if (tid == 0) s_last = atomicAdd(a.counters + item, 1u) == gridDim.x - 1;
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  const int ns = gridDim.x;
  for (int e = tid; e < hpg * AT_D; e += AT_THREADS) {
    const int r = e / AT_D, d = e % AT_D;
    const float* lse = a.ws + a.lse_offset + (int64_t)item * ns * hpg + r;
    float M = -INFINITY;
    for (int sp = 0; sp < ns; ++sp) M = fmaxf(M, __ldcg(lse + sp * hpg));
    float W = 0.f, acc = 0.f;
    if (M != -INFINITY) {
      for (int sp = 0; sp < ns; ++sp) {
        const float w = exp2f(__ldcg(lse + sp * hpg) - M);
        W += w;
        acc += w * __ldcg(a.ws + (((int64_t)item * ns + sp) * hpg + r) * AT_D + d);
      }
    }
    out[(int64_t)b * a.o_bs + (int64_t)(grp * hpg + r) * a.o_hs + d] = Dt<T>::t(W > 0.f ? acc / W : 0.f);
  }
  // leave the workspace zero-filled (the partials of this item, its lse values and its counter): another
  // call may lay its counters over these bytes
  __syncthreads();
  {
    float4* po = reinterpret_cast<float4*>(a.ws + (int64_t)item * ns * hpg * AT_D);
    const float4 z = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int e = tid; e < ns * hpg * AT_D / 4; e += AT_THREADS) __stcg(po + e, z);
    float* pl = a.ws + a.lse_offset + (int64_t)item * ns * hpg;
    for (int e = tid; e < ns * hpg; e += AT_THREADS) pl[e] = 0.f;
  }
  if (tid == 0) a.counters[item] = 0;
}

struct AttnPlan {
  int splits, tps;
  int stages;  // pipeline depth: attn_decode_kernel<T, stages>
  bool pdl;    // launched as a programmatic dependent of the kernel before (the head router's select)
  size_t ws_bytes, cnt_bytes;
  int64_t lse_offset;
};

template <int ST>
const void* attn_fn(polar_dtype dt) {
  return dt == POLAR_BF16 ? (const void*)attn_decode_kernel<__nv_bfloat16, ST> : (const void*)attn_decode_kernel<__half, ST>;
}

int plan_attn(const polar_cuda_attn_params* p, AttnPlan* pl, int* occ_out) {
  DevProps dp;
  if (dev_props(&dp)) return -1;
  int occ2 = 0, occ3 = 0;
  if (kernel_occupancy(attn_fn<2>(p->dtype), AT_THREADS, at_smem(2), &occ2) ||
      kernel_occupancy(attn_fn<3>(p->dtype), AT_THREADS, at_smem(3), &occ3))
    return -1;
  const int n_sel = p->idx ? p->n_sel : p->kv_heads;
  const int items = p->batch * n_sel;
  const int tiles = std::max(1, cdiv(p->max_seq, AT_TILE));
  // Pipeline depth: 3 stages (two CTAs per SM) with the split count below, or 2 stages (three per SM) with one CTA
  // per item, where there are items for at least 3/4 of a wave of those and their last wave is fuller than with
  // 3 stages. H200 sweep of stages x splits over the attention grids (docs/benchmarks.md, twelfth session): of the
  // 36 points the rule moves 9; OPT-66B at batch 64 / 22 heads (1408 items: 5.33 waves of 264 against 3.56 of
  // 396) 0.3306 -> 0.3228 ms, at batch 16 (352 items) 0.0956 -> 0.0863, LLaMA-3-8B GQA at batch 64 / 5 groups
  // 0.1738 -> 0.1587; four moved points measured 0.4-2.2% slower, within that call's run-to-run spread. Where
  // 3 stages fill their last wave better (512, 1024, 2048 items) 2 stages measured 3-5% slower.
  auto fill = [](int64_t n, int64_t slots) { return n % slots == 0 ? 1.0 : (double)(n % slots) / slots; };
  const int ts = tuning().attn_stages;
  const bool planned = ts == 0 && p->splits == 0;  // neither the depth nor the split count is forced
  bool two = ts == 2;
  if (planned && occ2 >= 1 && occ3 >= 1) {
    const int64_t s2 = (int64_t)occ2 * dp.sms, s3 = (int64_t)occ3 * dp.sms;
    two = 4 * (int64_t)items >= 3 * s2 && fill(items, s2) > fill(items, s3);
  }
  pl->stages = two ? 2 : 3;
  const int occ = two ? occ2 : occ3;
  if (occ < 1)
    return polar_set_error("polar_cuda_attn_decode: the kernel does not fit on this GPU (%d B shared memory)", at_smem(pl->stages));
  *occ_out = occ;
  pl->pdl = pdl_on(dp);
  // One CTA per item also where the items fit one wave of 3-stage CTAs with at least ~one per SM (two tiles in
  // flight per CTA already keep the stream going): H200 sweep, the split count's model below chose 2-4 splits there
  // and measured slower, OPT-6.7B at batch 16 / 10 heads (160 items) 0.0501 against 0.0457 ms with one, LLaMA-3-8B
  // / -70B GQA at batch 16 / 8 groups (128 items) 0.0719 / 0.0760 against 0.0684 / 0.0684; at 256 items equal.
  const bool one_wave = 10 * (int64_t)items >= 9 * (int64_t)dp.sms && items <= (int64_t)occ * dp.sms;
  int s = 1;  // one CTA per item where planned and a rule above says so
  if (p->splits > 0) {
    s = std::min(p->splits, tiles);
  } else if (!(planned && (two || one_wave))) {
    const int slots = occ * dp.sms;
    double best = 1e30;
    for (int c = 1; c <= std::min(tiles, 64); ++c) {
      const int tps = cdiv(tiles, c);
      if (cdiv(tiles, tps) != c) continue;
      const double waves = (double)cdiv64((int64_t)items * c, slots);
      const double cost = waves * (tps + 1.0) + (c > 1 ? 0.25 : 0.0);
      if (cost < best - 1e-9) {
        best = cost;
        s = c;
      }
    }
  }
  pl->tps = cdiv(tiles, s);
  pl->splits = cdiv(tiles, pl->tps);
  const int hpg = p->q_heads / std::max(1, p->kv_heads);
  if (pl->splits > 1) {
    pl->cnt_bytes = align_up((size_t)items * 4, 256);
    const size_t o_floats = (size_t)items * pl->splits * hpg * AT_D;
    const size_t l_floats = (size_t)items * pl->splits * hpg;
    pl->lse_offset = (int64_t)o_floats;
    pl->ws_bytes = pl->cnt_bytes + (o_floats + l_floats) * 4;
  } else {
    pl->cnt_bytes = 0;
    pl->lse_offset = 0;
    pl->ws_bytes = 0;
  }
  return 0;
}

int check_attn(const polar_cuda_attn_params* p) {
  const char* who = "polar_cuda_attn_decode";
  POLAR_REQ(p != nullptr, "%s: expected a params struct, received NULL", who);
  POLAR_REQ(p->head_dim == AT_D, "%s: expected head_dim 128, received %d", who, p->head_dim);
  POLAR_REQ(p->batch >= 0 && p->max_seq >= 0, "%s: expected batch, max_seq >= 0, received %d, %d", who, p->batch, p->max_seq);
  POLAR_REQ(p->kv_heads >= 1 && p->kv_heads <= 1024, "%s: expected kv_heads in 1..1024, received %d", who, p->kv_heads);
  POLAR_REQ(p->q_heads >= p->kv_heads && p->q_heads % p->kv_heads == 0 && p->q_heads / p->kv_heads <= 16,
            "%s: expected q_heads a multiple of kv_heads with at most 16 query heads per group, received %d and %d", who,
            p->q_heads, p->kv_heads);
  POLAR_REQ(!p->idx || (p->n_sel >= 0 && p->n_sel <= 65535 && p->idx_stride >= p->n_sel),
            "%s: expected 0 <= n_sel <= idx_stride, received n_sel %d, idx_stride %lld", who, p->n_sel, (long long)p->idx_stride);
  POLAR_REQ(p->batch == 0 || (p->q && p->k_cache && p->v_cache && p->out), "%s: expected q, k_cache, v_cache and out, received NULL", who);
  POLAR_REQ(aligned16(p->q) && aligned16(p->k_cache) && aligned16(p->v_cache) && aligned16(p->out),
            "%s: expected 16-byte aligned q, k_cache, v_cache and out", who);
  const int64_t st[] = {p->q_batch_stride, p->q_head_stride, p->k_batch_stride, p->k_seq_stride, p->k_head_stride,
                        p->v_batch_stride, p->v_seq_stride, p->v_head_stride, p->o_batch_stride, p->o_head_stride};
  for (int64_t s : st) POLAR_REQ(s % 8 == 0, "%s: expected strides that are multiples of 8 elements, received %lld", who, (long long)s);
  POLAR_REQ(p->batch <= 65535, "%s: expected batch <= 65535, received %d", who, p->batch);
  return 0;
}

}  // namespace
}  // namespace polar_cuda

using namespace polar_cuda;

extern "C" size_t polar_cuda_attn_workspace(const polar_cuda_attn_params* p) {
  AttnPlan pl;
  int occ;
  if (check_attn(p) || plan_attn(p, &pl, &occ)) return 0;
  return pl.ws_bytes;
}

extern "C" int polar_cuda_attn_describe(const polar_cuda_attn_params* p, char* buf, size_t n) {
  AttnPlan pl;
  int occ;
  if (check_attn(p) || plan_attn(p, &pl, &occ)) return -1;
  POLAR_REQ(buf != nullptr && n > 0, "polar_cuda_attn_describe: expected a buffer, received NULL or 0 bytes");
  std::snprintf(buf, n, "stages=%d splits=%d tiles/split=%d ctas/sm=%d ws=%zu", pl.stages, pl.splits, pl.tps, occ, pl.ws_bytes);
  return 0;
}

extern "C" int polar_cuda_attn_decode(const polar_cuda_attn_params* p) {
  if (check_attn(p)) return -1;
  AttnPlan pl;
  int occ;
  if (plan_attn(p, &pl, &occ)) return -1;
  const int n_sel = p->idx ? p->n_sel : p->kv_heads;
  if (p->batch == 0 || n_sel == 0) {
    if (p->batch > 0 && p->idx) {  // nothing kept: every head is zero
      for (int b = 0; b < p->batch; ++b)
        for (int h = 0; h < p->q_heads; ++h)
          POLAR_CU(cudaMemsetAsync(static_cast<char*>(p->out) + ((int64_t)b * p->o_batch_stride + (int64_t)h * p->o_head_stride) * 2,
                                   0, AT_D * 2, (cudaStream_t)p->stream));
    }
    return 0;
  }
  AttnArgs a{};
  a.q = p->q; a.q_bs = p->q_batch_stride; a.q_hs = p->q_head_stride;
  a.k = p->k_cache; a.k_bs = p->k_batch_stride; a.k_ss = p->k_seq_stride; a.k_hs = p->k_head_stride;
  a.v = p->v_cache; a.v_bs = p->v_batch_stride; a.v_ss = p->v_seq_stride; a.v_hs = p->v_head_stride;
  a.o = p->out; a.o_bs = p->o_batch_stride; a.o_hs = p->o_head_stride;
  a.seqlens = p->seqlens; a.max_seq = p->max_seq;
  a.idx = p->idx; a.n_sel = n_sel; a.idx_stride = p->idx_stride;
  a.hkv = p->kv_heads; a.hpg = p->q_heads / p->kv_heads;
  a.scale_log2 = p->scale * 1.4426950408889634f;
  a.splits = pl.splits; a.tiles_per_split = pl.tps;
  if (pl.splits > 1) {
    POLAR_REQ(p->workspace != nullptr && p->workspace_bytes >= pl.ws_bytes,
              "polar_cuda_attn_decode: expected a workspace of at least %zu bytes, received %zu", pl.ws_bytes, p->workspace_bytes);
    a.counters = static_cast<unsigned*>(p->workspace);
    a.ws = reinterpret_cast<float*>(static_cast<char*>(p->workspace) + pl.cnt_bytes);
    a.lse_offset = pl.lse_offset;
  }
  dim3 grid(pl.splits, n_sel, p->batch);
  return with_dtype(p->dtype, "polar_cuda_attn_decode", [&](auto t) {
    using T = decltype(t);
    // sm_90: a programmatic dependent, so that the launch and the CTAs' set-up overlap the previous kernel's tail
    if (pl.stages == 2) POLAR_CU(launch_ex(pl.pdl, false, attn_decode_kernel<T, 2>, grid, AT_THREADS, at_smem(2), (cudaStream_t)p->stream, a));
    else POLAR_CU(launch_ex(pl.pdl, false, attn_decode_kernel<T, 3>, grid, AT_THREADS, at_smem(3), (cudaStream_t)p->stream, a));
    return 0;
  });
}
