// Router inference with fused top-k (semantics of kernels/cpu/sparse.cc):
//  - MLP router, LOGIT scores: the router is linear, so the batch sum of the scores is
//    fc2 . (fc1 . sum_t x[t]): the tokens are summed (fp32), then two fp32-accumulating GEMVs stream fc1 and
//    fc2 once each (a decode step's router then costs its weight bytes at HBM speed, whatever the batch; the
//    GEMM path below re-read them through split-K tiles and took ~4x longer at batch 64). By default the token
//    sum is folded into the first GEMV (xsum_gemv_kernel: each CTA sums its slice of columns), and the second
//    GEMV counts each score into the multi-CTA select's first histogram (tunings router_fold_sum and
//    router_hist_in_gemv; each took ~2-4 us off the decode step on an H200, docs/benchmarks.md). With
//    tuning router_fused = 1 all of it, the top-k included, runs as one cooperative kernel instead
//    (router_fused.cuh; measured slower on an H200 so far, hence not the default).
//  - MLP router, SIGMOID scores (not linear): h = x fc1^T (selective-GEMM kernel, compact [m, rank]), then
//    fc2 with the column-sum epilogue (the per-token scores are summed over the batch after the sigmoid
//    inside the GEMM: the [m, ffn] score matrix never reaches memory).
//  Then the k largest are radix-selected and written in ascending order (ties: lower index first), by
//  every SM at once (cooperative launch; topk_multi_kernel, router_select.cuh: two grid barriers in the usual
//  case, one when the GEMV made the first histogram) or, for fewer than 8192 scores or where that cannot run, by
//  one CTA.
//  - Head router: logits = x w^T + b (fp32), each KV group's scores summed (when the router scores query heads)
//    and the token's top-k groups written in ascending order: on sm_90 with <= 128 units as one thread-block
//    cluster kernel (head_router.cuh; tuning head_router_fused), else through the split-K GEMM and then one
//    warp per token in head_topk_kernel.
//  On sm_90 the routers' kernels are launched as programmatic dependents of the kernel before them (the
//  launch, and for the GEMVs the first weight loads, overlap that kernel's tail), and each kernel zeroes the
//  workspace it was the last to read, so that no closing memset separates the router from the next kernel.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common.cuh"
#include "head_router.cuh"
#include "router_fused.cuh"
#include "router_select.cuh"
#include "sel_gemm.cuh"

