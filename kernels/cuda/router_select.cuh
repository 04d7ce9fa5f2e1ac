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
// histogram passes and the compaction). Here every SM holds a contiguous slice of the keys in registers. A
// first radix pass over the top 11 bits builds per-CTA shared-memory histograms that meet in a global one;
// after a grid-wide barrier every CTA finds the same bin, the one that holds the k-th largest key. (Where the
// kernel that wrote the scores made that histogram (pre0), the pass and its barrier are skipped.)
//  - Two-barrier path (that bin holds at most `cap` keys, the usual case): every CTA appends its keys in that
//    bin (key and index) to a candidate list in the workspace and publishes how many of its keys lie above
//    the bin; after a second barrier each CTA loads the whole candidate list into shared memory and finishes
//    the select among it on its own (two radix passes over the low 21 bits), then counts the candidates from
//    CTAs before it to find its output offset. No further barrier.
//  - Otherwise (many keys in one bin: heavy ties), two more global radix passes (11 and 10 bits) with a
//    barrier each, then per-CTA counts published across a fourth barrier give the offsets.
// Why: on an H200 the select took ~16 us of the OPT-66B router's 55 (rank-8 probe, docs/benchmarks.md), most
// of it in grid barriers and global histogram passes. The state (histograms, counts, candidates) lives in the
// zero-filled workspace; the kernel zeroes it again once every CTA is done with it.
constexpr int MT_THREADS = 256;  // topk_multi_kernel's CTA (mt_find_digit's scan assumes at least this many)
constexpr int MT_KPT = 8;  // keys per thread held in registers
constexpr int MT_BINS = 2048;
constexpr int MT_CAP = 8192;  // the most candidates the two-barrier path takes (32 KB of shared memory)
struct MtState {
  unsigned hist[3][MT_BINS];
  unsigned gt[1024], eq[1024];  // per-CTA counts (grid <= 1024)
  unsigned done;                // CTAs that have read gt / eq (the last one zeroes them)
  unsigned ncand;               // candidates appended (two-barrier path)
  uint2 cand[MT_CAP];           // (key, index) of the keys in the k-th key's top-11-bit bin
};

