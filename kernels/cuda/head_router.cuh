// The head router as one kernel: logits = x w^T (+ b) by split-K over the model dimension, then, in the last
// CTA of each group of 64 tokens to finish, the per-token group sums and top-k.
//
// Why: through the generic split-K GEMM and a separate top-k kernel the head router took 0.019 ms of the
// OPT-66B decode step on an H200 for 2.5 MB of x and w (under 1 us at HBM speed). That GEMM's tiles are built
// for weight streams (128-row A tiles for 72 units, a multi-stage pipeline for 4 K chunks), and the top-k
// was a second dependent launch. Here a CTA takes 16 tokens x all units (<= 128) over one K chunk: its weight
// tile (and the bias) is requested before the kernel waits for x (the weights are constant), its x tile right
// after, both whole in shared memory (one cp.async group each, no pipeline: a chunk is ~50 KB), then each of
// 8 warps runs mma.sync over an eighth of the chunk, the warps' tiles meet in shared memory and the CTA adds
// the sum to an fp32 tile in the workspace with 16-byte atomics. The last CTA of a token group to finish (an
// atomic counter per group; the CTAs need not be resident at once) reads the sums back, adds the bias, writes
// the logits where asked, zeroes the sums and its counter (the workspace is left as found) and selects.
// 16 tokens per group, not 64: a first version with 64 took 0.060 ms, its last CTA selecting for 64 tokens
// one after another (8 per warp); with 16 the selects of a batch run in as many CTAs as there are groups.
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

constexpr int HR_TOK = 16;       // tokens per CTA: one mma row tile (the last CTA of a group selects for them)
constexpr int HR_MAXU = 128;     // the most units this kernel takes (8 pairs of 8-wide n tiles)
constexpr int HR_THREADS = 256;  // 8 warps, warp w takes the w-th eighth of the CTA's K chunk
constexpr int HR_WARPS = HR_THREADS / 32;
constexpr int HR_KSTEP = HR_WARPS * 16;  // K chunks are whole multiples of 128: one or more k16 steps per warp
constexpr int HR_PAD = 8;        // elements of padding per shared-memory row: conflict-free ldmatrix

struct HrArgs {
  const void* x;
  int64_t ldx;
  const void* w;  // [units, d]
  const void* b;  // [units] or NULL
  int m, d, units;
  int up;         // units rounded up to 16 (rows past units are zero-filled)
  int kv, per, k;
  int kc, splits;  // K chunk per CTA (a multiple of HR_KSTEP) and the number of chunks (gridDim.x)
  int32_t* out;
  int64_t ld_idx;
  float* out_logits;  // [m, units] or NULL
  float* acc;         // [gridDim.y * HR_TOK, up] fp32 sums: zero on entry, left zero
  unsigned* count;    // [gridDim.y] CTAs done per token group: zero on entry, left zero
};

// Shared memory of one CTA: the weight and x tiles, later reused for the warps' partial tiles and then the
// last CTA's logits and group sums; the bias after them.
__host__ __device__ inline size_t hr_smem_bytes(int up, int kc) {
  const size_t tiles = (size_t)(up + HR_TOK) * (kc + HR_PAD) * 2;
  const size_t parts = (size_t)HR_WARPS * HR_TOK * up * 4;
  return (tiles > parts ? tiles : parts) + (size_t)up * 4;
}

