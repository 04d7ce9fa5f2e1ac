// Shared pieces of the CUDA backend: error macros, the dtype table, PTX wrappers (cp.async, ldmatrix,
// mma.sync, wgmma), device properties. Internal to kernels/cuda.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include <utility>

#include "polar/common.h"
#include "polar/cuda.h"

// CUDA failures name the call, file and line (ggml's shape, without abort).
#define POLAR_CU(call)                                                                                  \
  do {                                                                                                  \
    cudaError_t e_ = (call);                                                                            \
    if (e_ != cudaSuccess)                                                                              \
      return polar_set_error("CUDA call %s failed: %s (%s:%d)", #call, cudaGetErrorString(e_), __FILE__, \
                             __LINE__);                                                                 \
  } while (0)
#define POLAR_CU_LAUNCH(what)                                                                            \
  do {                                                                                                   \
    cudaError_t e_ = cudaGetLastError();                                                                 \
    if (e_ != cudaSuccess)                                                                               \
      return polar_set_error("CUDA launch of %s failed: %s (%s:%d)", what, cudaGetErrorString(e_), __FILE__, \
                             __LINE__);                                                                  \
  } while (0)
#define POLAR_REQ(cond, ...)                         \
  do {                                               \
    if (!(cond)) return polar_set_error(__VA_ARGS__); \
  } while (0)

namespace polar_cuda {

// ---- the dtype table: every kernel is a template over T, instantiated from this list --------------
#define POLAR_CUDA_DTYPES(X) X(POLAR_F16, __half) X(POLAR_BF16, __nv_bfloat16)

template <typename T>
struct Dt;
template <>
struct Dt<__half> {
  static constexpr const char* name = "f16";
  __device__ __forceinline__ static float f(__half x) { return __half2float(x); }
  __device__ __forceinline__ static __half t(float x) { return __float2half_rn(x); }
  __device__ __forceinline__ static uint32_t pack(float a, float b) {
    __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&h);
  }
  __device__ __forceinline__ static float2 unpack(uint32_t u) {
    __half2 h = *reinterpret_cast<__half2*>(&u);
    return __half22float2(h);
  }
};
template <>
struct Dt<__nv_bfloat16> {
  static constexpr const char* name = "bf16";
  __device__ __forceinline__ static float f(__nv_bfloat16 x) { return __bfloat162float(x); }
  __device__ __forceinline__ static __nv_bfloat16 t(float x) { return __float2bfloat16_rn(x); }
  __device__ __forceinline__ static uint32_t pack(float a, float b) {
    __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&h);
  }
  __device__ __forceinline__ static float2 unpack(uint32_t u) {
    __nv_bfloat162 h = *reinterpret_cast<__nv_bfloat162*>(&u);
    return __bfloat1622float2(h);
  }
};

// Calls fn(T{}) for the dtype; generic lambdas give one body for every row of the table.
template <typename Fn>
int with_dtype(polar_dtype dt, const char* who, Fn&& fn) {
  switch (dt) {
#define POLAR_DT_CASE(id, T) \
  case id:                   \
    return fn(T{});
    POLAR_CUDA_DTYPES(POLAR_DT_CASE)
#undef POLAR_DT_CASE
    default:
      return polar_set_error("%s: expected dtype f16 or bf16, received %d", who, (int)dt);
  }
}

// ---- device properties (cached per device) --------------------------------------------------------
struct DevProps {
  int device, sms, major, minor, l2, smem_optin;
  bool h200;  // the device's name has "H200" in it (H200, GH200): selects the planner's H200 profile
};
int dev_props(DevProps* out);  // current device
// CTAs per SM of kernel fn at (threads, dynamic shared memory bytes) on the current device, cached per
// (device, fn, threads, smem). A kernel that needs more than the default 48 KB gets its dynamic shared-memory
// limit raised to the most the device allows next to its static shared memory (never lowered again by a
// smaller request). *occ = 0: it cannot run with that much.
int kernel_occupancy(const void* fn, int threads, int smem, int* occ);
// How many clusters of (1, cluster, 1) such CTAs fit on the GPU at once (sm_90; cached the same way).
int cluster_occupancy(const void* fn, int threads, int smem, int cluster, int* n);
bool wgmma_usable();           // sm_90 device and the sm_90a kernels are in this binary

// Launch attributes: pdl, as a programmatic dependent of the previous kernel in the stream (the kernel must call
// griddep_wait before it reads what earlier work wrote); coop, a cooperative grid; cluster_y > 0, thread-block
// clusters of (1, cluster_y, 1). Writes at most 3 into at; returns how many.
inline int launch_attrs(cudaLaunchAttribute* at, bool pdl, bool coop, int cluster_y) {
  int na = 0;
  if (pdl) {
    at[na].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[na++].val.programmaticStreamSerializationAllowed = 1;
  }
  if (coop) {
    at[na].id = cudaLaunchAttributeCooperative;
    at[na++].val.cooperative = 1;
  }
  if (cluster_y > 0) {
    at[na].id = cudaLaunchAttributeClusterDimension;
    at[na].val.clusterDim.x = 1;
    at[na].val.clusterDim.y = cluster_y;
    at[na++].val.clusterDim.z = 1;
  }
  return na;
}