// Inclusive scan from the top bin down over nbins counts get(bin): returns the digit where the running count
// reaches kk, and the count above that digit. Every thread of the CTA gets the answer.
template <typename Get>
__device__ void mt_find_digit(Get get, int nbins, unsigned kk, unsigned* s_warp, unsigned* s_out, unsigned* digit,
                              unsigned* above) {
  const int tid = threadIdx.x;
  constexpr int PER = MT_BINS / MT_THREADS;  // 8 bins per thread, thread 0 holds the top bins
  unsigned c[PER], sum = 0;
#pragma unroll
  for (int q = 0; q < PER; ++q) {
    const int bin = nbins - 1 - (tid * PER + q);
    c[q] = bin >= 0 ? get(bin) : 0u;
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

// Adds key(j)'s digit (key(j) >> shift) & (nb - 1) into sh[] for every slot j < n with valid(j), warp-aggregated:
// keys of similar size share their digits (one shared-memory atomic per distinct bin and warp). Every lane of
// the warp must call it with the same n.
template <typename Key, typename Valid>
__device__ __forceinline__ void mt_hist_add(unsigned* sh, int n, int shift, int nb, Key key, Valid valid) {
  for (int j = 0; j < n; ++j) {
    const unsigned bin = valid(j) ? (key(j) >> shift) & (unsigned)(nb - 1) : 0xffffffffu;
    const unsigned peers = __match_any_sync(0xffffffffu, bin);
    if (bin != 0xffffffffu && (threadIdx.x & 31) == __ffs(peers) - 1) atomicAdd(&sh[bin], (unsigned)__popc(peers));
  }
}

// The compaction: with prefix the key of the k-th largest, writes every larger key's index and the kk
// lowest-index equal ones, in ascending order. gt_before / eq_before: the larger / equal keys in the CTAs
// before this one. Each thread holds a contiguous run of its CTA's slice, so the output order is (CTA,
// thread, slot).
template <int KPT>
__device__ __forceinline__ void mt_write(const uint32_t (&key)[KPT], int lo, int hi, uint32_t prefix, unsigned kk,
                                         unsigned gt_before, unsigned eq_before, int32_t* out, unsigned* s_warp) {
  const int tid = threadIdx.x;
  unsigned ngt = 0, neq = 0;
#pragma unroll
  for (int j = 0; j < KPT; ++j) {
    const int i = lo + tid * KPT + j;
    if (i < hi) {
      ngt += key[j] > prefix;
      neq += key[j] == prefix;
    }
  }
  unsigned tot;
  const unsigned eq_excl = block_excl_scan(neq, s_warp, &tot);
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

// The select of a cooperative grid whose CTA c holds the keys of the scores [lo, hi), thread t the contiguous
// run lo + t * KPT + j (key[j]; slots past hi are ignored): writes the indices of the k largest (0 < k < n) to out
// in ascending order, the kk lowest-index keys equal to the k-th taken. zero[0..nzero) is zeroed once every CTA
// passed the first grid-wide barrier (a vector the caller's grid read before calling). cap (<= MT_CAP): the most
// keys in the k-th key's top bin for the two-barrier path (0: always the three-pass one). st is left zeroed.
// pre0: st->hist[0] already holds the first pass's histogram of all n keys (the kernel that wrote the scores added
// it, and completed before this grid started): the first pass and its grid barrier are skipped, so zero is then
// cleared without waiting for the grid (pass no vector that other CTAs of this grid may still read).
template <int KPT>
__device__ __forceinline__ void mt_select(const uint32_t (&key)[KPT], int lo, int hi, int k, int32_t* out, MtState* st,
                                          float* zero, int nzero, int cap, bool pre0 = false) {
  cg::grid_group grid = cg::this_grid();
  __shared__ unsigned sh[MT_BINS];
  __shared__ unsigned s_warp[33], s_out[2];
  __shared__ bool s_last;
  const int tid = threadIdx.x, NT = blockDim.x, G = gridDim.x, c = blockIdx.x;
  auto mine = [&](int j) { return lo + tid * KPT + j < hi; };
  auto reg_key = [&](int j) { return key[j]; };
  // the last CTA to get here (after its reads of the shared state) zeroes gt / eq / the candidates
  auto last_zeroes = [&](unsigned ncand) {
    if (tid == 0) {
      __threadfence();
      s_last = atomicAdd(&st->done, 1u) == (unsigned)G - 1;
    }
    __syncthreads();
    if (s_last) {
      for (int q = tid; q < G; q += NT) st->gt[q] = st->eq[q] = 0u;
      for (unsigned q = tid; q < ncand; q += NT) st->cand[q] = make_uint2(0u, 0u);
      if (tid == 0) st->done = st->ncand = 0u;
    }
  };
  unsigned prefix = 0, mask = 0, kk = (unsigned)k;
  const int shifts[3] = {21, 10, 0}, bits[3] = {11, 11, 10};
  for (int p = 0; p < 3; ++p) {
    const int shift = shifts[p], nb = 1 << bits[p];
    if (p > 0 || !pre0) {
      for (int b = tid; b < nb; b += NT) sh[b] = 0;
      __syncthreads();
      mt_hist_add(sh, KPT, shift, nb, reg_key, [&](int j) { return mine(j) && (key[j] & mask) == prefix; });
      __syncthreads();
      for (int b = tid; b < nb; b += NT)
        if (sh[b]) atomicAdd(&st->hist[p][b], sh[b]);
      grid.sync();
    }
    if (p == 0)
      for (int i = c * NT + tid; i < nzero; i += G * NT) zero[i] = 0.f;
    unsigned digit, above;
    const unsigned* gh = st->hist[p];
    mt_find_digit([gh](int b) { return __ldcg(gh + b); }, nb, kk, s_warp, s_out, &digit, &above);
    const unsigned in_bin = __ldcg(gh + digit);
    prefix |= digit << shift;
    mask |= (unsigned)(nb - 1) << shift;
    kk -= above;
    if (p > 0 || in_bin > (unsigned)min(cap, MT_CAP)) continue;

    // ---- two-barrier path: the candidates are the keys whose top 11 bits are prefix's ----
    unsigned nc_t = 0, ngt_t = 0;
#pragma unroll
    for (int j = 0; j < KPT; ++j) {
      if (mine(j)) {
        nc_t += (key[j] & mask) == prefix;
        ngt_t += (key[j] & mask) > prefix;
      }
    }
    unsigned cta_nc, cta_gt;
    block_excl_scan(ngt_t, s_warp, &cta_gt);
    unsigned at = block_excl_scan(nc_t, s_warp, &cta_nc);
    if (tid == 0) {
      st->gt[c] = cta_gt;
      s_out[0] = cta_nc ? atomicAdd(&st->ncand, cta_nc) : 0u;
    }
    __syncthreads();
    at += s_out[0];
#pragma unroll
    for (int j = 0; j < KPT; ++j)
      if (mine(j) && (key[j] & mask) == prefix) st->cand[at++] = make_uint2(key[j], (unsigned)(lo + tid * KPT + j));
    grid.sync();
    // every CTA is past its histogram reads: zero this CTA's share of them
    for (int b = c * NT + tid; b < MT_BINS; b += G * NT) st->hist[0][b] = 0u;
    // the candidates' low 21 bits, with bit 21 set where the candidate comes from a CTA before this one
    __shared__ unsigned cl[MT_CAP];
    const unsigned nc = in_bin;
    for (unsigned q = tid; q < nc; q += NT) {
      const uint2 v = __ldcg(st->cand + q);
      cl[q] = (v.x & 0x1fffffu) | ((int)v.y < lo ? 1u << 21 : 0u);
    }
    unsigned gt_before = 0;
    for (int q = tid; q < c; q += NT) gt_before += __ldcg(st->gt + q);
    unsigned tot;
    block_excl_scan(gt_before, s_warp, &tot);  // (its barriers also order the cl writes before the reads below)
    gt_before = tot;
    last_zeroes(nc);
    // the kk-th largest low part among the candidates: radix passes of 11 and 10 bits in shared memory
    unsigned lp = 0, lm = 0;
    const int cshift[2] = {10, 0}, cbits[2] = {11, 10};
    for (int q = 0; q < 2; ++q) {
      const int nbq = 1 << cbits[q];
      __syncthreads();  // (the previous pass's digit reads of sh are done)
      for (int b = tid; b < nbq; b += NT) sh[b] = 0;
      __syncthreads();
      // every lane of a warp runs the same number of rounds: __match_any_sync in mt_hist_add
      const int rounds = (int)((nc + NT - 1) / NT);
      mt_hist_add(sh, rounds, cshift[q], nbq, [&](int r) { return cl[r * NT + tid] & 0x1fffffu; },
                  [&](int r) { return r * NT + tid < (int)nc && (cl[r * NT + tid] & lm) == lp; });
      __syncthreads();
      unsigned digit, above;
      const unsigned* shp = sh;
      mt_find_digit([shp](int b) { return shp[b]; }, nbq, kk, s_warp, s_out, &digit, &above);
      lp |= digit << cshift[q];
      lm |= (unsigned)(nbq - 1) << cshift[q];
      kk -= above;
    }
    // lp = the k-th largest key's low bits; count the larger and equal candidates of the CTAs before this one
    unsigned cgt = 0, ceq = 0;
    for (unsigned q = tid; q < nc; q += NT) {
      const unsigned v = cl[q];
      if (v >> 21) {
        cgt += (v & 0x1fffffu) > lp;
        ceq += (v & 0x1fffffu) == lp;
      }
    }
    unsigned gtc, eqc;
    block_excl_scan(cgt, s_warp, &gtc);
    block_excl_scan(ceq, s_warp, &eqc);
    mt_write(key, lo, hi, prefix | lp, kk, gt_before + gtc, eqc, out, s_warp);
    return;
  }
  // ---- three-pass path: prefix = key of the k-th largest; per-CTA counts of larger and equal keys ----
  unsigned ngt = 0, neq = 0;
#pragma unroll
  for (int j = 0; j < KPT; ++j) {
    if (mine(j)) {
      ngt += key[j] > prefix;
      neq += key[j] == prefix;
    }
  }
  unsigned cta_gt, cta_eq;
  block_excl_scan(ngt, s_warp, &cta_gt);
  block_excl_scan(neq, s_warp, &cta_eq);
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
  block_excl_scan(gt_before, s_warp, &tot), gt_before = tot;
  block_excl_scan(eq_before, s_warp, &tot), eq_before = tot;
  // (block_excl_scan's barriers: every thread's gt / eq reads are done)
  last_zeroes(0);
  mt_write(key, lo, hi, prefix, kk, gt_before, eq_before, out, s_warp);
}

}  // namespace
}  // namespace polar_cuda
