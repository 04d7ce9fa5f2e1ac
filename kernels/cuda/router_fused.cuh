// The MLP router's LOGIT path as one cooperative kernel: token sum -> h = fc1 . xs -> scores = fc2 . h ->
// top-k, with grid-wide barriers between the phases.
//
// Why: as separate kernels (token sum, two GEMVs, the multi-CTA select) the router took 53 us of the OPT-66B
// decode step on an H200 for 95 MB of weights (22 us at HBM speed): each kernel waited for the one before,
// and the second GEMV's 76 MB could only start streaming once the first's CTAs left the SMs. Here each warp
// streams its weight tasks through its own ring of shared-memory slots (cp.async, R tasks in flight), in
// order across the phases: the ring is filled before the kernel waits for its input (the weights are
// constant) and keeps filling with the next phase's rows while a phase waits at a barrier, so fc1's rows and
// the first of fc2's are in shared memory by the time the token sum is done. A CTA computes the scores of a
// contiguous slice of fc2's rows and keeps them in shared memory, so the select starts from them (no
// score round trip through memory, no fourth launch).
//
// Each lane copies and later reads the same 16-byte pieces of a task, so a slot needs no barrier: the lane's
// own cp.async.wait_group makes its copies visible to it. Included only by router.cu.
//
// Measured (H200, OPT-66B's router at batch 64, docs/benchmarks.md): 0.060 ms (4 tasks in flight per warp; 0.064
// with 6) against 0.055 for the separate kernels, so it is not the default (tuning router_fused = 1 selects it).
// A rank-8 probe (~1 MB of weights) takes 0.040 ms on either path: the router's time is mostly its fixed chain
// (token sum, barriers, and a select of ~16 us), not its weight stream.
#pragma once
#include <cstdint>

#include "common.cuh"
#include "router_select.cuh"