// Launches fn(args...) on st with launch_attrs' pdl, coop and cluster_y.
template <typename... P, typename... A>
cudaError_t launch_ex_cluster(bool pdl, bool coop, int cluster_y, void (*fn)(P...), dim3 grid, dim3 block, size_t smem,
                              cudaStream_t st, A&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = st;
  cudaLaunchAttribute at[3];
  cfg.attrs = at;
  cfg.numAttrs = launch_attrs(at, pdl, coop, cluster_y);
  return cudaLaunchKernelEx(&cfg, fn, static_cast<P>(args)...);
}
// ... without clusters.
template <typename... P, typename... A>
cudaError_t launch_ex(bool pdl, bool coop, void (*fn)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                      A&&... args) {
  return launch_ex_cluster(pdl, coop, 0, fn, grid, block, smem, st, std::forward<A>(args)...);
}

// ---- PTX wrappers ------------------------------------------------------------------------------
// Programmatic dependent launch (sm_90): a kernel may start while the previous one in the stream finishes.
// griddepcontrol.wait returns once the previous grid completed and its writes are visible; every kernel
// here lets its own dependents launch only after that wait, so a dependent that starts early may still
// read what the kernel before this one wrote (fc2 reads the router's idx before waiting for fc1). Both are
// no-ops where the kernel was not launched as a dependent (and below sm_90).
__device__ __forceinline__ void griddep_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
// (the first call by any thread of a CTA counts for the CTA; the dependents launch once every CTA has)
__device__ __forceinline__ void griddep_release() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void griddep_wait_and_release() {
  griddep_wait();
  griddep_release();
}

// Thread-block cluster barrier (sm_90; every thread of every CTA of the cluster): release/acquire, so shared
// memory written before it is visible to the cluster's reads after it. Split into its two halves where work
// can go on between them (a CTA must not exit while another CTA may still read its shared memory).
__device__ __forceinline__ void cluster_arrive() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void cluster_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void cluster_sync_all() {
  cluster_arrive();
  cluster_wait();
}
// The float at shared-memory address a (this CTA's layout) in the shared memory of cluster CTA rank (sm_90).
__device__ __forceinline__ float ld_dsmem_f32(uint32_t a, uint32_t rank) {
  float v = 0.f;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  uint32_t ra;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(ra) : "r"(a), "r"(rank));
  asm volatile("ld.shared::cluster.f32 %0, [%1];\n" : "=f"(v) : "r"(ra) : "memory");
#endif
  return v;
}

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// 16-byte async copy global -> shared; src_bytes 0 zero-fills (src must still be a valid address).
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(n) : "memory");
}
// The same with an L2 prefetch hint of 256 bytes: weight rows are streamed in 128-byte pieces per stage, and
// the hint makes the L2 fetch the neighbouring piece from DRAM in the same access.
__device__ __forceinline__ void cp_async16_pf256(uint32_t dst, const void* src, bool valid) {
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(n) : "memory");
}
// L2 eviction policies (sm_80+) for cache-hinted copies: weights that are read once are marked evict-first so
// that their stream does not push out activations that every CTA re-reads (ncu, OPT-66B fc2 at batch 256:
// 811 MB read from DRAM for 700 MB of weights and activations, the 19 MB activation matrix evicted by the
// weight stream), activations evict-last.
__device__ __forceinline__ uint64_t l2_policy_evict_first() {
  uint64_t p;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(p));
  return p;
}
__device__ __forceinline__ uint64_t l2_policy_evict_last() {
  uint64_t p;
  asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;\n" : "=l"(p));
  return p;
}
// cp_async16_pf256 with an L2 cache policy
__device__ __forceinline__ void cp_async16_pf256_hint(uint32_t dst, const void* src, bool valid, uint64_t pol) {
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global.L2::cache_hint.L2::256B [%0], [%1], 16, %2, %3;\n" ::"r"(dst), "l"(src), "r"(n), "l"(pol)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
// mbarriers (try_wait needs sm_90): a phase completes when `count` arrivals came; a waiter names the parity
// of the phase it waits for.
__device__ __forceinline__ void mbar_init(uint32_t bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// One arrival on bar once every cp.async this thread issued so far has landed (count it in init).
__device__ __forceinline__ void mbar_arrive_cp_async(uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
// sm_90: an arrival that also expects `bytes` more bytes of asynchronous copies (TMA) before the phase ends
__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
// sm_90: TMA load of one box of a 2-D tensor map (coordinates innermost first) into shared memory; its bytes
// count towards bar's expected transaction bytes. map must live in param/const/global memory.
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const void* map, int c0, int c1, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
}
// tma_load_2d with an L2 cache policy
__device__ __forceinline__ void tma_load_2d_hint(uint32_t dst, const void* map, int c0, int c1, uint32_t bar, uint64_t pol) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1, {%2, %3}], [%4], %5;\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar), "l"(pol)
      : "memory");
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred p;\nPOLAR_MBAR_WAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
      "@!p bra POLAR_MBAR_WAIT;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}
__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}
__device__ __forceinline__ void ldsm_x2(uint32_t addr, uint32_t& r0, uint32_t& r1) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(r0), "=r"(r1) : "r"(addr));
}

// D[16x8] += A[16x16] B[16x8], fp32 accumulators (sm_80+).
template <typename T>
__device__ __forceinline__ void mma16816(float* c, const uint32_t* a, uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma16816<__half>(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 16-byte vector of 8 elements.
struct alignas(16) V8 {
  uint32_t u[4];
};

__device__ __forceinline__ void atomic_add4(float* p, float4 v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  atomicAdd(reinterpret_cast<float4*>(p), v);
#else
  atomicAdd(p + 0, v.x);
  atomicAdd(p + 1, v.y);
  atomicAdd(p + 2, v.z);
  atomicAdd(p + 3, v.w);
#endif
}

// Host helpers.
inline int cdiv(int a, int b) { return (a + b - 1) / b; }
inline int64_t cdiv64(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }
inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

}  // namespace polar_cuda
