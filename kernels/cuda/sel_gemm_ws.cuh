// The warp-specialized, persistent (stream-K) selective GEMM kernel of sel_gemm.cu and its grid choice.
// Included only by sel_gemm.cu.
#pragma once
#include <algorithm>
#include <climits>
#include <cstdint>

#include "sel_gemm_tile.cuh"
#include "wgmma_gen.cuh"

namespace polar_cuda {
namespace {
// ---- warp-specialized, persistent wgmma path (sm_90a; nb = 256 by default, 64/128 for experiments) ------
// Warpgroups 0-1 consume (wgmma m64nNB, 64 features each), warpgroup 2 produces: it fills a ring of
// stage buffers, the gathered weight rows with cp.async (each producer thread arrives on the stage's "full"
// mbarrier when its copies have landed: cp.async.mbarrier.arrive.noinc) and the activation tile with one
// TMA box (its bytes complete the same barrier's transaction count); each consumer warp arrives on the
// stage's "empty" mbarrier once its wgmma group on that stage has completed. The main loop has no CTA-wide
// barrier, so the copy issue of later stages, the MMAs of one warpgroup and the MMA wait of the other
// overlap (ncu on the lock-step kernels at batch 256: 0.25-0.46 eligible warps per scheduler).
// Stream-K: one CTA per SM walks an equal share of all (tile, K chunk) steps, so there is no partial last
// wave (at batch 256 the grids were 2.2-3.3 waves: fc1 of OPT-66B at 100%, 288 tiles on 132 SMs). A tile
// that two or more CTAs share is finished by its first CTA, which waits on a flag for the others' partials;
// those leave straight from registers (see the consumers' loop). Until the fourteenth session the shared tiles
// were summed with fp32 atomics into the workspace by every CTA through the staged fp32 tile, which drained the
// ring at each shared segment: on the H200 that made 132 CTAs no faster than 72 for OPT-66B fc1 at batch 256 /
// 25% (0.1045 against 0.1011 ms; now 0.088), and an H100 fix-up that stored the staged tile and waited on flags
// measured slower still (OPT-66B at 50% 0.457 -> 0.698 ms, fourth session).
// Cluster split-K (g.cluster_reduce): where all of a grid's tiles fit at once as clusters of 2-8 CTAs, each tile's
// CTAs sum their partials over distributed shared memory instead (gemm_plan picks it when cheaper in steps): one
// CTA adding many partials costs more than their steps (H200, OPT-66B fc1 at batch 256 / 5%, 8 CTAs per tile:
// 0.0403 ms with the atomics of the eleventh session, 0.047 with stream-K's first-CTA sum, 0.0274 in clusters).
// K steps before its end at which a CTA lets the next kernel launch (programmatic dependent launch): about
// 5 us at ~0.65 us per step (OPT-66B fc1 at batch 64 on an H200), a guess at what a dependent needs to launch
// and start its first copies; not tuned (the MLP grid measured the same as with the release at the start,
// except batch 64 / 50%, which gemm_plan's plain fc2 launch decided).
constexpr int64_t WS_RELEASE_STEPS = 8;
__host__ __device__ __forceinline__ int sk_cta_of(int64_t step, int64_t total, int G) { return (int)(((step + 1) * G - 1) / total); }

// SEP (nb = 64, where it fits: 179 KB with the 6-stage ring): the fp32 epilogue tile has its own buffer after
// the ring, so the producer streams the next tile's stages during a tile's epilogue; else the epilogue tile
// overlays the ring and the producer waits for it at each tile boundary.
template <int NB>
struct WsSmem {
  static constexpr bool SEP = NB == 64;
  static constexpr int BYTES = Cfg<NB, true>::SMEM + (SEP ? NB * SLD * 4 : 0);
};

// the producer warpgroup's loader: 4 lanes per fc2 row piece (Loader::LPR)
template <typename T, int AMODE, int NB>
using WsLoader = Loader<T, AMODE, NB, 128, true, 4>;

// SK: the grid may share tiles between CTAs (stream-K's partials below); gemm_plan launches the SK = false
// instance where it does not (one CTA per tile, or cluster split-K), which leaves that code out.
template <typename T, int AMODE, int NB, bool SK>
__global__ void __launch_bounds__(384, 1) sel_gemm_ws_kernel(const __grid_constant__ GemmArgs g) {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ == 900) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using C = Cfg<NB, true>;
  constexpr int ST = C::STAGES;
  extern __shared__ __align__(1024) char smem_raw[];
  __shared__ __align__(8) uint64_t bars[2 * ST];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  // grid (G) for stream-K; (tiles, splits) in clusters of (1, splits) for cluster split-K (g.cluster_reduce), where
  // CTA b = x * splits + y gets K chunks [y * nc / splits, (y + 1) * nc / splits) of tile x: the same equal
  // shares of the same step order, which then never cross a tile
  const int tilesF = (g.F + BM - 1) / BM, nc = g.nchunks, G = gridDim.x * gridDim.y;
  const int bid = blockIdx.x * gridDim.y + blockIdx.y;
  const int64_t total = (int64_t)tilesF * ((g.M + NB - 1) / NB) * nc;
  const int64_t s_begin = (int64_t)bid * total / G, s_end = (int64_t)(bid + 1) * total / G;
  const uint32_t raw = smem_u32(smem_raw);
  const uint32_t sbase = (raw + 1023) & ~1023u;  // the swizzle atoms need 1024-byte alignment
  constexpr bool SEP = WsSmem<NB>::SEP;
  float* S = reinterpret_cast<float*>(smem_raw + (sbase - raw) + (SEP ? ST * C::STAGE_BYTES : 0));
  const uint32_t full = smem_u32(&bars[0]), empty = smem_u32(&bars[ST]);
  if (tid == 0) {
    for (int s = 0; s < ST; ++s) {
      mbar_init(full + 8 * s, 129);  // one cp.async arrival per producer thread + the TMA issuer's
      mbar_init(empty + 8 * s, 8);   // one arrival per consumer warp
    }
  }
  __syncthreads();
  const bool early = AMODE == A_COLS && g.early_a;
  // One tile's share of this CTA's steps: K chunks [cb, cb + nloc) of tile t.
  struct Seg {
    int t, cb, nloc, f0, m0;
    // a stream-K segment that does not start the tile: its partial goes to the workspace for the tile's first CTA
    __device__ bool partial(const GemmArgs& a) const { return SK && !a.cluster_reduce && cb > 0; }
  };
  auto seg_at = [&](int64_t step) {
    Seg q;
    q.t = (int)(step / nc);
    q.cb = (int)(step - (int64_t)q.t * nc);
    q.nloc = (int)(min(s_end, (int64_t)(q.t + 1) * nc) - step);
    q.f0 = (q.t % tilesF) * BM;
    q.m0 = (q.t / tilesF) * NB;
    return q;
  };
  // fc2's K-row indices: a ring of IR slots of BK indices in shared memory, filled by cp.async ST steps ahead
  // of the copies that use them. Loading them into registers one step ahead measured half of fc1's streaming
  // rate per CTA on this kernel (H200, OPT-66B batch 64 at 50%: fc2 0.167 ms; 0.149 with four steps ahead,
  // which spilled at nb = 256; 0.126 with this ring; at batch 256 / 50% 0.262 -> 0.202): a global load's value
  // waits behind the stage copies issued before it. fc2 here is still SM-bound (ncu: 174 us at base clocks
  // against 126 at boost; fc1 113 against 100) and issues about 45% more instructions than fc1 for the same
  // bytes (its producer's address and predicate of each gathered 16-byte copy; since then one address per row
  // and four lanes: Loader::LPR, OPT-66B batch 256 / 50% 0.197 -> 0.173 ms).
  // Copying each row's two 128-byte halves as 1-D bulk copies (TMA) instead was twice as slow (0.265 ms).
  constexpr int IR = ST + 1;  // one slot more than in flight: a slot is refilled one step after its last read
  __shared__ __align__(16) int sidx[AMODE == A_COLS ? IR * BK : 1];
  // The two roles run separate loops: setmaxnreg applies only where no register is shared between them.
  if (warp >= 8) {  // producer: few registers, so that the consumers can hold 128 accumulators each
    if (NB == 256) asm volatile("setmaxnreg.dec.sync.aligned.u32 56;\n" ::: "memory");
    if (!early) griddep_wait();  // fc1's loader reads idx, written by the router
    int ring = 0;  // stages filled so far (ring slot and mbarrier parity)
    const uint64_t b_pol = l2_policy_evict_last();
    const int pt = tid - 256;
    // fc2: the indices of the CTA's step at ring position pos into slot pos % IR (lanes 0-15 of each warp copy
    // the 16 rows that the warp loads: Loader::warp_row), then one cp.async group. Group pos holds them (ST groups
    // at the start, then one per step with that step's weight copies), so at position r the wait for at most
    // ST - 1 pending groups is the wait for group r, whose weight copies (of step r - ST) landed before the
    // empty barrier of slot r % ST let the producer on.
    auto idx_copy = [&](int pos) {
      if (AMODE == A_COLS && g.idx && (pt & 31) < 16 && s_begin + pos < s_end) {
        const int row = WsLoader<T, AMODE, NB>::warp_row(pt >> 5, pt & 31);
        const int j = (int)((s_begin + pos) % nc) * BK + row;
        const uint32_t dst = smem_u32(sidx + (pos % IR) * BK + row);
        const int n = j < g.K ? 4 : 0;
        asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(g.idx + (j < g.K ? j : 0)), "r"(n) : "memory");
      }
      if (AMODE == A_COLS) cp_async_commit();
    };
    static_assert(WsLoader<T, AMODE, NB>::A_ITERS == 8, "idx_copy: 16 K rows per warp");
    for (int p = 0; p < ST; ++p) idx_copy(p);
    for (int64_t step = s_begin; step < s_end;) {
      const Seg q = seg_at(step);
      // at M <= 256 (one batch tile) each weight tile is read once: its copies are L2 evict-first, the
      // activations, which every CTA re-reads, evict-last
      WsLoader<T, AMODE, NB> ld(g, q.f0, q.m0, tid - 256);
      auto load_b = [&](int s, int c) {
        if (tid == 256) {
          mbar_arrive_expect_tx(full + 8 * s, C::B_BYTES);
          tma_load_2d_hint(sbase + s * C::STAGE_BYTES + C::A_BYTES, &g.tmb, c * BK, q.m0, full + 8 * s, b_pol);
        }
      };
      // the weight copies of the step at ring position r into stage slot s
      auto load_a = [&](int s, int c, int r) {
        if constexpr (AMODE == A_COLS) {
          cp_async_wait<ST - 1>();
          __syncwarp();  // lanes 0-15 of the warp copied its indices
          ld.load_a_smem(g, sbase + s * C::STAGE_BYTES, c, sidx + (r % IR) * BK);
        } else {
          ld.load_a(g, sbase + s * C::STAGE_BYTES, c);
        }
      };
      int i = 0;
      if (early && step == s_begin) {  // fc2: its first weight stages stream while fc1 finishes
        for (int j = 0; j < ST && j < q.nloc; ++j) {
          load_a(j, q.cb + j, j);
          idx_copy(j + ST);
        }
        griddep_wait();
        for (; i < ST && i < q.nloc; ++i) {
          mbar_arrive_cp_async(full + 8 * i);
          load_b(i, q.cb + i);
        }
      }
      for (; i < q.nloc; ++i) {
        const int r = ring + i, s = r % ST;
        if (r >= ST) mbar_wait(empty + 8 * s, ((r / ST) & 1) ^ 1);
        load_a(s, q.cb + i, r);
        mbar_arrive_cp_async(full + 8 * s);  // (before the index copies of a later step: not waited for)
        load_b(s, q.cb + i);
        idx_copy(r + ST);
      }
      // cluster split-K (one segment per CTA): the consumers' two cluster barriers around the sum of the partial
      // tiles count every thread of the cluster
      if (g.cluster_reduce) {
        cluster_sync_all();
        cluster_sync_all();
      }
      // without SEP the next tile's copies would overwrite the ring, which holds the fp32 tile during the epilogue
      // (a shared tile's later segment leaves from registers: no fp32 tile, the producer streams on)
      if (!SEP && !q.partial(g)) asm volatile("bar.sync 2, 384;\n" ::: "memory");
      ring += q.nloc;
      step += q.nloc;
    }
    cp_async_wait<0>();
  } else {  // consumers
    if (NB == 256) asm volatile("setmaxnreg.inc.sync.aligned.u32 224;\n" ::: "memory");
    griddep_wait();  // the epilogue reads what earlier kernels wrote (y when accumulating)
    const int wf = (warp >> 2) * 64 + (warp & 3) * 16;  // this warp's 16 features of the A fragments
    int ring = 0;
    for (int64_t step = s_begin; step < s_end;) {
      const Seg q = seg_at(step);
      float acc[NB / 2];
#pragma unroll
      for (int j = 0; j < NB / 2; ++j) acc[j] = 0.f;
      for (int i = 0; i < q.nloc; ++i) {
        // the dependents may launch only near the end: a dependent that starts earlier only waits, next to a
        // grid that streams until its last step. (This alone did not win back what fc2 on mma.sync lost to an
        // early launch after this kernel, H200 OPT-66B batch 64 at 50%; gemm_plan launches that fc2 plainly.)
        if (s_end - (step + i) <= WS_RELEASE_STEPS) griddep_release();
        const int r = ring + i, s = r % ST;
        mbar_wait(full + 8 * s, (r / ST) & 1);
        // the stage's weights were written through the generic proxy (cp.async); wgmma reads through the async one
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
        const uint32_t sa = sbase + s * C::STAGE_BYTES;
        const uint32_t sb = sa + C::A_BYTES;
        uint32_t af[BK / 16][4];
#pragma unroll
        for (int ks = 0; ks < BK / 16; ++ks) load_afrag<AMODE>(sa, wf, ks, lane, af[ks]);
        asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
        for (int ks = 0; ks < BK / 16; ++ks) Wgmma<T, NB>::mma(acc, af[ks], sw128_desc(sb + ks * 32));
        asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
        asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
        if (lane == 0) mbar_arrive(empty + 8 * s);
      }
      // Stream-K's shared tiles: the tile's first CTA (its K chunk 0, the last segment of that CTA) finishes it.
      // Every later CTA of the tile processes its part first (its first segment, early in its range) and stores
      // its accumulators as they are in registers (each thread its own NB / 2 floats, float4-coalesced) into its
      // workspace slot, then counts itself in on the tile's flag; the first CTA waits for the count (the others
      // finished their parts long before, except a CTA inside the tile, which ends with it; they are all running,
      // as the grid has at most one CTA per resident slot: sk_grid), adds the slots to
      // its registers in the same order and zeroes them. No ring drain on the later CTAs' side (without SEP the
      // fp32 tile would overlay the ring), no fp32 atomics (the cost of a shared tile: sk_grid). Adding the
      // slots into the fp32 tile in shared memory instead (a loop, not unrolled) measured 2-3% slower at OPT-66B
      // batch 256 / 25% (fc1 0.0908 -> 0.0937 ms, fc2 0.0882 -> 0.0902).
      float4* const slot = reinterpret_cast<float4*>(g.ws) + (size_t)bid * (NB * BM / 4);
      if (q.partial(g)) {
#pragma unroll
        for (int v = 0; v < NB / 8; ++v) __stcg(slot + v * 256 + tid, make_float4(acc[4 * v], acc[4 * v + 1], acc[4 * v + 2], acc[4 * v + 3]));
        asm volatile("bar.sync 1, 256;\n" ::: "memory");
        if (tid == 0) {
          const int first = sk_cta_of((int64_t)q.t * nc, total, G);
          asm volatile("fence.acq_rel.gpu;\nred.relaxed.gpu.global.add.u32 [%0], 1;\n" ::"l"(g.counters + first) : "memory");
        }
        ring += q.nloc;
        step += q.nloc;
        continue;
      }
      if (SK && !g.cluster_reduce && q.nloc < nc) {  // this CTA starts a tile that later CTAs share
        const int others = sk_cta_of((int64_t)q.t * nc + nc - 1, total, G) - bid;
        if (tid == 0) {
          unsigned n = 0;
          do asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(n) : "l"(g.counters + bid) : "memory");
          while (n < (unsigned)others);
          g.counters[bid] = 0;  // (no other CTA adds to it again in this launch)
        }
        asm volatile("bar.sync 1, 256;\n" ::: "memory");
        for (int o = 1; o <= others; ++o) {
          float4* const src = slot + (size_t)o * (NB * BM / 4);
#pragma unroll
          for (int v = 0; v < NB / 8; ++v) {
            const float4 p = __ldcg(src + v * 256 + tid);
            acc[4 * v] += p.x;
            acc[4 * v + 1] += p.y;
            acc[4 * v + 2] += p.z;
            acc[4 * v + 3] += p.w;
            __stcg(src + v * 256 + tid, make_float4(0.f, 0.f, 0.f, 0.f));  // the workspace is left zero-filled
          }
        }
      }
      // both consumer warpgroups are done with every stage of this tile, and every copy landed (each full
      // phase was seen), so the fp32 tile may overwrite the ring (with SEP: every consumer has left the
      // previous tile's epilogue, which read the tile's own buffer)
      asm volatile("bar.sync 1, 256;\n" ::: "memory");
#pragma unroll
      for (int i = 0; i < NB / 8; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int f = wf + (lane >> 2) + ((j >> 1) << 3);
          const int n = i * 8 + (lane & 3) * 2 + (j & 1);
          S[n * SLD + f] = acc[i * 4 + j];
        }
      asm volatile("bar.sync 1, 256;\n" ::: "memory");
      if (g.cluster_reduce) {  // each CTA of the tile's cluster sums a share of the rows over the others' tiles
        cluster_tile_epilogue<T, NB, 256, 1>(g, S, q.f0, q.m0);
      } else {
        gemm_epilogue<T, NB, 256, 1>(g, S, q.f0, q.m0, 0, 1, 0);  // (the tile is whole in S)
      }
      if (!SEP) asm volatile("bar.sync 2, 384;\n" ::: "memory");  // the ring is free again
      ring += q.nloc;
      step += q.nloc;
    }
  }