namespace polar_cuda {
namespace {

constexpr int RF_THREADS = 512;
constexpr int RF_WARPS = RF_THREADS / 32;
constexpr int RF_SEG = 1024;              // K elements per warp task: 32 lanes x 4 pieces of 8
constexpr int RF_TASK_BYTES = RF_SEG * 2;  // one slot of a warp's ring
constexpr int RF_KPT = 8;                 // keys per thread in the select: a CTA's slice is <= RF_THREADS * RF_KPT

constexpr int XS_ROWS = 8;  // tokens per thread of the token sum (partial sums meet in fp32 atomics)

// s[0..8) = the sum over the tokens [t0, min(m, t0 + XS_ROWS)) of x's 8 columns from c, in fp32.
template <typename T>
__device__ __forceinline__ void sum_rows8(const T* __restrict__ x, int64_t ldx, int m, int t0, int c, float* s) {
  uint4 v[XS_ROWS];  // every row's load in flight before the first add (a rolled loop waited for each)
#pragma unroll
  for (int u = 0; u < XS_ROWS; ++u)
    v[u] = t0 + u < m ? __ldg(reinterpret_cast<const uint4*>(x + (int64_t)(t0 + u) * ldx + c)) : make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
  for (int j = 0; j < 8; ++j) s[j] = 0.f;
#pragma unroll
  for (int u = 0; u < XS_ROWS; ++u) {
    const uint32_t q[4] = {v[u].x, v[u].y, v[u].z, v[u].w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float2 f = Dt<T>::unpack(q[j]);
      s[2 * j] += f.x;
      s[2 * j + 1] += f.y;
    }
  }
}

struct RfArgs {
  const void* x;
  int64_t ldx;
  int m, d, rank, ffn, k;
  const void* fc1;  // [rank, d]
  const void* fc2;  // [ffn, rank]
  float* xs;        // [d], zeroed on entry and on exit
  float* hf;        // [rank], zeroed on entry and on exit
  MtState* st;      // zeroed on entry and on exit
  int32_t* out_idx;
  float* out_scores;  // optional [ffn]
  int per;            // fc2 rows (scores) per CTA
  int early;          // 1: the ring's first tasks are issued before the wait for x (0: after the token sum)
  int cap;            // mt_select's two-barrier limit (tuning select_cap)
};

// Shared memory: the rings (RF_WARPS x R slots) and the CTA's scores.
inline size_t rf_smem_bytes(int R, int per) { return (size_t)RF_WARPS * R * RF_TASK_BYTES + (size_t)per * 4; }

template <typename T, int R>
__global__ void __launch_bounds__(RF_THREADS, 1) mlp_router_fused_kernel(const RfArgs a) {
  extern __shared__ __align__(16) char rf_smem[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int G = gridDim.x, c = blockIdx.x;
  float* sacc = reinterpret_cast<float*>(rf_smem + (size_t)RF_WARPS * R * RF_TASK_BYTES);
  const T* fc1 = static_cast<const T*>(a.fc1);
  const T* fc2 = static_cast<const T*>(a.fc2);
  const int nseg1 = (a.d + RF_SEG - 1) / RF_SEG, nseg2 = (a.rank + RF_SEG - 1) / RF_SEG;
  // this CTA's fc1 tasks: a contiguous range of the (segment, row) tasks, segment-major, so that a warp's
  // consecutive tasks mostly share a segment of xs
  const int64_t t1 = (int64_t)a.rank * nseg1;
  const int64_t a1 = t1 * c / G, n1 = t1 * (c + 1) / G - a1;
  // ... and its fc2 tasks: the (segment, row) tasks of its slice of rows
  const int lo = min(a.ffn, c * a.per), nrows = min(a.ffn, lo + a.per) - lo;
  const int n2 = nrows * nseg2;
  const int n1w = n1 > warp ? (int)((n1 - warp + RF_WARPS - 1) / RF_WARPS) : 0;  // this warp's fc1 tasks
  const int nw = n1w + (n2 > warp ? (n2 - warp + RF_WARPS - 1) / RF_WARPS : 0);
  // A walk over this warp's tasks in order: task j, its segment and its row (fc1: the row of h; fc2: the row
  // within the CTA's slice), stepped without a division per task (a first version divided 64-bit task ids
  // for every task; the two measured the same on the H200).
  struct Cursor {
    int j, seg, row;
  };
  auto to_fc2 = [&](Cursor& q) {  // q.j = n1w: this warp's first fc2 task, if it has one
    q.seg = q.row = 0;
    if (q.j < nw) {
      q.seg = warp / nrows;
      q.row = warp % nrows;
    }
  };
  auto first = [&](Cursor& q) {
    q.j = 0;
    if (n1w == 0) return to_fc2(q);
    const int64_t t = a1 + warp;
    q.seg = (int)(t / a.rank);
    q.row = (int)(t % a.rank);
  };
  auto next = [&](Cursor& q) {
    ++q.j;
    if (q.j == n1w) return to_fc2(q);
    const int rows = q.j < n1w ? a.rank : nrows;
    for (q.row += RF_WARPS; q.row >= rows; q.row -= rows) ++q.seg;
  };
  const uint32_t ring = smem_u32(rf_smem) + (uint32_t)(warp * R * RF_TASK_BYTES);
  // Copies the task at the issue cursor into its slot and steps the cursor; one commit group per task slot,
  // also past the last task, so that every lane counts the same groups.
  Cursor ci;
  first(ci);
  auto issue = [&]() {
    if (ci.j < nw) {
      const bool f1 = ci.j < n1w;
      const T* src = f1 ? fc1 + (int64_t)ci.row * a.d + ci.seg * RF_SEG : fc2 + (int64_t)(lo + ci.row) * a.rank + ci.seg * RF_SEG;
      const int lim = (f1 ? a.d : a.rank) - ci.seg * RF_SEG;
      const uint32_t dst = ring + (uint32_t)((ci.j % R) * RF_TASK_BYTES + lane * 16);
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int kk = lane * 8 + u * 256;
        cp_async16(dst + u * 512, kk < lim ? src + kk : src, kk < lim);
      }
      next(ci);
    }
    cp_async_commit();
  };
  // the weights are constant: start streaming them before waiting for the kernel that writes x
  if (a.early) {
#pragma unroll
    for (int j = 0; j < R; ++j) issue();
  }
  griddep_wait_and_release();
  for (int i = tid; i < a.per; i += RF_THREADS) sacc[i] = 0.f;

  // 1. xs = sum over the tokens of x (fp32; x is the previous kernel's output, complete after the wait)
  {
    const T* x = static_cast<const T*>(a.x);
    const int ncg = a.d / 8, ntb = (a.m + XS_ROWS - 1) / XS_ROWS;
    for (int64_t w = (int64_t)c * RF_THREADS + tid; w < (int64_t)ncg * ntb; w += (int64_t)G * RF_THREADS) {
      const int cgi = (int)(w % ncg);
      float s[8];
      sum_rows8(x, a.ldx, a.m, (int)(w / ncg) * XS_ROWS, cgi * 8, s);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        if (ntb > 1) atomicAdd(a.xs + cgi * 8 + j, s[j]);
        else a.xs[cgi * 8 + j] = s[j];
      }
    }
  }
  if (!a.early) {
#pragma unroll
    for (int j = 0; j < R; ++j) issue();
  }
  cg::grid_group grid = cg::this_grid();
  grid.sync();

