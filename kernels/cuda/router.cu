// Router inference with fused top-k (semantics of kernels/cpu/sparse.cc):
//  - MLP router: h = x fc1^T (selective-GEMM kernel, compact [m, rank]), then fc2 with the column-sum
//    epilogue (the per-token scores are summed over the batch, optionally after a sigmoid, inside the
//    GEMM: the [m, ffn] score matrix never reaches memory), then one CTA radix-selects the k largest and
//    writes them in ascending order (ties: lower index first).
//  - Head router: logits = x w^T + b (fp32), then one warp per token sums each KV group's scores (when the
//    router scores query heads) and writes the token's top-k groups in ascending order.
#include <algorithm>

#include "common.cuh"
#include "sel_gemm.cuh"

namespace polar_cuda {
namespace {

__device__ __forceinline__ uint32_t order_key(float f) {
  if (f != f) return 0u;  // NaN ranks lowest
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

constexpr int TK_THREADS = 1024;

// Exclusive scan of one value per thread over the block (blockDim.x == TK_THREADS).
__device__ __forceinline__ unsigned block_excl_scan(unsigned v, unsigned* sh /*[32]*/, unsigned* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  unsigned incl = v;
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const unsigned t = __shfl_up_sync(0xffffffffu, incl, off);
    if (lane >= off) incl += t;
  }
  __syncthreads();
  if (lane == 31) sh[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    const unsigned w = lane < (int)(blockDim.x >> 5) ? sh[lane] : 0u;
    unsigned wi = w;
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
      const unsigned t = __shfl_up_sync(0xffffffffu, wi, off);
      if (lane >= off) wi += t;
    }
    sh[lane] = wi - w;  // exclusive prefix of warp totals
    if (lane == 31) sh[32] = wi;
  }
  __syncthreads();
  const unsigned r = sh[warp] + incl - v;
  *total = sh[32];
  return r;
}

// SM: the keys live in shared memory (n * 4 bytes, one coalesced pass over the scores); otherwise every
// pass re-reads the scores from global memory (a single CTA is then latency-bound).
template <bool SM>
__global__ void __launch_bounds__(TK_THREADS) topk_kernel(const float* __restrict__ score, int n, int k, int32_t* out) {
  __shared__ unsigned hist[256];
  __shared__ unsigned scan_sh[33];
  __shared__ unsigned s_prefix, s_kk;
  extern __shared__ uint32_t skeys[];
  const int tid = threadIdx.x, lane = tid & 31;
  if (k >= n) {
    for (int i = tid; i < n; i += blockDim.x) out[i] = i;
    return;
  }
  if (k <= 0) return;
  if (SM) {
    for (int i = tid; i < n; i += blockDim.x) skeys[i] = order_key(score[i]);
    __syncthreads();
  }
  auto key = [&](int i) -> uint32_t { return SM ? skeys[i] : order_key(score[i]); };
  unsigned prefix = 0, mask = 0, kk = (unsigned)k;
  for (int pass = 3; pass >= 0; --pass) {
    const int shift = pass * 8;
    for (int i = tid; i < 256; i += blockDim.x) hist[i] = 0;
    __syncthreads();
    // warp-aggregated histogram: scores of similar size share their top digits, and one shared-memory
    // atomic per distinct digit and warp avoids serialising up to 32 of them on one bin
    for (int base = 0; base < n; base += blockDim.x) {
      const int i = base + tid;
      unsigned bin = 256u;
      if (i < n) {
        const uint32_t u = key(i);
        if ((u & mask) == prefix) bin = (u >> shift) & 255u;
      }
      const unsigned peers = __match_any_sync(0xffffffffu, bin);
      if (bin < 256u && lane == __ffs(peers) - 1) atomicAdd(&hist[bin], (unsigned)__popc(peers));
    }
    __syncthreads();
    if (tid < 32) {
      unsigned c[8], sum = 0;
#pragma unroll
      for (int q = 0; q < 8; ++q) {
        c[q] = hist[255 - (lane * 8 + q)];
        sum += c[q];
      }
      unsigned incl = sum;
#pragma unroll
      for (int off = 1; off < 32; off <<= 1) {
        const unsigned t = __shfl_up_sync(0xffffffffu, incl, off);
        if (lane >= off) incl += t;
      }
      const unsigned excl = incl - sum;
      if (excl < kk && kk <= incl) {
        unsigned run = excl;
        for (int q = 0; q < 8; ++q) {
          if (run + c[q] >= kk) {
            s_prefix = prefix | ((unsigned)(255 - (lane * 8 + q)) << shift);
            s_kk = kk - run;
            break;
          }
          run += c[q];
        }
      }
    }
    __syncthreads();
    prefix = s_prefix;
    kk = s_kk;
    mask |= 255u << shift;
    __syncthreads();
  }
  // prefix = key of the k-th largest; take every larger key and the kk lowest-index equal ones
  const int per = (n + blockDim.x - 1) / blockDim.x;
  const int lo = min(n, tid * per), hi = min(n, lo + per);
  unsigned ngt = 0, neq = 0;
  for (int i = lo; i < hi; ++i) {
    const uint32_t u = key(i);
    ngt += u > prefix;
    neq += u == prefix;
  }
  unsigned tot;
  const unsigned eq_before = block_excl_scan(neq, scan_sh, &tot);
  const unsigned take_eq = eq_before >= kk ? 0u : min(neq, kk - eq_before);
  unsigned pos = block_excl_scan(ngt + take_eq, scan_sh, &tot);
  unsigned e = 0;
  for (int i = lo; i < hi; ++i) {
    const uint32_t u = key(i);
    bool take = u > prefix;
    if (u == prefix) {
      take = e < take_eq;
      ++e;
    }
    if (take) out[pos++] = i;
  }
}

constexpr int HT_WARPS = 4;

__global__ void __launch_bounds__(HT_WARPS * 32) head_topk_kernel(const float* __restrict__ logits, int64_t ld, int m,
                                                                  int kv, int per_group, int k, int32_t* out,
                                                                  int64_t ld_idx) {
  extern __shared__ float hs[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int t = blockIdx.x * HT_WARPS + warp;
  if (t >= m) return;
  float* s = hs + warp * kv;
  const float* row = logits + (int64_t)t * ld;
  for (int g = lane; g < kv; g += 32) {
    float a = 0.f;
    for (int u = 0; u < per_group; ++u) a += row[g * per_group + u];
    s[g] = a;
  }
  __syncwarp();
  int base = 0;
  for (int g0 = 0; g0 < kv; g0 += 32) {
    const int g = g0 + lane;
    bool sel = false;
    if (g < kv) {
      const float v = s[g];
      int rank = 0;
      for (int h = 0; h < kv; ++h) {
        const float w = s[h];
        rank += (w > v) || (w == v && h < g);
      }
      sel = rank < k;
    }
    const unsigned bal = __ballot_sync(0xffffffffu, sel);
    if (sel) out[(int64_t)t * ld_idx + base + __popc(bal & ((1u << lane) - 1u))] = g;
    base += __popc(bal);
  }
}

// ---- MLP router -------------------------------------------------------------------------------------
struct MlpRouterLayout {
  size_t g1, g2, h_off, s_off, total;
};

int mlp_router_args(const polar_cuda_mlp_router_params* p, GemmArgs* g1, GemmArgs* g2) {
  const char* who = "polar_cuda_mlp_router";
  POLAR_REQ(p != nullptr, "%s: expected a params struct, received NULL", who);
  POLAR_REQ(p->m >= 1 && p->d >= 8 && p->rank >= 8 && p->ffn >= 1, "%s: expected m >= 1, d >= 8, rank >= 8, ffn >= 1, received %d, %d, %d, %d",
            who, p->m, p->d, p->rank, p->ffn);
  POLAR_REQ(p->d % 8 == 0 && p->rank % 8 == 0, "%s: expected d and rank multiples of 8, received %d and %d", who, p->d, p->rank);
  POLAR_REQ(p->k >= 0 && p->k <= p->ffn, "%s: expected 0 <= k <= ffn (%d), received %d", who, p->ffn, p->k);
  POLAR_REQ(p->ldx >= p->d && p->ldx % 8 == 0, "%s: expected ldx >= d and a multiple of 8, received %lld", who, (long long)p->ldx);
  POLAR_REQ(p->x && p->fc1 && p->fc2 && p->out_idx, "%s: expected x, fc1, fc2 and out_idx, received NULL", who);
  POLAR_REQ(aligned16(p->x) && aligned16(p->fc1) && aligned16(p->fc2), "%s: expected 16-byte aligned x, fc1, fc2", who);
  POLAR_REQ(p->score == POLAR_CUDA_SCORE_LOGIT || p->score == POLAR_CUDA_SCORE_SIGMOID, "%s: expected score 0 or 1, received %d", who, p->score);
  *g1 = GemmArgs{};
  g1->A = p->fc1; g1->lda = p->d; g1->B = p->x; g1->ldb = p->ldx;
  g1->ldc = p->rank; g1->epi = EPI_STORE; g1->M = p->m; g1->F = p->rank; g1->K = p->d;
  *g2 = GemmArgs{};
  g2->A = p->fc2; g2->lda = p->rank; g2->ldb = p->rank;
  g2->epi = EPI_COLSUM; g2->colsum_sigmoid = p->score == POLAR_CUDA_SCORE_SIGMOID;
  g2->M = p->m; g2->F = p->ffn; g2->K = p->rank;
  return 0;
}

int mlp_router_layout(const polar_cuda_mlp_router_params* p, const GemmArgs& g1, const GemmArgs& g2, MlpRouterLayout* L) {
  size_t n1 = 0, n2 = 0;
  if (gemm_run(p->dtype, A_ROWS, g1, POLAR_IMPL_AUTO, 0, nullptr, nullptr, 0, &n1, "polar_cuda_mlp_router")) return -1;
  if (gemm_run(p->dtype, A_ROWS, g2, POLAR_IMPL_AUTO, 0, nullptr, nullptr, 0, &n2, "polar_cuda_mlp_router")) return -1;
  L->g1 = 0;
  L->g2 = align_up(n1, 256);
  L->h_off = L->g2 + align_up(n2, 256);
  L->s_off = L->h_off + align_up((size_t)p->m * p->rank * 2, 256);
  L->total = L->s_off + (p->out_scores ? 0 : align_up((size_t)p->ffn * 4, 256));
  return 0;
}

// ---- head router ------------------------------------------------------------------------------------
int head_router_args(const polar_cuda_head_router_params* p, GemmArgs* g) {
  const char* who = "polar_cuda_head_router";
  POLAR_REQ(p != nullptr, "%s: expected a params struct, received NULL", who);
  POLAR_REQ(p->m >= 1 && p->d >= 8 && p->d % 8 == 0, "%s: expected m >= 1 and d a multiple of 8, received %d and %d", who, p->m, p->d);
  POLAR_REQ(p->kv_heads >= 1 && p->kv_heads <= 1024 && p->q_heads % p->kv_heads == 0,
            "%s: expected 1 <= kv_heads <= 1024 dividing q_heads, received %d and %d", who, p->kv_heads, p->q_heads);
  POLAR_REQ(p->units == p->kv_heads || p->units == p->q_heads, "%s: expected units = kv_heads (%d) or q_heads (%d), received %d",
            who, p->kv_heads, p->q_heads, p->units);
  POLAR_REQ(p->k >= 0 && p->k <= p->kv_heads, "%s: expected 0 <= k <= kv_heads (%d), received %d", who, p->kv_heads, p->k);
  POLAR_REQ(p->ld_idx >= p->k, "%s: expected ld_idx >= k, received %lld", who, (long long)p->ld_idx);
  POLAR_REQ(p->ldx >= p->d && p->ldx % 8 == 0, "%s: expected ldx >= d and a multiple of 8, received %lld", who, (long long)p->ldx);
  POLAR_REQ(p->x && p->w && p->out_idx, "%s: expected x, w and out_idx, received NULL", who);
  POLAR_REQ(aligned16(p->x) && aligned16(p->w), "%s: expected 16-byte aligned x and w", who);
  *g = GemmArgs{};
  g->A = p->w; g->lda = p->d; g->B = p->x; g->ldb = p->ldx;
  g->bias = p->b; g->bias_gather = 0;
  g->ldc = p->units; g->c_f32 = 1; g->epi = EPI_STORE;
  g->M = p->m; g->F = p->units; g->K = p->d;
  return 0;
}

}  // namespace
}  // namespace polar_cuda