#else
  __trap();  // launched only where wgmma_usable()
#endif
}

// Grid of the warp-specialized kernel (at most one CTA per resident slot): among one CTA per tile, s CTAs per
// tile (split-K) and one per slot (stream-K), the one with the least per-CTA time, counted in K steps: the
// steps of the busiest CTA, plus SK_STORE for a segment whose partial it stores and `read` for each partial it
// adds as a shared tile's first CTA (one CTA reads them all, 128 KB each at batch 256). Fitted to the H200
// sweep of the fourteenth session (each fc alone, read flush): with a read charge of 1-2 the planner took
// stream-K over clusters where one tile's first CTA adds 3-15 partials and lost 15-200% (OPT-66B fc1 at batch
// 256 / 5%, 120 CTAs for 15 tiles: 0.047 ms against 0.028 in clusters of 8; OPT-6.7B at 25%, 4 CTAs per tile:
// 0.034 against 0.029 in clusters of 3); with 6 it picks each point's faster plan of those measured, e.g.
// OPT-66B fc2 at 10%, 132 CTAs 0.0447 ms against 72 0.0517, and at 5% 72 CTAs 0.0319 against 132 0.0337.
// *split: some tile is shared (the workspace is needed).
constexpr int SK_STORE = 2, SK_READ = 6;
int sk_cost(int64_t total, int nchunks, int G, int read, bool* split) {
  int64_t worst = 0;
  *split = false;
  for (int c = 0; c < G; ++c) {
    const int64_t b = (int64_t)c * total / G, e = (int64_t)(c + 1) * total / G;
    int64_t cost = e - b;
    for (int64_t x = b; x < e;) {  // this CTA's segments, one per tile
      const int64_t t = x / nchunks, te = std::min(e, (t + 1) * nchunks);
      if (x != t * nchunks) {  // a later part of a tile: stored for the tile's first CTA
        cost += SK_STORE;
        *split = true;
      } else if (te != (t + 1) * nchunks) {  // the first part of a shared tile: this CTA adds the others'
        cost += (int64_t)read * (sk_cta_of((t + 1) * nchunks - 1, total, G) - c);
        *split = true;
      }
      x = te;
    }
    worst = std::max(worst, cost);
  }
  return (int)std::min<int64_t>(worst, INT32_MAX);
}
// *cost: the chosen grid's cost in steps.
// read_req > 0: that read charge instead of SK_READ (tuning sk_partial, for experiments).
int sk_grid(int tiles, int nchunks, int slots, int read_req, bool* split, int* cost) {
  const int read = read_req > 0 ? read_req : SK_READ;
  const int64_t total = (int64_t)tiles * nchunks;
  const int maxg = (int)std::max<int64_t>(1, std::min<int64_t>(slots, (total + 3) / 4));  // >= 4 steps per CTA
  int best_g = maxg, best = INT32_MAX;
  *split = false;
  auto consider = [&](int G) {
    bool sp;
    const int c = sk_cost(total, nchunks, G, read, &sp);
    if (c < best) {
      best = c;
      best_g = G;
      *split = sp;
    }
  };
  for (int s = 1; (int64_t)tiles * s <= maxg; ++s) consider(tiles * s);
  consider(maxg);
  *cost = best;
  return best_g;
}
// Cluster split-K on the warp-specialized kernel: the sum of a tile's partials over distributed shared memory,
// charged as this many steps (an estimate: at batch 256 each CTA reads 7/8 of a 128 KB fp32 tile from its
// cluster, ~2 us against ~0.66 us per step), against stream-K's shared tiles (sk_cost).
constexpr int WS_CLUSTER_STEPS = 4;

}  // namespace
}  // namespace polar_cuda
