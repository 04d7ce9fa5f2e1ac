// The head router as one kernel: logits = x w^T (+ b) by split-K over the model dimension within a thread-block
// cluster, then the per-token group sums and top-k.
//
// Why: through the generic split-K GEMM and a separate top-k kernel the head router took 0.018 ms of the
// OPT-66B decode step on an H200 for 2.5 MB of x and w (under 1 us at HBM speed): the GEMM's split tiles meet
// in fp32 atomics, and the top-k is a second dependent launch. Here a thread-block cluster of C CTAs (up to
// 16) takes 16 tokens, CTA r of it the r-th K chunk: its weight tile (and the bias) is requested before the
// kernel waits for x (the weights are constant), its x tile right after, both whole in shared memory; each of
// 8 warps runs mma.sync over its k16 steps, the warps' tiles are summed in shared memory, and after a cluster
// barrier CTA r sums the cluster's tiles for its own 16 / C tokens through distributed shared memory, adds
// the bias and selects for them. No workspace, no atomics, no second launch.
// (A first version with split-K over independent CTAs, fp32 atomics and the top-k in the last CTA to finish
// took 0.025 ms with 16 tokens per group and 0.060 with 64: docs/benchmarks.md.)
// Included only by router.cu.
#pragma once
#include <cstdint>

#include "common.cuh"