using namespace polar_cuda;

extern "C" size_t polar_cuda_mlp_router_workspace(const polar_cuda_mlp_router_params* p) {
  GemmArgs g1, g2;
  MlpRouterLayout L;
  if (mlp_router_args(p, &g1, &g2) || mlp_router_layout(p, g1, g2, &L)) return 0;
  return L.total;
}

extern "C" int polar_cuda_mlp_router(const polar_cuda_mlp_router_params* p) {
  GemmArgs g1, g2;
  MlpRouterLayout L;
  if (mlp_router_args(p, &g1, &g2) || mlp_router_layout(p, g1, g2, &L)) return -1;
  POLAR_REQ(p->workspace && p->workspace_bytes >= L.total, "polar_cuda_mlp_router: expected a workspace of at least %zu bytes, received %zu",
            L.total, p->workspace_bytes);
  char* ws = static_cast<char*>(p->workspace);
  cudaStream_t st = (cudaStream_t)p->stream;
  void* h = ws + L.h_off;
  float* scores = p->out_scores ? p->out_scores : reinterpret_cast<float*>(ws + L.s_off);
  g1.C = h;
  if (gemm_run(p->dtype, A_ROWS, g1, POLAR_IMPL_AUTO, 0, st, ws + L.g1, L.g2 - L.g1, nullptr, "polar_cuda_mlp_router")) return -1;
  POLAR_CU(cudaMemsetAsync(scores, 0, (size_t)p->ffn * 4, st));
  g2.B = h;
  g2.colsum = scores;
  if (gemm_run(p->dtype, A_ROWS, g2, POLAR_IMPL_AUTO, 0, st, ws + L.g2, L.h_off - L.g2, nullptr, "polar_cuda_mlp_router")) return -1;
  DevProps dp;
  if (dev_props(&dp)) return -1;
  const size_t sm = (size_t)p->ffn * 4;
  if (sm + 4096 <= (size_t)dp.smem_optin) {
    POLAR_CU(cudaFuncSetAttribute((const void*)topk_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm));
    topk_kernel<true><<<1, TK_THREADS, sm, st>>>(scores, p->ffn, p->k, p->out_idx);
  } else {
    topk_kernel<false><<<1, TK_THREADS, 0, st>>>(scores, p->ffn, p->k, p->out_idx);
  }
  POLAR_CU_LAUNCH("topk_kernel");
  // leave the workspace zero-filled (h and the scores), as every call does
  POLAR_CU(cudaMemsetAsync(ws + L.h_off, 0, L.total - L.h_off, st));
  return 0;
}