template <typename T>
__global__ void __launch_bounds__(HR_THREADS) head_router_kernel(const HrArgs a) {
  extern __shared__ __align__(16) unsigned char hr_sm[];
  __shared__ int s_last;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int k0 = blockIdx.x * a.kc, t0 = blockIdx.y * HR_TOK;
  const int kn = min(a.kc, a.d - k0);  // > 0: splits = cdiv(d, kc)
  const int rows = min(HR_TOK, a.m - t0);
  const int ld = a.kc + HR_PAD;
  T* sw = reinterpret_cast<T*>(hr_sm);  // [up][ld]
  T* sx = sw + (size_t)a.up * ld;       // [HR_TOK][ld]
  float* sbias = reinterpret_cast<float*>(hr_sm + hr_smem_bytes(a.up, a.kc) - (size_t)a.up * 4);
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
  griddep_wait_and_release();  // x, the sums and the counters are read only after this
  for (int i = tid; i < HR_TOK * cpr; i += HR_THREADS) {
    const int r = i / cpr, c = (i - r * cpr) * 8;
    const bool v = r < rows && c < kn;
    cp_async16(smem_u32(sx + (size_t)r * ld + c), v ? X + (int64_t)(t0 + r) * a.ldx + k0 + c : X, v);
  }
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();

  // acc[j]: the 16 x 8 tile (tokens, units j*8..) over this warp's eighth of the chunk (steps past kn add zeros)
  const int nt = a.up / 8, spw = a.kc / HR_KSTEP;
  float acc[HR_MAXU / 8][4];
#pragma unroll
  for (int j = 0; j < HR_MAXU / 8; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
  const uint32_t xa = smem_u32(sx + (size_t)(lane & 15) * ld + (lane >> 4) * 8);
  const uint32_t wa = smem_u32(sw + (size_t)((lane >> 4) * 8 + (lane & 7)) * ld + ((lane >> 3) & 1) * 8);
  for (int s = warp * spw; s < (warp + 1) * spw; ++s) {
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
  const int c4 = (a.units + 3) / 4;  // float4s of a row that hold units
  for (int i = tid; i < rows * c4; i += HR_THREADS) {
    const int r = i / c4, c = (i - r * c4) * 4;
    float4 t = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int w = 0; w < HR_WARPS; ++w) {
      const float4 q = *reinterpret_cast<const float4*>(part + ((size_t)w * HR_TOK + r) * a.up + c);
      t.x += q.x; t.y += q.y; t.z += q.z; t.w += q.w;
    }
    atomic_add4(a.acc + (int64_t)(t0 + r) * a.up + c, t);
  }
  // the last CTA of this token group (threadfence-reduction pattern) sees every CTA's sums
  __threadfence();
  __syncthreads();
  if (tid == 0) s_last = atomicAdd(a.count + blockIdx.y, 1u) == (unsigned)a.splits - 1;
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  // every thread loads its share of the group's sums at once (one round of L2 latency), then stores
  float* L = part;                      // [HR_TOK][up] logits
  float* S = part + HR_TOK * a.up;      // [HR_TOK][up] group sums
  constexpr int PER = HR_TOK * HR_MAXU / HR_THREADS;
  const int n = rows * a.units;
  float v[PER];
#pragma unroll
  for (int q = 0; q < PER; ++q) {
    const int i = tid + q * HR_THREADS, r = i / a.units, u = i - r * a.units;
    v[q] = i < n ? __ldcg(a.acc + (int64_t)(t0 + r) * a.up + u) + sbias[u] : 0.f;
  }
#pragma unroll
  for (int q = 0; q < PER; ++q) {
    const int i = tid + q * HR_THREADS, r = i / a.units, u = i - r * a.units;
    if (i < n) {
      __stcg(a.acc + (int64_t)(t0 + r) * a.up + u, 0.f);
      if (a.out_logits) a.out_logits[(int64_t)(t0 + r) * a.units + u] = v[q];
      L[r * a.up + u] = v[q];
    }
  }
  if (tid == 0) a.count[blockIdx.y] = 0;
  if (a.k <= 0) return;
  __syncthreads();
  for (int i = tid; i < rows * a.kv; i += HR_THREADS) {  // summed in the order of head_topk_kernel
    const int r = i / a.kv, g = i - r * a.kv;
    float s = 0.f;
    for (int q = 0; q < a.per; ++q) s += L[r * a.up + g * a.per + q];
    S[r * a.up + g] = s;
  }
  __syncthreads();
  for (int r = warp; r < rows; r += HR_WARPS) head_select_row(S + r * a.up, a.kv, a.k, a.out + (int64_t)(t0 + r) * a.ld_idx, lane);
}

}  // namespace
}  // namespace polar_cuda
