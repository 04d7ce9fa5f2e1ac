// Radix-select pieces shared by the MLP router's top-k kernels (router.cu) and its fused kernel
// (router_fused.cuh): the order-preserving key of a score, block scans, and the multi-CTA select of a
// cooperative grid. Included only by router.cu (the definitions are internal to it).
#pragma once
#include <cstdint>

#include <cooperative_groups.h>

#include "common.cuh"

namespace polar_cuda {
namespace {
namespace cg = cooperative_groups;

__device__ __forceinline__ uint32_t order_key(float f) {
  if (f != f) return 0u;  // NaN ranks lowest
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Inclusive scan of one value per lane over the warp.
__device__ __forceinline__ unsigned warp_incl_scan(unsigned v) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const unsigned t = __shfl_up_sync(0xffffffffu, v, off);
    if (lane >= off) v += t;
  }
  return v;
}

// Exclusive scan of one value per thread over the block (any blockDim.x that is a multiple of 32, <= 1024);
// *total = the block's sum. sh: 33 words of shared memory, reusable by the next call.
__device__ __forceinline__ unsigned block_excl_scan(unsigned v, unsigned* sh /*[33]*/, unsigned* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const unsigned incl = warp_incl_scan(v);
  __syncthreads();
  if (lane == 31) sh[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    const unsigned w = lane < (int)(blockDim.x >> 5) ? sh[lane] : 0u;
    const unsigned wi = warp_incl_scan(w);
    sh[lane] = wi - w;  // exclusive prefix of warp totals
    if (lane == 31) sh[32] = wi;
  }
  __syncthreads();
  const unsigned r = sh[warp] + incl - v;
  *total = sh[32];
  return r;
}

// ---- multi-CTA top-k (cooperative launch) -------------------------------------------------------------
// The single-CTA select (router.cu's topk_kernel) takes ~55 us for 36864 scores on an H100 (one SM doing four
// histogram passes and the compaction). Here every SM holds a contiguous slice of the keys in registers; three radix passes
// (11, 11, 10 bits) build per-CTA shared-memory histograms that meet in a global one, every CTA then finds
// the same digit from the global counts, and the compaction offsets come from the per-CTA counts. Grid-wide
// barriers (cooperative launch) separate the phases. The state (histograms, counts) lives in the zero-filled
// workspace; the kernel zeroes it again once every CTA is done with it.
constexpr int MT_THREADS = 256;  // topk_multi_kernel's CTA (mt_find_digit's scan assumes at least this many)
constexpr int MT_KPT = 8;  // keys per thread held in registers
constexpr int MT_BINS = 2048;
struct MtState {
  unsigned hist[3][MT_BINS];
  unsigned gt[1024], eq[1024];  // per-CTA counts (grid <= 1024)
  unsigned done;                // CTAs that have read gt / eq (the last one zeroes them)
};

// Inclusive scan from the top bin down: returns the digit where the running count reaches kk, and the
// count above that digit. Every thread of the CTA gets the answer.
__device__ void mt_find_digit(const unsigned* __restrict__ gh, int nbins, unsigned kk, unsigned* s_warp, unsigned* s_out,
                              unsigned* digit, unsigned* above) {
  const int tid = threadIdx.x;
  constexpr int PER = MT_BINS / MT_THREADS;  // 8 bins per thread, thread 0 holds the top bins
  unsigned c[PER], sum = 0;
#pragma unroll
  for (int q = 0; q < PER; ++q) {
    const int bin = nbins - 1 - (tid * PER + q);
    c[q] = bin >= 0 ? __ldcg(gh + bin) : 0u;
    sum += c[q];
  }
  unsigned total;
  const unsigned excl = block_excl_scan(sum, s_warp, &total);
  if (excl < kk && kk <= excl + sum) {
    unsigned run = excl;
    for (int q = 0; q < PER; ++q) {
      if (run + c[q] >= kk) {
        s_out[0] = (unsigned)(nbins - 1 - (tid * PER + q));
        s_out[1] = run;
        break;
      }
      run += c[q];
    }
  }
  __syncthreads();
  *digit = s_out[0];
  *above = s_out[1];
  __syncthreads();
}

// The select of a cooperative grid whose CTA c holds the keys of the scores [lo, hi), thread t the contiguous
// run lo + t * KPT + j (key[j]; slots past hi are ignored): writes the indices of the k largest (0 < k < n) to out
// in ascending order, the kk lowest-index keys equal to the k-th taken. zero[0..nzero) is zeroed once every CTA
// passed the first grid-wide barrier (a vector the caller's grid read before calling). st is left zeroed.
template <int KPT>
__device__ __forceinline__ void mt_select(const uint32_t (&key)[KPT], int lo, int hi, int k, int32_t* out, MtState* st,
                                          float* zero, int nzero) {
  cg::grid_group grid = cg::this_grid();
  __shared__ unsigned sh[MT_BINS];
  __shared__ unsigned s_warp[33], s_out[2];
  __shared__ bool s_last;
  const int tid = threadIdx.x, NT = blockDim.x, G = gridDim.x, c = blockIdx.x;
  unsigned prefix = 0, mask = 0, kk = (unsigned)k;
  const int shifts[3] = {21, 10, 0}, bits[3] = {11, 11, 10};
  for (int p = 0; p < 3; ++p) {
    const int shift = shifts[p], nb = 1 << bits[p];
    for (int b = tid; b < nb; b += NT) sh[b] = 0;
    __syncthreads();
    // warp-aggregated: scores of similar size share their top digits (one atomic per distinct bin and warp)
#pragma unroll
    for (int j = 0; j < KPT; ++j) {
      const int i = lo + tid * KPT + j;
      const unsigned bin = i < hi && (key[j] & mask) == prefix ? (key[j] >> shift) & (nb - 1) : 0xffffffffu;
      const unsigned peers = __match_any_sync(0xffffffffu, bin);
      if (bin != 0xffffffffu && (tid & 31) == __ffs(peers) - 1) atomicAdd(&sh[bin], (unsigned)__popc(peers));
    }
    __syncthreads();
    for (int b = tid; b < nb; b += NT)
      if (sh[b]) atomicAdd(&st->hist[p][b], sh[b]);
    grid.sync();
    if (p == 0)
      for (int i = c * NT + tid; i < nzero; i += G * NT) zero[i] = 0.f;
    unsigned digit, above;
    mt_find_digit(st->hist[p], nb, kk, s_warp, s_out, &digit, &above);
    prefix |= digit << shift;
    mask |= (unsigned)(nb - 1) << shift;
    kk -= above;
  }
  // prefix = key of the k-th largest; take every larger key and the kk lowest-index equal ones
  // Each thread holds a contiguous run of its CTA's slice, so the output order is (CTA, thread, slot) and
  // the compaction needs two block scans (equal keys, then taken keys), not two per register slot.
  unsigned ngt = 0, neq = 0;
#pragma unroll
  for (int j = 0; j < KPT; ++j) {
    const int i = lo + tid * KPT + j;
    if (i < hi) {
      ngt += key[j] > prefix;
      neq += key[j] == prefix;
    }
  }
  unsigned cta_gt, cta_eq;
  block_excl_scan(ngt, s_warp, &cta_gt);
  const unsigned eq_excl = block_excl_scan(neq, s_warp, &cta_eq);
  if (tid == 0) {
    st->gt[c] = cta_gt;
    st->eq[c] = cta_eq;
  }
  grid.sync();
  unsigned gt_before = 0, eq_before = 0;
  for (int q = tid; q < c; q += NT) {
    gt_before += __ldcg(st->gt + q);
    eq_before += __ldcg(st->eq + q);
  }
  // every CTA is past the last histogram read (the barrier above): zero this CTA's share of them
  for (int b = c * NT + tid; b < 3 * MT_BINS; b += G * NT) (&st->hist[0][0])[b] = 0u;
  unsigned tot;
  gt_before = block_excl_scan(gt_before, s_warp, &tot), gt_before = tot;
  eq_before = block_excl_scan(eq_before, s_warp, &tot), eq_before = tot;
  // (block_excl_scan's barriers: every thread's gt / eq reads are done) the last CTA to get here zeroes them
  if (tid == 0) {
    __threadfence();
    s_last = atomicAdd(&st->done, 1u) == (unsigned)G - 1;
  }
  __syncthreads();
  if (s_last) {
    for (int q = tid; q < G; q += NT) st->gt[q] = st->eq[q] = 0u;
    if (tid == 0) st->done = 0u;
  }
  const unsigned eq_left = eq_before >= kk ? 0u : kk - eq_before;  // equal keys this CTA may still take
  const unsigned take_eq = eq_excl >= eq_left ? 0u : min(neq, eq_left - eq_excl);  // ... and this thread
  unsigned pos = gt_before + min(eq_before, kk) + block_excl_scan(ngt + take_eq, s_warp, &tot);
  unsigned e = 0;
#pragma unroll
  for (int j = 0; j < KPT; ++j) {
    const int i = lo + tid * KPT + j;
    if (i < hi) {
      bool take = key[j] > prefix;
      if (key[j] == prefix) take = e++ < take_eq;
      if (take) out[pos++] = i;
    }
  }
}

}  // namespace
}  // namespace polar_cuda