extern "C" size_t polar_cuda_head_router_workspace(const polar_cuda_head_router_params* p) {
  GemmArgs g;
  size_t n = 0;
  if (head_router_args(p, &g) || gemm_run(p->dtype, A_ROWS, g, POLAR_IMPL_AUTO, 0, nullptr, nullptr, 0, &n, "polar_cuda_head_router"))
    return 0;
  return align_up(n, 256) + (p->out_logits ? 0 : align_up((size_t)p->m * p->units * 4, 256));
}

extern "C" int polar_cuda_head_router(const polar_cuda_head_router_params* p) {
  GemmArgs g;
  size_t n = 0;
  if (head_router_args(p, &g) || gemm_run(p->dtype, A_ROWS, g, POLAR_IMPL_AUTO, 0, nullptr, nullptr, 0, &n, "polar_cuda_head_router"))
    return -1;
  const size_t gws = align_up(n, 256);
  const size_t total = gws + (p->out_logits ? 0 : align_up((size_t)p->m * p->units * 4, 256));
  POLAR_REQ(total == 0 || (p->workspace && p->workspace_bytes >= total),
            "polar_cuda_head_router: expected a workspace of at least %zu bytes, received %zu", total, p->workspace_bytes);
  char* ws = static_cast<char*>(p->workspace);
  cudaStream_t st = (cudaStream_t)p->stream;
  float* logits = p->out_logits ? p->out_logits : reinterpret_cast<float*>(ws + gws);
  g.C = logits;
  if (gemm_run(p->dtype, A_ROWS, g, POLAR_IMPL_AUTO, 0, st, ws, gws, nullptr, "polar_cuda_head_router")) return -1;
  if (p->k == 0) {
    if (!p->out_logits) POLAR_CU(cudaMemsetAsync(ws + gws, 0, total - gws, st));
    return 0;
  }
  const int per_group = p->units / p->kv_heads;
  const size_t sm = (size_t)HT_WARPS * p->kv_heads * 4;
  head_topk_kernel<<<cdiv(p->m, HT_WARPS), HT_WARPS * 32, sm, st>>>(logits, p->units, p->m, p->kv_heads, per_group, p->k,
                                                                    p->out_idx, p->ld_idx);
  POLAR_CU_LAUNCH("head_topk_kernel");
  if (!p->out_logits)  // leave the workspace zero-filled, as every call does
    POLAR_CU(cudaMemsetAsync(ws + gws, 0, total - gws, st));
  return 0;
}