namespace polar_cuda {
namespace {

constexpr int TK_THREADS = 1024;

// SM: the keys live in shared memory (n * 4 bytes, one coalesced pass over the scores); otherwise every
// pass re-reads the scores from global memory (a single CTA is then latency-bound).
// Workspace upkeep (every kernel of the router leaves zero what it was the last to read, instead of a closing
// memset): zero[0..nzero) is zeroed, and with clear (SM only) so is each score once read.
template <bool SM>
__global__ void __launch_bounds__(TK_THREADS) topk_kernel(float* __restrict__ score, int n, int k, int32_t* out,
                                                          float* zero, int nzero, int clear) {
  __shared__ unsigned hist[256];
  __shared__ unsigned scan_sh[33];
  __shared__ unsigned s_prefix, s_kk;
  extern __shared__ uint32_t skeys[];
  const int tid = threadIdx.x, lane = tid & 31;
  griddep_wait_and_release();
  for (int i = tid; i < nzero; i += blockDim.x) zero[i] = 0.f;
  if (k >= n || k <= 0) {
    for (int i = tid; i < n; i += blockDim.x) {
      if (k > 0) out[i] = i;
      if (clear) score[i] = 0.f;
    }
    return;
  }
  if (SM) {
    for (int i = tid; i < n; i += blockDim.x) {
      skeys[i] = order_key(score[i]);
      if (clear) score[i] = 0.f;
    }
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
      const unsigned incl = warp_incl_scan(sum);
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

// The multi-CTA select (router_select.cuh) over scores in memory. zero / nzero / clear: as topk_kernel's; the
// state it used (st) is left zeroed too.
__global__ void __launch_bounds__(MT_THREADS) topk_multi_kernel(float* __restrict__ score, int n, int k, int32_t* out,
                                                                 MtState* st, float* zero, int nzero, int clear, int cap, int pre0) {
  const int tid = threadIdx.x, G = gridDim.x, c = blockIdx.x;
  const int per = (n + G - 1) / G;
  const int lo = min(n, c * per), hi = min(n, lo + per);
  griddep_wait_and_release();
  for (int i = c * MT_THREADS + tid; i < nzero; i += G * MT_THREADS) zero[i] = 0.f;
  uint32_t key[MT_KPT];
#pragma unroll
  for (int j = 0; j < MT_KPT; ++j) {
    const int i = lo + tid * MT_KPT + j;
    key[j] = i < hi ? order_key(score[i]) : 0u;
    if (clear && i < hi) score[i] = 0.f;  // each score is read once, by this thread
  }
  mt_select<MT_KPT>(key, lo, hi, k, out, st, nullptr, 0, cap, pre0 != 0);
}

// The multi-CTA select's grid for n scores, 0 where it does not apply (then one CTA selects).
int topk_multi_grid(int n, int k, const DevProps& dp, int* G) {
  *G = 0;
  // small n: one CTA is as fast and needs no cooperative launch (a small model's decode step is launch-bound)
  if (k <= 0 || k >= n || n < 8192) return 0;
  int occ = 0;
  if (kernel_occupancy((const void*)topk_multi_kernel, MT_THREADS, 0, &occ)) return -1;
  if (occ < 1) return 0;
  const int g = std::min(std::min(1024, occ * dp.sms), std::max(1, cdiv(n, MT_THREADS * MT_KPT / 2)));
  if ((int64_t)g * MT_THREADS * MT_KPT >= n) *G = g;
  return 0;
}

// A cooperative grid as a programmatic dependent: tried once per process and kernel, plain cooperative if
// refused (the choice is reported by polar_cuda_topk_launch_mode). Used by the multi-CTA select and the fused
// MLP router.
char g_topk_mode[160] = "none yet";
template <typename... P, typename... A>
int launch_coop(bool pdl, void (*fn)(P...), int G, int threads, size_t smem, cudaStream_t st, A&&... args) {
  static bool coop_pdl_ok = true;
  if (pdl && coop_pdl_ok) {
    const cudaError_t e = launch_ex(true, true, fn, G, threads, smem, st, args...);
    if (e == cudaSuccess) {
      std::snprintf(g_topk_mode, sizeof g_topk_mode, "programmatic");
      return 0;
    }
    cudaGetLastError();  // a launch-configuration error is not sticky
    coop_pdl_ok = false;
    std::snprintf(g_topk_mode, sizeof g_topk_mode, "plain: %s", cudaGetErrorString(e));
  } else if (!pdl) {
    std::snprintf(g_topk_mode, sizeof g_topk_mode, "plain: programmatic launch off (tuning pdl = 0, or below sm_90)");
  }
  POLAR_CU(launch_ex(false, true, fn, G, threads, smem, st, args...));
  return 0;
}

constexpr int HT_WARPS = 4;

// clear: zero the logits once read (they are the router's workspace, which it leaves zeroed)
__global__ void __launch_bounds__(HT_WARPS * 32) head_topk_kernel(float* __restrict__ logits, int64_t ld, int m,
                                                                  int kv, int per_group, int k, int32_t* out,
                                                                  int64_t ld_idx, int clear) {
  extern __shared__ float hs[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int t = blockIdx.x * HT_WARPS + warp;
  griddep_wait_and_release();
  if (t >= m) return;
  float* s = hs + warp * kv;
  float* row = logits + (int64_t)t * ld;
  for (int g = lane; g < kv; g += 32) {
    float a = 0.f;
    for (int u = 0; u < per_group; ++u) {
      a += row[g * per_group + u];
      if (clear) row[g * per_group + u] = 0.f;
    }
    s[g] = a;
  }
  __syncwarp();
  head_select_row(s, kv, k, out + (int64_t)t * ld_idx, lane);
}

// ---- MLP router, LOGIT path: column sum of x, then GEMVs -------------------------------------------
// xs[i] += sum over this CTA's tokens of x[t, i]; 8 columns (16 bytes) per thread. xs starts zeroed.
template <typename T>
__global__ void __launch_bounds__(128) xsum_kernel(const T* __restrict__ x, int64_t ldx, int m, int d, float* xs) {
  griddep_wait_and_release();
  const int c = (blockIdx.x * blockDim.x + threadIdx.x) * 8;
  if (c >= d) return;
  float a[8];
  sum_rows8(x, ldx, m, blockIdx.y * XS_ROWS, c, a);
#pragma unroll
  for (int j = 0; j < 8; ++j) atomicAdd(xs + c + j, a[j]);
}

constexpr int GV_UNROLL = 4;                  // 16-byte loads in flight per lane
constexpr int GV_SEG = 32 * 8 * GV_UNROLL;   // K elements per warp task (one unrolled sweep)

// y[r] (+)= A[r, k-segment] . v[k-segment] (fp32): one warp per (row, segment) task; segments meet in fp32
// atomics (y zeroed) when K > GV_SEG, else y[r] is stored. v is read through the read-only cache (every warp
// of a CTA reads the same segment). K % 8 == 0.
// The weights are constant, so each warp loads its first task's rows before waiting for the kernel that
// writes v (programmatic launch), and the next task's rows before reducing the current one (two tasks in
// flight per warp). zero[0..nzero): a vector the previous kernel read, zeroed once it completed.
// hist (callers pass it only where K <= GV_SEG, so that each y[r] is stored whole): counts each y[r] in the multi-CTA
// select's first-pass histogram (the top 11 bits of its order key), so that the select skips that pass and its grid
// barrier.
template <typename T>
__global__ void __launch_bounds__(256) gemv_kernel(const T* __restrict__ A, int64_t lda, int rows, int K,
                                                   const float* __restrict__ v, float* y, float* zero, int nzero,
                                                   unsigned* hist) {
  const int lane = threadIdx.x & 31;
  const int nseg = (K + GV_SEG - 1) / GV_SEG;
  const int64_t tasks = (int64_t)rows * nseg;
  const int64_t nw = (int64_t)gridDim.x * (blockDim.x >> 5);
  // segment-major order: the warps of one CTA share a segment of v
  auto load = [&](int64_t w, uint4* buf) {
    const int s = (int)(w % nseg);
    const T* a = A + (w / nseg) * lda;
    const int k0 = s * GV_SEG + lane * 8;
#pragma unroll
    for (int u = 0; u < GV_UNROLL; ++u) {
      const int k = k0 + u * 256;
      buf[u] = k < K ? __ldg(reinterpret_cast<const uint4*>(a + k)) : make_uint4(0u, 0u, 0u, 0u);
    }
  };
  int64_t w = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  uint4 cur[GV_UNROLL];
  if (w < tasks) load(w, cur);
  griddep_wait_and_release();
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < nzero; i += gridDim.x * blockDim.x) zero[i] = 0.f;
  for (; w < tasks; w += nw) {
    uint4 nxt[GV_UNROLL];
    if (w + nw < tasks) load(w + nw, nxt);
    const int k0 = (int)(w % nseg) * GV_SEG + lane * 8;
    float acc = 0.f;
#pragma unroll
    for (int u = 0; u < GV_UNROLL; ++u) {
      const int k = k0 + u * 256;
      if (k < K) {
        const float4 v0 = __ldg(reinterpret_cast<const float4*>(v + k));
        const float4 v1 = __ldg(reinterpret_cast<const float4*>(v + k + 4));
        const float2 p0 = Dt<T>::unpack(cur[u].x), p1 = Dt<T>::unpack(cur[u].y);
        const float2 p2 = Dt<T>::unpack(cur[u].z), p3 = Dt<T>::unpack(cur[u].w);
        acc += p0.x * v0.x + p0.y * v0.y + p1.x * v0.z + p1.y * v0.w + p2.x * v1.x + p2.y * v1.y + p3.x * v1.z + p3.y * v1.w;
      }
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if (lane == 0) {
      const int r = (int)(w / nseg);
      if (nseg > 1) atomicAdd(y + r, acc);
      else y[r] = acc;
      if (hist) atomicAdd(hist + (order_key(acc) >> 21), 1u);
    }
#pragma unroll
    for (int u = 0; u < GV_UNROLL; ++u) cur[u] = nxt[u];
  }
}

// The token sum folded into the first GEMV (tuning router_fold_sum): h[r] += sum over this CTA's slice of XG_KS columns
// of W1[r, k] * (sum over the tokens of x[t, k]). The CTA sums its slice of x over the tokens first (m x 64 values,
// read from L2), then streams the 128-byte pieces of its slice of every row (8 lanes per row, 16 bytes each, XG_U
// loads in flight per lane and the next XG_U requested before the current ones are reduced) and adds each row's
// partial sum into h (zeroed: the select zeroes it after reading). One kernel and one dependency instead of the
// token sum's kernel, its atomics into xs and the GEMV's wait for them. d % 8 == 0.
constexpr int XG_KS = 64;         // columns per CTA (128 bytes of each row)
constexpr int XG_THREADS = 256;
// 16-byte loads in flight per lane (4 rows per warp per load; 8 measured 2.5-3 us faster in the decode step than 4)
constexpr int XG_U = 8;
template <typename T>
__global__ void __launch_bounds__(XG_THREADS) xsum_gemv_kernel(const T* __restrict__ x, int64_t ldx, int m, int d,
                                                               const T* __restrict__ W, int64_t ldw, int rows, float* h) {
  __shared__ float part[XG_THREADS / 8][XG_KS + 4];
  __shared__ float xs[XG_KS];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int k0 = blockIdx.x * XG_KS;
  const int kc = (lane & 7) * 8;  // this lane's 8 columns of the slice
  const bool kv = k0 + kc < d;
  const int sub = lane >> 3;      // which of the warp's 4 rows per load
  constexpr int NW = XG_THREADS / 32, XG_RPW = 4 * XG_U;  // rows per warp per step
  auto load = [&](int rb, uint4* buf) {  // rows rb + u * 4 + sub of this warp's step
#pragma unroll
    for (int u = 0; u < XG_U; ++u) {
      const int r = rb + u * 4 + sub;
      buf[u] = r < rows && kv ? __ldg(reinterpret_cast<const uint4*>(W + (int64_t)r * ldw + k0 + kc)) : make_uint4(0u, 0u, 0u, 0u);
    }
  };
  int rb = warp * XG_RPW;
  uint4 cur[XG_U];
  if (rb < rows) load(rb, cur);  // the weights are constant: requested before the wait for x
  griddep_wait_and_release();
  {  // the slice's token sum: thread (g, c) adds tokens g, g + 32, ... of columns c*8 .. c*8+7
    const int c = tid & 7, g = tid >> 3;
    float a[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    if (k0 + c * 8 < d)
      for (int t = g; t < m; t += XG_THREADS / 8) {
        const uint4 v = __ldg(reinterpret_cast<const uint4*>(x + (int64_t)t * ldx + k0 + c * 8));
        const float2 p0 = Dt<T>::unpack(v.x), p1 = Dt<T>::unpack(v.y), p2 = Dt<T>::unpack(v.z), p3 = Dt<T>::unpack(v.w);
        a[0] += p0.x; a[1] += p0.y; a[2] += p1.x; a[3] += p1.y; a[4] += p2.x; a[5] += p2.y; a[6] += p3.x; a[7] += p3.y;
      }
#pragma unroll
    for (int j = 0; j < 8; ++j) part[g][c * 8 + j] = a[j];
    __syncthreads();
    if (tid < XG_KS) {
      float s = 0.f;
      for (int i = 0; i < XG_THREADS / 8; ++i) s += part[i][tid];
      xs[tid] = s;
    }
    __syncthreads();
  }
  float v[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) v[j] = xs[kc + j];
  for (; rb < rows; rb += NW * XG_RPW) {
    uint4 nxt[XG_U];
    if (rb + NW * XG_RPW < rows) load(rb + NW * XG_RPW, nxt);
#pragma unroll
    for (int u = 0; u < XG_U; ++u) {
      const float2 p0 = Dt<T>::unpack(cur[u].x), p1 = Dt<T>::unpack(cur[u].y);
      const float2 p2 = Dt<T>::unpack(cur[u].z), p3 = Dt<T>::unpack(cur[u].w);
      float acc = p0.x * v[0] + p0.y * v[1] + p1.x * v[2] + p1.y * v[3] + p2.x * v[4] + p2.y * v[5] + p3.x * v[6] + p3.y * v[7];
      acc += __shfl_xor_sync(0xffffffffu, acc, 4);  // the row's 8 lanes
      acc += __shfl_xor_sync(0xffffffffu, acc, 2);
      acc += __shfl_xor_sync(0xffffffffu, acc, 1);
      const int r = rb + u * 4 + sub;
      if ((lane & 7) == 0 && r < rows) atomicAdd(h + r, acc);
      cur[u] = nxt[u];
    }
  }
}

template <typename T>
int launch_gemv(bool pdl, const void* A, int64_t lda, int rows, int K, const float* v, float* y, float* zero, int nzero,
                cudaStream_t st, int sms, unsigned* hist = nullptr) {
  // the grid-stride loop assumes every CTA is resident: size the grid by the measured occupancy (a grid of
  // 8 CTAs per SM at 6 resident left a second, partial wave)
  int occ = 0;
  if (kernel_occupancy((const void*)gemv_kernel<T>, 256, 0, &occ)) return -1;
  occ = std::max(1, occ);
  const int64_t tasks = (int64_t)rows * ((K + GV_SEG - 1) / GV_SEG);
  const int grid = (int)std::max<int64_t>(1, std::min<int64_t>((tasks + 7) / 8, (int64_t)sms * occ));
  POLAR_CU(launch_ex(pdl, false, gemv_kernel<T>, grid, 256, 0, st, static_cast<const T*>(A), lda, rows, K, v, y, zero, nzero, hist));
  return 0;
}

// ---- MLP router, LOGIT path as one kernel (router_fused.cuh) ----------------------------------------
char g_router_path[200] = "none yet";

// The fused kernel with a ring of r tasks per warp (6, 4 or 2).
template <typename T>
void (*router_fused_kernel(int r))(RfArgs) {
  return r == 6 ? mlp_router_fused_kernel<T, 6> : r == 4 ? mlp_router_fused_kernel<T, 4> : mlp_router_fused_kernel<T, 2>;
}

// The fused kernel's grid (G CTAs, `per` scores each) and ring depth R (tasks in flight per warp: the deepest,
// up to 4, whose shared memory fits); R = 0 where it cannot run, with the reason in g_router_path.
template <typename T>
int router_fused_plan(const polar_cuda_mlp_router_params* p, const DevProps& dp, int* G, int* R, int* per) {
  *R = 0;
  const int64_t tasks = (int64_t)p->rank * cdiv(p->d, RF_SEG) + (int64_t)p->ffn * cdiv(p->rank, RF_SEG);
  // at least 64 weight tasks (128 KB) per CTA: a small router gets fewer CTAs and cheaper grid barriers
  *G = (int)std::max<int64_t>(1, std::min<int64_t>(dp.sms, (tasks + 63) / 64));
  *per = cdiv(p->ffn, *G);
  if (*per > RF_THREADS * RF_KPT) {
    std::snprintf(g_router_path, sizeof g_router_path, "separate kernels: %d scores per CTA exceed the fused select's %d", *per,
                  RF_THREADS * RF_KPT);
    return 0;
  }
  // Four tasks in flight per warp by default: on the H200 (OPT-66B's router at batch 64) 4 and 2 took 0.0605 and
  // 0.0603 ms, 6 took 0.0644 (one call). POLAR_CUDA_ROUTER_RING (experiments): the deepest ring to try.
  static const char* ring_env = std::getenv("POLAR_CUDA_ROUTER_RING");
  static const int ring_max = ring_env && *ring_env ? std::atoi(ring_env) : 4;
  for (int r : {6, 4, 2}) {
    if (r > ring_max) continue;
    int occ = 0;
    if (kernel_occupancy((const void*)router_fused_kernel<T>(r), RF_THREADS, (int)rf_smem_bytes(r, *per), &occ)) return -1;
    if (occ >= 1) {
      *R = r;
      std::snprintf(g_router_path, sizeof g_router_path, "fused: %d CTAs x %d threads, %d weight tasks in flight per warp", *G,
                    RF_THREADS, r);
      return 0;
    }
  }
  std::snprintf(g_router_path, sizeof g_router_path, "separate kernels: the fused kernel's shared memory does not fit");
  return 0;
}

// Runs the fused router where it fits (*ran = true); otherwise leaves the call to the separate kernels.
int mlp_router_fused(const polar_cuda_mlp_router_params* p, char* ws, size_t xs_off, size_t hf_off, size_t mt_off,
                     const DevProps& dp, bool pdl, cudaStream_t st, bool* ran) {
  *ran = false;
  return with_dtype(p->dtype, "polar_cuda_mlp_router", [&](auto t) {
    using T = decltype(t);
    int G = 0, R = 0, per = 0;
    if (router_fused_plan<T>(p, dp, &G, &R, &per)) return -1;
    if (R == 0) return 0;
    RfArgs a{};
    a.x = p->x; a.ldx = p->ldx; a.m = p->m; a.d = p->d; a.rank = p->rank; a.ffn = p->ffn; a.k = p->k;
    a.fc1 = p->fc1; a.fc2 = p->fc2;
    a.xs = reinterpret_cast<float*>(ws + xs_off);
    a.hf = reinterpret_cast<float*>(ws + hf_off);
    a.st = reinterpret_cast<MtState*>(ws + mt_off);
    a.cap = tuning().select_cap;
    a.out_idx = p->out_idx; a.out_scores = p->out_scores; a.per = per;
    static const char* late_env = std::getenv("POLAR_CUDA_ROUTER_LATE");  // experiments (router_fused.cuh)
    static const bool late = late_env && *late_env && *late_env != '0';
    a.early = !late;
    const size_t sm = rf_smem_bytes(R, per);
    if (launch_coop(pdl, router_fused_kernel<T>(R), G, RF_THREADS, sm, st, a))
      return -1;
    *ran = true;
    return 0;
  });
}

// ---- MLP router -------------------------------------------------------------------------------------
struct MlpRouterLayout {
  size_t g1, g2, h_off, xs_off, hf_off, mt_off, s_off, total;
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
  L->xs_off = L->h_off + align_up((size_t)p->m * p->rank * 2, 256);
  L->hf_off = L->xs_off + align_up((size_t)p->d * 4, 256);
  L->mt_off = L->hf_off + align_up((size_t)p->rank * 4, 256);
  L->s_off = L->mt_off + align_up(sizeof(MtState), 256);
  L->total = L->s_off + (p->out_scores ? 0 : align_up((size_t)p->ffn * 4, 256));
  return 0;
}

// ---- head router ------------------------------------------------------------------------------------
// Its GEMM has few output tiles (units x tokens) and a long K: the generic split choice filled the GPU with
// one-chunk CTAs whose fp32 partial tiles then all met in atomics on the same few KB. About 4 chunks per CTA
// keeps the atomics few while still spreading the weight stream (H100, opt-66b batch 64: 0.023 ms at 4
// chunks per CTA, 0.024 at 8, 0.028 at 1, 0.070 unsplit; bench --sweep).
int head_router_splits(int d) {
  if (tuning().router_splits > 0) return tuning().router_splits;
  const int chunks = cdiv(d, 64);
  return std::max(1, std::min(chunks, cdiv(chunks, 4)));
}

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

char g_head_path[200] = "none yet";

// The one-kernel head router's shape (head_router.cuh). C = 0 where it does not apply, and why says why.
struct HrPlan {
  int up = 0, kc = 0, C = 0, groups = 0;
  size_t smem = 0;
  char why[120] = "";
};

// The largest cluster (16, 8, 4, 2, 1) that leaves each CTA at least 256 of K (a chunk of 576 at OPT-66B's
// d = 9216) and fits on the GPU with its tiles in shared memory.
int head_router_plan(const polar_cuda_head_router_params* p, const DevProps& dp, HrPlan* pl) {
  *pl = HrPlan{};
  if (!tuning().head_router_fused) {
    std::snprintf(pl->why, sizeof pl->why, "tuning head_router_fused = 0");
    return 0;
  }
  if (p->units > HR_MAXU) {
    std::snprintf(pl->why, sizeof pl->why, "%d units (the one-kernel router takes at most %d)", p->units, HR_MAXU);
    return 0;
  }
  if (dp.major < 9) {
    std::snprintf(pl->why, sizeof pl->why, "thread-block clusters need sm_90");
    return 0;
  }
  const int up = cdiv(p->units, 16) * 16;
  int C = HR_MAXC;
  while (C > 1 && p->d < 256 * C) C /= 2;
  for (; C >= 1; C /= 2) {
    const int kc = cdiv(cdiv(p->d, C), 16) * 16;
    const size_t smem = hr_smem_bytes(up, kc);
    int n = 0;
    if (with_dtype(p->dtype, "polar_cuda_head_router", [&](auto t) {
          using T = decltype(t);
          const void* fn = (const void*)head_router_kernel<T>;
          // 16 is a non-portable cluster size: allowed per kernel (set on every call: the setting is per device;
          // an error just rules it out)
          if (C > 8 && cudaFuncSetAttribute(fn, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) != cudaSuccess) {
            cudaGetLastError();
            return 0;
          }
          return cluster_occupancy(fn, HR_THREADS, (int)smem, C, &n);
        }))
      return -1;
    if (n >= 1) {
      pl->up = up;
      pl->kc = kc;
      pl->C = C;
      pl->groups = cdiv(p->m, HR_TOK);
      pl->smem = smem;
      return 0;
    }
  }
  std::snprintf(pl->why, sizeof pl->why, "no cluster of its tiles fits in shared memory on this GPU");
  return 0;
}

}  // namespace
}  // namespace polar_cuda

using namespace polar_cuda;

extern "C" const char* polar_cuda_topk_launch_mode(void) { return g_topk_mode; }
extern "C" const char* polar_cuda_mlp_router_path(void) { return g_router_path; }

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
  DevProps dp;
  if (dev_props(&dp)) return -1;
  // sm_90: each kernel is launched as a programmatic dependent of the one before (weights stream while the
  // producer of their vector finishes), and the kernels zero what they were the last to read (no closing memset)
  const bool pdl = pdl_on(dp);
  // POLAR_CUDA_ROUTER_GEMM=1: LOGIT scores through the per-token GEMM path too (comparisons, debugging)
  static const bool logit_gemm = std::getenv("POLAR_CUDA_ROUTER_GEMM") != nullptr;
  const bool gemv = p->score == POLAR_CUDA_SCORE_LOGIT && !logit_gemm;
  float* hf = reinterpret_cast<float*>(ws + L.hf_off);
  if (gemv && tuning().router_fused) {
    bool ran = false;
    if (mlp_router_fused(p, ws, L.xs_off, L.hf_off, L.mt_off, dp, pdl, st, &ran)) return -1;
    if (ran) return 0;
  } else {
    std::snprintf(g_router_path, sizeof g_router_path, "separate kernels: %s",
                  !gemv                       ? "SIGMOID scores (or POLAR_CUDA_ROUTER_GEMM) take the GEMM path"
                  : tuning().router_fold_sum ? "tuning router_fused = 0; token sum folded into the first GEMV"
                                              : "tuning router_fused = 0; token-sum kernel, then the first GEMV (router_fold_sum = 0)");
  }
  int G = 0;  // the multi-CTA select's grid (0: one CTA selects)
  if (topk_multi_grid(p->ffn, p->k, dp, &G)) return -1;
  // the second GEMV adds the select's first-pass histogram where it stores each score whole (rank <= GV_SEG)
  const bool pre0 = gemv && G > 0 && p->rank <= GV_SEG && tuning().router_hist_in_gemv;
  if (gemv)
    std::snprintf(g_router_path + std::strlen(g_router_path), sizeof g_router_path - std::strlen(g_router_path), "; %s",
                  pre0                           ? "the second GEMV makes the multi-CTA select's first histogram"
                  : !tuning().router_hist_in_gemv ? "the select makes its first histogram (router_hist_in_gemv = 0)"
                  : G == 0                        ? "one CTA selects (k = 0, k = ffn or fewer than 8192 scores)"
                                                  : "the select makes its first histogram (rank > 1024)");
  MtState* mts = reinterpret_cast<MtState*>(ws + L.mt_off);
  unsigned* hist0 = pre0 ? mts->hist[0] : nullptr;
  if (gemv) {
    float* xs = reinterpret_cast<float*>(ws + L.xs_off);  // zeroed (workspace contract)
    if (p->rank > GV_SEG) POLAR_CU(cudaMemsetAsync(scores, 0, (size_t)p->ffn * 4, st));  // fc2 segments add
    if (with_dtype(p->dtype, "polar_cuda_mlp_router", [&](auto t) {
          using T = decltype(t);
          if (tuning().router_fold_sum) {
            POLAR_CU(launch_ex(pdl, false, xsum_gemv_kernel<T>, cdiv(p->d, XG_KS), XG_THREADS, 0, st, static_cast<const T*>(p->x),
                               p->ldx, p->m, p->d, static_cast<const T*>(p->fc1), (int64_t)p->d, p->rank, hf));
            return launch_gemv<T>(pdl, p->fc2, p->rank, p->ffn, p->rank, hf, scores, nullptr, 0, st, dp.sms, hist0);
          }
          POLAR_CU(launch_ex(pdl, false, xsum_kernel<T>, dim3(cdiv(p->d, 8 * 128), cdiv(p->m, XS_ROWS)), 128, 0, st,
                             static_cast<const T*>(p->x), p->ldx, p->m, p->d, xs));
          if (launch_gemv<T>(pdl, p->fc1, p->d, p->rank, p->d, xs, hf, nullptr, 0, st, dp.sms)) return -1;
          return launch_gemv<T>(pdl, p->fc2, p->rank, p->ffn, p->rank, hf, scores, xs, p->d, st, dp.sms, hist0);  // zeroes xs
        }))
      return -1;
  } else {
    g1.C = h;
    if (gemm_run(p->dtype, A_ROWS, g1, POLAR_IMPL_AUTO, 0, st, ws + L.g1, L.g2 - L.g1, nullptr, "polar_cuda_mlp_router")) return -1;
    POLAR_CU(cudaMemsetAsync(scores, 0, (size_t)p->ffn * 4, st));
    g2.B = h;
    g2.colsum = scores;
    if (gemm_run(p->dtype, A_ROWS, g2, POLAR_IMPL_AUTO, 0, st, ws + L.g2, L.h_off - L.g2, nullptr, "polar_cuda_mlp_router")) return -1;
  }
  // the select zeroes hf (gemv path) and the internal scores as it reads them, where it keeps them in registers
  // or shared memory
  float* zero = gemv ? hf : nullptr;
  const int nzero = gemv ? p->rank : 0;
  bool scores_left = false;
  if (G > 0) {
    if (launch_coop(pdl, topk_multi_kernel, G, MT_THREADS, 0, st, scores, p->ffn, p->k, p->out_idx, mts, zero, nzero,
                    (int)!p->out_scores, tuning().select_cap, (int)pre0))
      return -1;
  } else {  // one CTA, with the keys in shared memory when they fit
    const int sm = p->ffn * 4;
    int occ = 0;
    if (kernel_occupancy((const void*)topk_kernel<true>, TK_THREADS, sm, &occ)) return -1;
    if (occ >= 1) {
      POLAR_CU(launch_ex(pdl, false, topk_kernel<true>, 1, TK_THREADS, sm, st, scores, p->ffn, p->k, p->out_idx, zero, nzero,
                         (int)!p->out_scores));
    } else {
      POLAR_CU(launch_ex(pdl, false, topk_kernel<false>, 1, TK_THREADS, 0, st, scores, p->ffn, p->k, p->out_idx, zero, nzero, 0));
      scores_left = !p->out_scores;
    }
  }
  // leave the workspace zero-filled (what this path used of it), as every call does
  if (!gemv) POLAR_CU(cudaMemsetAsync(ws + L.h_off, 0, L.total - L.h_off, st));
  else if (scores_left) POLAR_CU(cudaMemsetAsync(scores, 0, (size_t)p->ffn * 4, st));
  return 0;
}

extern "C" const char* polar_cuda_head_router_path(void) { return g_head_path; }

extern "C" size_t polar_cuda_head_router_workspace(const polar_cuda_head_router_params* p) {
  GemmArgs g;
  size_t n = 0;
  if (head_router_args(p, &g) || gemm_run(p->dtype, A_ROWS, g, POLAR_IMPL_AUTO, head_router_splits(p->d), nullptr, nullptr, 0, &n, "polar_cuda_head_router"))
    return 0;
  // the GEMM path's (the one-kernel path needs none): the path is chosen per call (tuning, device)
  return align_up(n, 256) + (p->out_logits ? 0 : align_up((size_t)p->m * p->units * 4, 256));
}

extern "C" int polar_cuda_head_router(const polar_cuda_head_router_params* p) {
  GemmArgs g;
  size_t n = 0;
  HrPlan pl;
  DevProps dp;
  if (head_router_args(p, &g) || dev_props(&dp) || head_router_plan(p, dp, &pl)) return -1;
  char* ws = static_cast<char*>(p->workspace);
  cudaStream_t st = (cudaStream_t)p->stream;
  if (pl.C > 0) {
    HrArgs a{};
    a.x = p->x; a.ldx = p->ldx; a.w = p->w; a.b = p->b;
    a.m = p->m; a.d = p->d; a.units = p->units; a.up = pl.up;
    a.kv = p->kv_heads; a.per = p->units / p->kv_heads; a.k = p->k;
    a.kc = pl.kc;
    a.out = p->out_idx; a.ld_idx = p->ld_idx; a.out_logits = p->out_logits;
    // a programmatic dependent of the kernel before it (sm_90): the weight tile loads overlap that kernel's tail
    if (with_dtype(p->dtype, "polar_cuda_head_router", [&](auto t) {
          using T = decltype(t);
          POLAR_CU(launch_ex_cluster(pdl_on(dp), false, pl.C, head_router_kernel<T>, dim3(pl.groups, pl.C), HR_THREADS, pl.smem, st, a));
          return 0;
        }))
      return -1;
    std::snprintf(g_head_path, sizeof g_head_path, "one kernel: clusters of %d CTAs (K chunks of %d) x %d token groups", pl.C, pl.kc,
                  pl.groups);
    return 0;
  }
  std::snprintf(g_head_path, sizeof g_head_path, "GEMM + top-k kernel: %s", pl.why);
  if (gemm_run(p->dtype, A_ROWS, g, POLAR_IMPL_AUTO, head_router_splits(p->d), nullptr, nullptr, 0, &n, "polar_cuda_head_router"))
    return -1;
  const size_t gws = align_up(n, 256);
  const size_t total = gws + (p->out_logits ? 0 : align_up((size_t)p->m * p->units * 4, 256));
  POLAR_REQ(total == 0 || (p->workspace && p->workspace_bytes >= total),
            "polar_cuda_head_router: expected a workspace of at least %zu bytes, received %zu", total, p->workspace_bytes);
  float* logits = p->out_logits ? p->out_logits : reinterpret_cast<float*>(ws + gws);
  g.C = logits;
  if (gemm_run(p->dtype, A_ROWS, g, POLAR_IMPL_AUTO, head_router_splits(p->d), st, ws, gws, nullptr, "polar_cuda_head_router")) return -1;
  if (p->k == 0) {
    if (!p->out_logits) POLAR_CU(cudaMemsetAsync(ws + gws, 0, total - gws, st));
    return 0;
  }
  const int per_group = p->units / p->kv_heads;
  const size_t sm = (size_t)HT_WARPS * p->kv_heads * 4;
  // a programmatic dependent of the GEMM (sm_90); it zeroes the internal logits as it reads them, so the
  // workspace is left zero-filled, as every call does
  POLAR_CU(launch_ex(pdl_on(dp), false, head_topk_kernel, cdiv(p->m, HT_WARPS), HT_WARPS * 32, sm, st, logits,
                     (int64_t)p->units, p->m, p->kv_heads, per_group, p->k, p->out_idx, p->ld_idx, (int)!p->out_logits));
  return 0;
}