namespace polar_cuda {
namespace {

// One warp: the k largest of s[0..kv) (ties: lower index first), in ascending index order, into out[0..k).
// Rank by counting (kv <= 1024 groups, a few hundred comparisons per lane).
__device__ __forceinline__ void head_select_row(const float* s, int kv, int k, int32_t* out, int lane) {
  int base = 0;
  for (int g0 = 0; g0 < kv; g0 += 32) {
    const int g = g0 + lane;
    bool sel = false;
    if (g < kv) {
      const float v = s[g];
      int rank = 0;
#pragma unroll 8
      for (int h = 0; h < kv; ++h) {  // (unrolled: independent shared-memory reads in flight)
        const float w = s[h];
        rank += (w > v) || (w == v && h < g);
      }
      sel = rank < k;
    }
    const unsigned bal = __ballot_sync(0xffffffffu, sel);
    if (sel) out[base + __popc(bal & ((1u << lane) - 1u))] = g;
    base += __popc(bal);
  }
}

constexpr int HR_TOK = 16;       // tokens per cluster: one mma row tile
constexpr int HR_MAXC = 16;      // the largest cluster (a non-portable size on sm_90; HR_TOK / C tokens per CTA)
constexpr int HR_MAXU = 128;     // the most units this kernel takes (8 pairs of 8-wide n tiles)
constexpr int HR_THREADS = 256;  // 8 warps; warp w takes the k16 steps w, w + 8, ... of the CTA's K chunk
constexpr int HR_WARPS = HR_THREADS / 32;
constexpr int HR_PAD = 8;        // elements of padding per shared-memory row: conflict-free ldmatrix

struct HrArgs {
  const void* x;
  int64_t ldx;
  const void* w;  // [units, d]
  const void* b;  // [units] or NULL
  int m, d, units;
  int up;         // units rounded up to 16 (rows past units are zero-filled)
  int kv, per, k;
  int kc;         // K chunk per CTA (a multiple of 16); CTA rank r of a cluster takes [r * kc, (r + 1) * kc)
  int32_t* out;
  int64_t ld_idx;
  float* out_logits;  // [m, units] or NULL
};

// Shared memory of one CTA: the weight and x tiles (later the warps' fp32 partial tiles, then the CTA's
// partial tile in the first of them), then the bias, then its tokens' logits and group sums.
__host__ __device__ inline size_t hr_tiles_bytes(int up, int kc) {
  const size_t tiles = (size_t)(up + HR_TOK) * (kc + HR_PAD) * 2;
  const size_t parts = (size_t)HR_WARPS * HR_TOK * up * 4;
  return tiles > parts ? tiles : parts;
}
__host__ __device__ inline size_t hr_smem_bytes(int up, int kc) {
  return hr_tiles_bytes(up, kc) + (size_t)up * 4 + (size_t)2 * HR_TOK * up * 4;
}

// grid (token groups, C), clusters of (1, C, 1): blockIdx.x is the group of 16 tokens, the cluster rank the K
// chunk. sm_90 (the host takes the GEMM path elsewhere).
template <typename T>
__global__ void __launch_bounds__(HR_THREADS) head_router_kernel(const HrArgs a) {
  extern __shared__ __align__(16) unsigned char hr_sm[];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int C = gridDim.y, q = blockIdx.y;  // cluster size and this CTA's rank in it
  const int t0 = blockIdx.x * HR_TOK, k0 = q * a.kc;
  const int kn = min(a.kc, a.d - k0);  // <= 0 when d is small for the cluster: this CTA's partial is zero
  const int rows = min(HR_TOK, a.m - t0);
  const int ld = a.kc + HR_PAD;
  T* sw = reinterpret_cast<T*>(hr_sm);  // [up][ld]
  T* sx = sw + (size_t)a.up * ld;       // [HR_TOK][ld]
  float* sbias = reinterpret_cast<float*>(hr_sm + hr_tiles_bytes(a.up, a.kc));
  float* L = sbias + a.up;              // [HR_TOK][up]: this CTA's tokens' logits
  float* S = L + HR_TOK * a.up;         // [HR_TOK][up]: ... and their group sums
  const T* W = static_cast<const T*>(a.w);
  const T* X = static_cast<const T*>(a.x);
  const T* B = static_cast<const T*>(a.b);
  const int cpr = a.kc / 8;  // 16-byte pieces per row
  // the weights and the bias are constant: requested before waiting for the kernel that writes x
  for (int i = tid; i < a.up * cpr; i += HR_THREADS) {
    const int r = i / cpr, c = (i - r * cpr) * 8;
    const bool v = r < a.units && c < kn;
    cp_async16(smem_u32(sw + (size_t)r * ld + c), v ? W + (int64_t)r * a.d + k0 + c : W, v);
  }
  cp_async_commit();
  for (int u = tid; u < a.up; u += HR_THREADS) sbias[u] = B && u < a.units ? Dt<T>::f(B[u]) : 0.f;
  griddep_wait_and_release();  // x is read only after this
  for (int i = tid; i < HR_TOK * cpr; i += HR_THREADS) {
    const int r = i / cpr, c = (i - r * cpr) * 8;
    const bool v = r < rows && c < kn;
    cp_async16(smem_u32(sx + (size_t)r * ld + c), v ? X + (int64_t)(t0 + r) * a.ldx + k0 + c : X, v);
  }
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();

  // acc[j]: the 16 x 8 tile (tokens, units j*8..) over this warp's k16 steps
  const int nt = a.up / 8, steps = kn > 0 ? (kn + 15) / 16 : 0;
  float acc[HR_MAXU / 8][4];
#pragma unroll
  for (int j = 0; j < HR_MAXU / 8; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
  const uint32_t xa = smem_u32(sx + (size_t)(lane & 15) * ld + (lane >> 4) * 8);
  const uint32_t wa = smem_u32(sw + (size_t)((lane >> 4) * 8 + (lane & 7)) * ld + ((lane >> 3) & 1) * 8);
  for (int s = warp; s < steps; s += HR_WARPS) {
    uint32_t af[4];
    ldsm_x4(xa + s * 32, af[0], af[1], af[2], af[3]);
#pragma unroll
    for (int j = 0; j < HR_MAXU / 16; ++j) {
      if (2 * j < nt) {  // two n tiles per ldmatrix.x4: rows 16j.. of w
        uint32_t b0, b1, b2, b3;
        ldsm_x4(wa + (uint32_t)(j * 16 * ld * 2) + s * 32, b0, b1, b2, b3);
        mma16816<T>(acc[2 * j], af, b0, b1);
        mma16816<T>(acc[2 * j + 1], af, b2, b3);
      }
    }
  }
  __syncthreads();  // the tiles are read: the shared memory becomes the warps' partial tiles [warp][HR_TOK][up]
  float* part = reinterpret_cast<float*>(hr_sm);
  {
    float* pw = part + (size_t)warp * HR_TOK * a.up + (lane >> 2) * a.up + (lane & 3) * 2;
#pragma unroll
    for (int j = 0; j < HR_MAXU / 8; ++j) {
      if (j < nt) {
        *reinterpret_cast<float2*>(pw + j * 8) = make_float2(acc[j][0], acc[j][1]);
        *reinterpret_cast<float2*>(pw + 8 * a.up + j * 8) = make_float2(acc[j][2], acc[j][3]);
      }
    }
  }
  __syncthreads();
  for (int i = tid; i < HR_TOK * a.up / 4; i += HR_THREADS) {  // the CTA's partial tile, into the first
    float4 t = reinterpret_cast<const float4*>(part)[i];
#pragma unroll
    for (int w = 1; w < HR_WARPS; ++w) {
      const float4 v = reinterpret_cast<const float4*>(part + (size_t)w * HR_TOK * a.up)[i];
      t.x += v.x; t.y += v.y; t.z += v.z; t.w += v.w;
    }
    reinterpret_cast<float4*>(part)[i] = t;
  }
  cluster_sync_all();  // every CTA's partial tile is complete and visible to the cluster
  // this CTA's tokens of the group: tpc of them, from q * tpc; their logits are the sum over the cluster
  const int tpc = HR_TOK / C, r0 = q * tpc, mine = max(0, min(tpc, rows - r0));
  const uint32_t pa = smem_u32(part);
  for (int i = tid; i < mine * a.units; i += HR_THREADS) {
    const int r = i / a.units, u = i - r * a.units;
    const uint32_t off = pa + (uint32_t)((r0 + r) * a.up + u) * 4u;
    float v[HR_MAXC];  // every load issued before the first is used
#pragma unroll
    for (int c = 0; c < HR_MAXC; ++c) v[c] = c < C ? ld_dsmem_f32(off, (uint32_t)c) : 0.f;
    float s = sbias[u];
#pragma unroll
    for (int c = 0; c < HR_MAXC; ++c) s += v[c];
    L[r * a.up + u] = s;
    if (a.out_logits) a.out_logits[(int64_t)(t0 + r0 + r) * a.units + u] = s;
  }
  cluster_arrive();  // this CTA's reads of the others' tiles are done (waited for before it exits)
  __syncthreads();
  if (a.k > 0) {
    for (int i = tid; i < mine * a.kv; i += HR_THREADS) {  // summed in the order of head_topk_kernel
      const int r = i / a.kv, g = i - r * a.kv;
      float s = 0.f;
      for (int e = 0; e < a.per; ++e) s += L[r * a.up + g * a.per + e];
      S[r * a.up + g] = s;
    }
    __syncthreads();
    for (int r = warp; r < mine; r += HR_WARPS)
      head_select_row(S + r * a.up, a.kv, a.k, a.out + (int64_t)(t0 + r0 + r) * a.ld_idx, lane);
  }
  cluster_wait();
}

}  // namespace
}  // namespace polar_cuda