  // the 32 vector elements of a segment that this lane multiplies (read from L2: written in this kernel)
  float vv[32];
  auto load_vec = [&](const float* v, int len, int seg) {
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int k = seg * RF_SEG + lane * 8 + u * 256;
      const bool ok = k < len;
      const float4 p0 = ok ? __ldcg(reinterpret_cast<const float4*>(v + k)) : make_float4(0.f, 0.f, 0.f, 0.f);
      const float4 p1 = ok ? __ldcg(reinterpret_cast<const float4*>(v + k + 4)) : make_float4(0.f, 0.f, 0.f, 0.f);
      vv[u * 8 + 0] = p0.x, vv[u * 8 + 1] = p0.y, vv[u * 8 + 2] = p0.z, vv[u * 8 + 3] = p0.w;
      vv[u * 8 + 4] = p1.x, vv[u * 8 + 5] = p1.y, vv[u * 8 + 6] = p1.z, vv[u * 8 + 7] = p1.w;
    }
  };
  // this warp's tasks [j0, j1): y[row] (+)= the task's weights . v (len elements); each consumed slot is refilled
  // with the task R later, which may belong to the next phase
  Cursor cc;  // the task consumed next
  first(cc);
  auto gemv_phase = [&](int j1, const float* v, int len, bool add, float* y) {
    int vseg = -1;
    for (; cc.j < j1; next(cc)) {
      if (cc.seg != vseg) load_vec(v, len, vseg = cc.seg);
      cp_async_wait<R - 1>();  // groups 0..j are complete: R - 1 younger ones may still be in flight
      const char* slot = rf_smem + (size_t)(warp * R + cc.j % R) * RF_TASK_BYTES + lane * 16;
      float acc = 0.f;
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const uint4 w = *reinterpret_cast<const uint4*>(slot + u * 512);
        const uint32_t q[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float2 f = Dt<T>::unpack(q[e]);
          acc += f.x * vv[u * 8 + 2 * e] + f.y * vv[u * 8 + 2 * e + 1];
        }
      }
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
      if (lane == 0) {
        if (add) atomicAdd(y + cc.row, acc);
        else y[cc.row] = acc;
      }
      issue();  // the task R later into this slot (the shuffles consumed every read of it)
    }
  };

  // 2. h = fc1 . xs
  gemv_phase(n1w, a.xs, a.d, nseg1 > 1, a.hf);
  grid.sync();
  for (int i = c * RF_THREADS + tid; i < a.d; i += G * RF_THREADS) a.xs[i] = 0.f;  // every CTA is past its reads
  // 3. this CTA's scores = fc2[lo .. lo + nrows) . h, into shared memory
  gemv_phase(nw, a.hf, a.rank, nseg2 > 1, sacc);
  cp_async_wait<0>();  // (only empty groups are left)
  __syncthreads();
  if (a.out_scores)
    for (int i = tid; i < nrows; i += RF_THREADS) a.out_scores[lo + i] = sacc[i];

  // 4. the select over the scores in shared memory; h is zeroed after its first barrier
  if (a.k > 0 && a.k < a.ffn) {
    uint32_t key[RF_KPT];
#pragma unroll
    for (int j = 0; j < RF_KPT; ++j) {
      const int i = tid * RF_KPT + j;
      key[j] = i < nrows ? order_key(sacc[i]) : 0u;
    }
    mt_select<RF_KPT>(key, lo, lo + nrows, a.k, a.out_idx, a.st, a.hf, a.rank, a.cap);
  } else {
    if (a.k >= a.ffn)
      for (int i = tid; i < nrows; i += RF_THREADS) a.out_idx[lo + i] = lo + i;
    grid.sync();
    for (int i = c * RF_THREADS + tid; i < a.rank; i += G * RF_THREADS) a.hf[i] = 0.f;
  }
}

}  // namespace
}  // namespace polar_cuda
