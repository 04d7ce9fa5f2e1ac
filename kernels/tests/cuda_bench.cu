// Benchmark of the CUDA kernels on the grid of the reference benchmark (Polar Sparsity's bench_reference.py):
// selective MLP (OPT-6.7B / OPT-66B shapes), selective head attention (MHA), selective GQA, and one OPT-66B
// decode step (block) sparse vs dense. One JSON object per line on stdout; a short table on stderr.
//
// Per point: median of timed repetitions (CUDA events around the op, the L2 flushed before each one outside
// the timed region, after warm-up; see flush_l2 for the two ways), bytes moved (each touched weight / KV byte and
// each activation once), GB/s, and the fraction of the limit max(bytes / HBM, FLOPs / 790 TFLOP/s), where HBM is
// this GPU's device-to-device copy bandwidth measured at the start (bytes read + written per second; about
// 3.0 TB/s on an H100 SXM, the number issue 7 states, and 4.3 TB/s on an H200) unless --hbm gives it.
// Every configuration is checked (sampled outputs vs a CPU computation) before it is timed.
//
// usage: cuda_bench [--only mlp,attn,gqa,block,reads] [--dtype f16|bf16] [--flush read|write] [--hbm TB/s] [--quick]
//                   [--kv-layout bhsd|bshd] (the block's KV cache layout; default bhsd, the runtime's)
//                   [--sweep [--sweep-points MODEL:BATCH:DENSITY,...] [--sweep-variants NAME,...]] (tuning sweep)
#include <cuda_runtime.h>

#include <cstdlib>
#include <functional>
#include <random>
#include <set>
#include <string>

#include "cuda_util.cuh"

using namespace tu;

static const double PEAK = 790e12;
static double HBM = 0;  // bytes/s of the limit: measured (measure_copy_bw) unless --hbm names it
static polar_dtype g_dt = POLAR_F16;
static std::string g_gpu;
static bool g_quick = false;
static bool g_sweep = false;
// --kv-layout: the block's KV cache head-major ([B, H, S, D], the runtime session's; default) or [B, S, H, D] ("bshd",
// the layout of the attention grid and of the reference kernels)
static bool g_kv_bhsd = true;
static std::string g_sweep_points;  // --sweep-points: the points of --sweep (default: a fixed list)
static std::string g_sweep_variants;  // --sweep-variants: only these variants of --sweep (comma-separated names)
// --mlp-point MODEL:BATCH:DENSITY runs only that selective-MLP point, once, untimed (for ncu/nsys)
static std::string g_point;
static bool g_wgmma = false;
static int g_fail = 0;

// ---- deterministic device init, reproducible on the host for checks ----------------------------------
__host__ __device__ inline uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}
__host__ __device__ inline float hval(uint64_t seed, uint64_t i, float scale) {
  const uint64_t h = mix64(seed * 0x9E3779B97F4A7C15ull ^ (i + 0x632BE59BD9B4E019ull));
  const float u = (float)(h >> 40) * (1.0f / 16777216.0f);
  const float v = u * 2.0f - 1.0f;
  return v * scale;
}
__device__ inline void store16(__half* p, float v) { *p = __float2half_rn(v); }
__device__ inline void store16(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }
template <typename T>
__global__ void init_kernel(T* p, size_t n, uint64_t seed, float scale) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    store16(p + i, hval(seed, i, scale));
}
static float host_val(uint64_t seed, uint64_t i, float scale) { return round_t(hval(seed, i, scale), g_dt); }

struct Dev {
  void* p = nullptr;
  size_t bytes = 0;
  Dev() = default;
  explicit Dev(size_t b) : bytes(b) { CK(cudaMalloc(&p, std::max<size_t>(b, 16))); }
  ~Dev() { cudaFree(p); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
};
static void init(void* p, size_t n, uint64_t seed, float scale) {
  if (g_dt == POLAR_F16)
    init_kernel<__half><<<2048, 256>>>((__half*)p, n, seed, scale);
  else
    init_kernel<__nv_bfloat16><<<2048, 256>>>((__nv_bfloat16*)p, n, seed, scale);
  CK(cudaGetLastError());
}
static std::vector<float> download16(const void* p, size_t n) {
  std::vector<uint16_t> b(n);
  CK(cudaMemcpy(b.data(), p, n * 2, cudaMemcpyDeviceToHost));
  std::vector<float> o(n);
  for (size_t i = 0; i < n; ++i) o[i] = from_bits(b[i], g_dt);
  return o;
}

// ---- timing --------------------------------------------------------------------------------------------
// The L2 (50 MB on an H100, 60 MB on an H200) is flushed before every timed repetition by touching a 256 MB
// buffer, in one of two ways:
//  - read (default): a kernel reads the buffer, so the L2 ends up full of clean lines of other data. This is
//    the state a decode step leaves it in (the kernels before the MLP read weights and the KV cache and write
//    little), and a timed kernel pays only for its own bytes.
//  - write: a memset of the buffer, as Triton's do_bench does (cache.zero_()). It leaves up to the L2's size
//    of dirty lines, which the next kernel's misses must write back to HBM: up to 50 MB of traffic that is
//    not the kernel's, charged to the first kernel of the timed region (for a 15-70 MB MLP, a large share).
// bench/gpu.sh runs the reference kernels under the same flush as this program (bench/gpu/ref_bench.py).
static Dev* g_flush = nullptr;
static bool g_flush_write = false;
__global__ void l2_scrub_kernel(const uint4* __restrict__ p, size_t n, unsigned* sink) {
  unsigned acc = 0;  // __ldcg: cached in L2 with the normal policy, so the reads evict what was there
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) acc ^= __ldcg(p + i).x;
  if (acc == 0x9e3779b9u) *sink = acc;  // keeps the loads; practically never stores
}
static void flush_l2(int i) {
  if (g_flush_write) {
    CK(cudaMemsetAsync(g_flush->p, i & 0xff, g_flush->bytes));
    return;
  }
  const size_t n = (g_flush->bytes - 64) / 16;
  l2_scrub_kernel<<<1024, 512>>>((const uint4*)g_flush->p, n, (unsigned*)((char*)g_flush->p + g_flush->bytes - 64));
  CK(cudaGetLastError());
}
static double time_ms(const std::function<void()>& fn) {
  cudaEvent_t w0, w1;
  CK(cudaEventCreate(&w0));
  CK(cudaEventCreate(&w1));
  for (int i = 0; i < 3; ++i) {
    flush_l2(i);
    fn();
  }
  flush_l2(3);
  CK(cudaEventRecord(w0));
  fn();
  CK(cudaEventRecord(w1));
  CK(cudaEventSynchronize(w1));
  float est = 0;
  CK(cudaEventElapsedTime(&est, w0, w1));
  int reps = (int)std::min(200.0, std::max(15.0, 250.0 / std::max(est + 0.1f, 0.01f)));
  if (g_quick) reps = 5;
  std::vector<cudaEvent_t> a(reps), b(reps);
  for (int r = 0; r < reps; ++r) {
    CK(cudaEventCreate(&a[r]));
    CK(cudaEventCreate(&b[r]));
  }
  for (int r = 0; r < reps; ++r) {
    flush_l2(r);
    CK(cudaEventRecord(a[r]));
    fn();
    CK(cudaEventRecord(b[r]));
  }
  CK(cudaDeviceSynchronize());
  std::vector<float> t(reps);
  for (int r = 0; r < reps; ++r) {
    CK(cudaEventElapsedTime(&t[r], a[r], b[r]));
    cudaEventDestroy(a[r]);
    cudaEventDestroy(b[r]);
  }
  cudaEventDestroy(w0);
  cudaEventDestroy(w1);
  std::sort(t.begin(), t.end());
  return reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
}

// The memory limit of this GPU: a 2 GiB device-to-device cudaMemcpy, counted as bytes read + written per
// second, the same measure as the 3.0 TB/s that issue 7 names for the H100 (KINDS.md: 4.3 TB/s on an H200).
// Far larger than any L2, so the flush around it does not matter. A kernel that only streams reads can beat it
// by a few percent (reads need no write-back turnarounds), so fractions slightly over 1 are possible.
static double measure_copy_bw() {
  const size_t n = (size_t)2 << 30;
  void *a = nullptr, *b = nullptr;
  CK(cudaMalloc(&a, n));
  CK(cudaMalloc(&b, n));
  CK(cudaMemset(a, 1, n));
  const double ms = time_ms([&] { CK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice)); });
  CK(cudaFree(a));
  CK(cudaFree(b));
  return 2.0 * n / (ms * 1e-3);
}

static std::string jnum(double v, int prec = 4) {
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", prec, v);
  return b;
}

static void check(bool ok, const std::string& what, double err, double tol) {
  if (!ok) {
    ++g_fail;
    std::fprintf(stderr, "CHECK FAILED: %s err=%.4g tol=%.4g\n", what.c_str(), err, tol);
  }
}

static std::vector<int32_t> rand_sorted_subset(Rng& r, int n, int k) {
  std::vector<int32_t> p(n);
  for (int i = 0; i < n; ++i) p[i] = i;
  for (int i = 0; i < k; ++i) std::swap(p[i], p[i + r.below(n - i)]);
  p.resize(k);
  std::sort(p.begin(), p.end());
  return p;
}

// ---- selective MLP ----------------------------------------------------------------------------------
struct MlpBufs {
  int d, ffn, mmax;
  Dev w1, b1, w2t, b2, x, h, y, hd, yd, idx, ws;
  MlpBufs(int d_, int ffn_, int mmax_)
      : d(d_), ffn(ffn_), mmax(mmax_), w1((size_t)ffn_ * d_ * 2), b1(ffn_ * 2), w2t((size_t)ffn_ * d_ * 2), b2(d_ * 2),
        x((size_t)mmax_ * d_ * 2), h((size_t)mmax_ * ffn_ * 2), y((size_t)mmax_ * d_ * 2), hd((size_t)mmax_ * ffn_ * 2),
        yd((size_t)mmax_ * d_ * 2), idx(ffn_ * 4), ws(256u << 20) {
    init(w1.p, (size_t)ffn * d, 11, 1.f / std::sqrt((float)d) * 1.7f);
    init(b1.p, ffn, 12, 0.1f);
    init(w2t.p, (size_t)ffn * d, 13, 1.f / std::sqrt((float)ffn) * 1.7f);
    init(b2.p, d, 14, 0.1f);
    init(x.p, (size_t)mmax * d, 15, 1.7f);
    CK(cudaMemset(ws.p, 0, ws.bytes));
  }
};

static void mlp_params(MlpBufs& B, int m, int k, bool sparse, int impl, polar_cuda_sel_fc1_params* p1, polar_cuda_sel_fc2_params* p2) {
  *p1 = polar_cuda_sel_fc1_params{};
  p1->dtype = g_dt; p1->m = m; p1->d = B.d; p1->k = k; p1->x = B.x.p; p1->ldx = B.d; p1->w1 = B.w1.p; p1->ldw1 = B.d;
  p1->b1 = B.b1.p; p1->idx = sparse ? (const int32_t*)B.idx.p : nullptr; p1->act = POLAR_ACT_RELU; p1->h = B.h.p; p1->ldh = k;
  p1->impl = impl; p1->workspace = B.ws.p; p1->workspace_bytes = B.ws.bytes;
  *p2 = polar_cuda_sel_fc2_params{};
  p2->dtype = g_dt; p2->m = m; p2->d = B.d; p2->k = k; p2->h = B.h.p; p2->ldh = k; p2->w2t = B.w2t.p; p2->ldw2t = B.d;
  p2->b2 = B.b2.p; p2->idx = p1->idx; p2->y = B.y.p; p2->ldy = B.d; p2->impl = impl; p2->after_fc1 = 1;
  p2->workspace = B.ws.p; p2->workspace_bytes = B.ws.bytes;
}

// Sampled check of h and y against the host recomputation of the hashed weights.
static void verify_mlp(MlpBufs& B, int m, int k, const std::vector<int32_t>& idx, const std::string& tag) {
  const int d = B.d;
  std::vector<float> x = download16(B.x.p, (size_t)m * d), h = download16(B.h.p, (size_t)m * k), y = download16(B.y.p, (size_t)m * d);
  Rng r(77 + m + k);
  double e1 = 0, m1 = 0, e2 = 0, m2 = 0;
  bool finite = true;
  for (int s = 0; s < 48; ++s) {
    const int i = r.below(m), j = r.below(k);
    const int f = idx[j];
    double acc = host_val(12, f, 0.1f);
    for (int t = 0; t < d; ++t) acc += (double)x[(size_t)i * d + t] * host_val(11, (size_t)f * d + t, 1.f / std::sqrt((float)d) * 1.7f);
    acc = std::max(acc, 0.0);
    const double o = h[(size_t)i * k + j];
    finite &= std::isfinite(o);
    e1 = std::max(e1, std::fabs(o - acc));
    m1 = std::max(m1, std::fabs(acc));
  }
  for (int s = 0; s < 24; ++s) {
    const int i = r.below(m), c = r.below(d);
    double acc = host_val(14, c, 0.1f);
    for (int j = 0; j < k; ++j)
      acc += (double)h[(size_t)i * k + j] * host_val(13, (size_t)idx[j] * d + c, 1.f / std::sqrt((float)B.ffn) * 1.7f);
    const double o = y[(size_t)i * d + c];
    finite &= std::isfinite(o);
    e2 = std::max(e2, std::fabs(o - acc));
    m2 = std::max(m2, std::fabs(acc));
  }
  const double tol = g_dt == POLAR_F16 ? 4e-3 : 3e-2;
  check(finite && e1 <= tol * (m1 + 1e-2), "mlp fc1 " + tag, e1, tol * (m1 + 1e-2));
  check(finite && e2 <= tol * (m2 + 1e-2), "mlp fc2 " + tag, e2, tol * (m2 + 1e-2));
}

static double run_mlp_sparse(MlpBufs& B, int m, int k, int impl, double* fc1_ms, double* fc2_ms) {
  polar_cuda_sel_fc1_params p1;
  polar_cuda_sel_fc2_params p2;
  mlp_params(B, m, k, true, impl, &p1, &p2);
  const double t = time_ms([&] {
    PK(polar_cuda_sel_fc1(&p1));
    PK(polar_cuda_sel_fc2(&p2));
  });
  if (fc1_ms) *fc1_ms = time_ms([&] { PK(polar_cuda_sel_fc1(&p1)); });
  if (fc2_ms) *fc2_ms = time_ms([&] { PK(polar_cuda_sel_fc2(&p2)); });
  return t;
}

static void dense_mlp(MlpBufs& B, int m) {
  polar_cuda_dense_linear_params a{};
  a.dtype = g_dt; a.m = m; a.n = B.ffn; a.k = B.d; a.x = B.x.p; a.ldx = B.d; a.w = B.w1.p; a.ldw = B.d; a.w_kn = 0;
  a.bias = B.b1.p; a.act = POLAR_ACT_RELU; a.y = B.hd.p; a.ldy = B.ffn;
  PK(polar_cuda_dense_linear(&a));
  polar_cuda_dense_linear_params c{};
  c.dtype = g_dt; c.m = m; c.n = B.d; c.k = B.ffn; c.x = B.hd.p; c.ldx = B.ffn; c.w = B.w2t.p; c.ldw = B.d; c.w_kn = 1;
  c.bias = B.b2.p; c.act = POLAR_ACT_NONE; c.y = B.yd.p; c.ldy = B.d;
  PK(polar_cuda_dense_linear(&c));
}

// Read floor: one kernel that only streams `bytes` of weights-like memory (16-byte loads, 4 in flight per
// thread, every SM busy) and writes nothing it does not have to. Timed like the kernels, it is what a launch
// plus the first DRAM round trip plus the HBM stream cost for that many bytes: the fastest any single-kernel
// implementation could be, and a fairer yardstick than the bare limit for the small points.
__global__ void read_floor_kernel(const uint4* __restrict__ p, size_t n, unsigned* sink) {
  unsigned acc = 0;
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  for (; i + 3 * stride < n; i += 4 * stride) {
    const uint4 a = __ldcs(p + i), b = __ldcs(p + i + stride), c = __ldcs(p + i + 2 * stride), d = __ldcs(p + i + 3 * stride);
    acc ^= a.x ^ b.y ^ c.z ^ d.w;
  }
  for (; i < n; i += stride) acc ^= __ldcs(p + i).x;
  if (acc == 0x9e3779b9u) *sink = acc;  // keeps the loads; practically never stores
}
static Dev* g_read_buf = nullptr;
static double read_floor_ms(double bytes) {
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const size_t n = std::min((size_t)(bytes / 16), (g_read_buf->bytes - 64) / 16);
  return time_ms([&] { read_floor_kernel<<<sms * 8, 256>>>((const uint4*)g_read_buf->p, n, (unsigned*)((char*)g_read_buf->p + g_read_buf->bytes - 64)); });
}

// The kept neurons of a benchmark point: k = density x ffn rounded up to 128, a seeded random sorted subset,
// uploaded as the index list.
static std::vector<int32_t> point_idx(MlpBufs& B, int ffn, int m, double dens) {
  const int k = (int)std::ceil(ffn * dens / 128) * 128;
  Rng r(1000 + m + k);
  std::vector<int32_t> idx = rand_sorted_subset(r, ffn, k);
  CK(cudaMemcpy(B.idx.p, idx.data(), k * 4, cudaMemcpyHostToDevice));
  return idx;
}

static void bench_mlp() {
  Dev rb(g_point.empty() ? (size_t)1500 << 20 : 64);
  CK(cudaMemset(rb.p, 0, rb.bytes));
  g_read_buf = &rb;
  struct Model {
    const char* name;
    int d, ffn;
  } models[] = {{"opt-6.7b", 4096, 16384}, {"opt-66b", 9216, 36864}};
  const bool lt = polar_cuda_cublaslt_available();
  if (!lt) std::fprintf(stderr, "dense baseline unavailable: %s\n", polar_last_error());
  for (const Model& M : models) {
    MlpBufs B(M.d, M.ffn, 256);
    for (int m : {1, 16, 64, 256}) {
      if (g_quick && m != 64) continue;
      if (!g_point.empty() && g_point.rfind(std::string(M.name) + ":" + std::to_string(m) + ":", 0) != 0) continue;
      double dense = -1;
      if (lt && g_point.empty()) dense = time_ms([&] { dense_mlp(B, m); });
      for (double dens : {0.05, 0.1, 0.25, 0.5, 1.0}) {
        if (g_quick && dens != 0.25) continue;
        char want[96];
        std::snprintf(want, sizeof want, "%s:%d:%g", M.name, m, dens);
        if (!g_point.empty() && g_point != want) continue;
        const std::vector<int32_t> idx = point_idx(B, M.ffn, m, dens);
        const int k = (int)idx.size();
        polar_cuda_sel_fc1_params p1;
        polar_cuda_sel_fc2_params p2;
        mlp_params(B, m, k, true, POLAR_IMPL_AUTO, &p1, &p2);
        if (!g_point.empty()) {  // profile mode: fc1 + fc2 of this point, 3 times, nothing else
          for (int rep = 0; rep < 3; ++rep) {
            flush_l2(rep);
            PK(polar_cuda_sel_fc1(&p1));
            PK(polar_cuda_sel_fc2(&p2));
          }
          CK(cudaDeviceSynchronize());
          char d1[160], d2[160];
          polar_cuda_sel_fc1_describe(&p1, d1, sizeof d1);
          polar_cuda_sel_fc2_describe(&p2, d2, sizeof d2);
          std::fprintf(stderr, "point %s: fc1 %s | fc2 %s\n", want, d1, d2);
          continue;
        }
        const size_t need = std::max(polar_cuda_sel_fc1_workspace(&p1), polar_cuda_sel_fc2_workspace(&p2));
        if (need > B.ws.bytes) {
          std::fprintf(stderr, "workspace %zu > %zu\n", need, B.ws.bytes);
          std::exit(2);
        }
        CK(cudaMemset(B.y.p, 0xFF, (size_t)m * M.d * 2));
        PK(polar_cuda_sel_fc1(&p1));
        PK(polar_cuda_sel_fc2(&p2));
        CK(cudaDeviceSynchronize());
        char tag[128];
        std::snprintf(tag, sizeof tag, "%s m=%d k=%d", M.name, m, k);
        verify_mlp(B, m, k, idx, tag);
        if (lt && dens == 1.0) {  // the dense path computes the same function: compare the outputs
          dense_mlp(B, m);
          CK(cudaDeviceSynchronize());
          std::vector<float> ys = download16(B.y.p, (size_t)m * M.d), yd = download16(B.yd.p, (size_t)m * M.d);
          double e = 0, mx = 0;
          for (size_t i = 0; i < ys.size(); ++i) {
            e = std::max(e, (double)std::fabs(ys[i] - yd[i]));
            mx = std::max(mx, (double)std::fabs(yd[i]));
          }
          const double tol = (g_dt == POLAR_F16 ? 4e-3 : 3e-2) * (mx + 1e-2);
          check(e <= tol, std::string("sparse(all) vs dense ") + tag, e, tol);
        }
        double fc1 = 0, fc2 = 0;
        const double ms = run_mlp_sparse(B, m, k, POLAR_IMPL_AUTO, &fc1, &fc2);
        std::string alt;
        if (g_wgmma && (m == 16 || m == 64)) {
          const int other = POLAR_IMPL_MMA;  // the mma.sync-only path, beside auto's per-fc choice
          double a1 = 0, a2 = 0;
          const double am = run_mlp_sparse(B, m, k, other, &a1, &a2);
          alt = ",\"alt_impl\":\"" + std::string(other == POLAR_IMPL_MMA ? "mma" : "wgmma") + "\",\"alt_ms\":" + jnum(am) +
                ",\"alt_fc1_ms\":" + jnum(a1) + ",\"alt_fc2_ms\":" + jnum(a2);
        }
        char plan1[160] = "", plan2[160] = "";
        polar_cuda_sel_fc1_describe(&p1, plan1, sizeof plan1);
        polar_cuda_sel_fc2_describe(&p2, plan2, sizeof plan2);
        alt += std::string(",\"plan_fc1\":\"") + plan1 + "\",\"plan_fc2\":\"" + plan2 + "\"";
        const double bytes = 2.0 * k * M.d * 2 + (k + M.d) * 2.0 + 2.0 * m * M.d * 2 + k * 4.0;
        const double flops = 4.0 * m * k * M.d;
        const double limit = std::max(bytes / HBM, flops / PEAK) * 1e3;
        const double floor_ms = read_floor_ms(bytes);
        alt += ",\"read_floor_ms\":" + jnum(floor_ms) + ",\"read_floor_frac_of_limit\":" + jnum(limit / floor_ms, 3);
        std::printf(
            "{\"bench\":\"mlp\",\"model\":\"%s\",\"gpu\":\"%s\",\"dtype\":\"%s\",\"batch\":%d,\"density\":%g,\"k\":%d,\"d\":%d,"
            "\"ffn\":%d,\"ms\":%s,\"fc1_ms\":%s,\"fc2_ms\":%s,\"dense_ms\":%s,\"speedup_vs_dense\":%s,\"bytes\":%.0f,\"flops\":%.0f,"
            "\"gbps\":%s,\"limit_ms\":%s,\"frac_of_limit\":%s,\"path\":\"%s\"%s}\n",
            M.name, g_gpu.c_str(), dtname(g_dt), m, dens, k, M.d, M.ffn, jnum(ms).c_str(), jnum(fc1).c_str(), jnum(fc2).c_str(),
            jnum(dense).c_str(), jnum(dense > 0 ? dense / ms : 0, 3).c_str(), bytes, flops, jnum(bytes / ms / 1e6, 1).c_str(),
            jnum(limit).c_str(), jnum(limit / ms, 3).c_str(), g_wgmma ? "auto" : "mma", alt.c_str());
        std::fflush(stdout);
        std::fprintf(stderr, "mlp  %-8s M=%-3d dens=%-4g k=%-5d %8.4f ms  %6.0f GB/s  %5.1f%% of limit  dense %.4f ms (x%.2f)\n", M.name, m,
                     dens, k, ms, bytes / ms / 1e6, 100 * limit / ms, dense, dense > 0 ? dense / ms : 0);
      }
    }
  }
}

// Tuning sweep: fc1 and fc2 alone under forced split-K counts, pipeline depths and paths.
static void bench_sweep() {
  struct Pt {
    const char* name;
    int d, ffn, m;
    double dens;
  };
  std::vector<Pt> pts = {{"opt-6.7b", 4096, 16384, 256, 0.25}, {"opt-66b", 9216, 36864, 256, 0.1}, {"opt-66b", 9216, 36864, 256, 0.5},
                         {"opt-66b", 9216, 36864, 256, 1.0},   {"opt-6.7b", 4096, 16384, 256, 1.0}, {"opt-66b", 9216, 36864, 128, 0.5},
                         {"opt-66b", 9216, 36864, 64, 0.5},    {"opt-66b", 9216, 36864, 64, 0.1},  {"opt-6.7b", 4096, 16384, 64, 1.0}};
  if (!g_sweep_points.empty()) {  // --sweep-points MODEL:BATCH:DENSITY,...
    pts.clear();
    size_t p = 0;
    while (p < g_sweep_points.size()) {
      size_t q = g_sweep_points.find(',', p);
      if (q == std::string::npos) q = g_sweep_points.size();
      const std::string one = g_sweep_points.substr(p, q - p);
      char name[32];
      int m = 0;
      double dens = 0;
      if (std::sscanf(one.c_str(), "%31[^:]:%d:%lf", name, &m, &dens) != 3 || m < 1 || m > 256 || dens <= 0 || dens > 1) {
        std::fprintf(stderr, "cuda_bench: --sweep-points: '%s' is not MODEL:BATCH:DENSITY\n", one.c_str());
        ++g_fail;
        return;
      }
      const bool big = std::string(name) == "opt-66b";
      if (!big && std::string(name) != "opt-6.7b") {
        std::fprintf(stderr, "cuda_bench: --sweep-points: model '%s' is not opt-6.7b or opt-66b\n", name);
        ++g_fail;
        return;
      }
      pts.push_back({big ? "opt-66b" : "opt-6.7b", big ? 9216 : 4096, big ? 36864 : 16384, m, dens});
      p = q + 1;
    }
  }
  polar_cuda_tuning defaults;
  polar_cuda_get_tuning(&defaults);
  for (const Pt& P : pts) {
    MlpBufs B(P.d, P.ffn, P.m);
    const int k = (int)point_idx(B, P.ffn, P.m, P.dens).size();
    Dev rb(256u << 20);  // the read floor of one fc's weight bytes (what one kernel streaming them costs)
    g_read_buf = &rb;
    const double floor_one = read_floor_ms((double)k * P.d * 2);
    // each variant: a name (the tuning knobs below are read from it), the path, forced splits (0 = planned),
    // the split charge, and whether it needs the wgmma path (sm_90a; without it AUTO already is mma.sync)
    struct Var {
      std::string name;
      int impl, splits;
      double pen;
      bool wg_only = false;
    };
    const int au = POLAR_IMPL_AUTO, mm = POLAR_IMPL_MMA, wg = POLAR_IMPL_WGMMA;
    std::vector<Var> vars = {{"auto", au, 0, 1.0},      {"pen0.25", au, 0, 0.25},       {"pen4", au, 0, 4.0},
                             {"s1", au, 1, 1.0},        {"s2", au, 2, 1.0},             {"s4", au, 4, 1.0},
                             {"mma", mm, 0, 1.0, true}, {"wgmma", wg, 0, 1.0, true},    {"wg2", au, 0, 1.0},
                             {"wg4", au, 0, 1.0},       {"wg4-cl", au, 0, 1.0},         {"wg4-cl-pen0.25", au, 0, 0.25},
                             {"auto-cl", au, 0, 1.0},   {"auto-nocl", au, 0, 1.0},
                             {"ws", wg, 0, 1.0, true},  {"ws-s1", wg, 1, 1.0, true},  // the warp-specialized kernel, forced
                             {"ws-nocl", wg, 0, 1.0, true},  // ... with stream-K's shared tiles, never cluster split-K
                             {"pair", au, 0, 1.0},      {"pair-pen0.25", au, 0, 0.25},  {"mma-8w", mm, 0, 1.0},
                             {"mma-4w", mm, 0, 1.0},    {"plan-h100", au, 0, 1.0},    {"plan-h200", au, 0, 1.0}};
    // the warp-specialized kernel's stream-K grid, N steps charged per partial a shared tile's first CTA adds (skN)
    for (int ch : {1, 2, 5, 10, 20, 40}) vars.push_back({"ws-sk" + std::to_string(ch), wg, 0, 1.0, true});
    for (int sp : {1, 2, 4, 8, 16}) {  // each path under forced split counts
      vars.push_back({"mma-s" + std::to_string(sp), mm, sp, 1.0});
      vars.push_back({"wgmma-s" + std::to_string(sp), wg, sp, 1.0, true});
    }
    for (const Var& v : vars) {
      if (v.wg_only && !g_wgmma) continue;
      if (!g_sweep_variants.empty() && ("," + g_sweep_variants + ",").find("," + v.name + ",") == std::string::npos) continue;
      set_tuning([&v, &defaults](polar_cuda_tuning& t) {
        t.mma_stages = 3;
        t.split_penalty = v.pen;
        t.mma_warps = v.name.find("8w") != std::string::npos ? 8 : v.name.find("4w") != std::string::npos ? 4 : 0;
        t.wgmma_pair = v.name.rfind("pair", 0) == 0 ? 1 : 2;  // 2: the default (pairs at batch 65-128)
        t.nb256 = v.name.rfind("wg2", 0) == 0 ? 0 : v.name.rfind("wg4", 0) == 0 ? 1 : v.name.rfind("ws", 0) == 0 ? 3 : 2;
        t.cluster_reduce = v.name.find("-cl") != std::string::npos ? 1 : v.name.find("-nocl") != std::string::npos ? 0 : defaults.cluster_reduce;
        t.sk_partial = v.name.rfind("ws-sk", 0) == 0 ? std::atoi(v.name.c_str() + 5) : defaults.sk_partial;
        // the per-GPU planner choices (PlanProfile in sel_gemm.cu), both on this GPU
        t.plan_profile = v.name == "plan-h100" ? 1 : v.name == "plan-h200" ? 2 : defaults.plan_profile;
      });
      polar_cuda_sel_fc1_params p1;
      polar_cuda_sel_fc2_params p2;
      mlp_params(B, P.m, k, true, v.impl, &p1, &p2);
      p1.splits = p2.splits = v.splits;
      if (std::max(polar_cuda_sel_fc1_workspace(&p1), polar_cuda_sel_fc2_workspace(&p2)) > B.ws.bytes) continue;
      char d1[160], d2[160];
      polar_cuda_sel_fc1_describe(&p1, d1, sizeof d1);
      polar_cuda_sel_fc2_describe(&p2, d2, sizeof d2);
      const double t1 = time_ms([&] { PK(polar_cuda_sel_fc1(&p1)); });
      const double t2 = time_ms([&] { PK(polar_cuda_sel_fc2(&p2)); });
      const double half = (double)k * P.d * 2 / HBM * 1e3;
      std::printf("{\"bench\":\"sweep\",\"model\":\"%s\",\"batch\":%d,\"density\":%g,\"k\":%d,\"variant\":\"%s\",\"fc1_ms\":%s,\"fc2_ms\":%s,"
                  "\"fc1_frac\":%s,\"fc2_frac\":%s,\"floor_one_fc_ms\":%s,\"plan_fc1\":\"%s\",\"plan_fc2\":\"%s\"}\n",
                  P.name, P.m, P.dens, k, v.name.c_str(), jnum(t1).c_str(), jnum(t2).c_str(), jnum(half / t1, 3).c_str(),
                  jnum(half / t2, 3).c_str(), jnum(floor_one).c_str(), d1, d2);
      std::fflush(stdout);
    }
    polar_cuda_set_tuning(&defaults);
  }
}

// ---- attention --------------------------------------------------------------------------------------
struct AttnBufs {
  int B, S, hkv, hq;
  Dev q, k, v, o, idx, lens, ws;
  AttnBufs(int B_, int S_, int hkv_, int hq_)
      : B(B_), S(S_), hkv(hkv_), hq(hq_), q((size_t)B_ * hq_ * 128 * 2), k((size_t)B_ * S_ * hkv_ * 128 * 2),
        v((size_t)B_ * S_ * hkv_ * 128 * 2), o((size_t)B_ * hq_ * 128 * 2), idx((size_t)B_ * hkv_ * 4), lens(B_ * 4), ws(64u << 20) {
    init(q.p, (size_t)B * hq * 128, 21, 1.7f);
    init(k.p, (size_t)B * S * hkv * 128, 22, 1.7f);
    init(v.p, (size_t)B * S * hkv * 128, 23, 1.7f);
    std::vector<int32_t> l(B, S);
    CK(cudaMemcpy(lens.p, l.data(), B * 4, cudaMemcpyHostToDevice));
    CK(cudaMemset(ws.p, 0, ws.bytes));
  }
  polar_cuda_attn_params params(int nsel, bool dense) {
    polar_cuda_attn_params p{};
    p.dtype = g_dt; p.batch = B; p.q_heads = hq; p.kv_heads = hkv; p.head_dim = 128; p.max_seq = S;
    p.q = q.p; p.q_batch_stride = (int64_t)hq * 128; p.q_head_stride = 128;
    p.k_cache = k.p; p.k_batch_stride = (int64_t)S * hkv * 128; p.k_seq_stride = (int64_t)hkv * 128; p.k_head_stride = 128;
    p.v_cache = v.p; p.v_batch_stride = p.k_batch_stride; p.v_seq_stride = p.k_seq_stride; p.v_head_stride = 128;
    p.seqlens = (const int32_t*)lens.p;
    p.idx = dense ? nullptr : (const int32_t*)idx.p; p.n_sel = nsel; p.idx_stride = nsel;
    p.scale = 1.f / std::sqrt(128.f);
    p.out = o.p; p.o_batch_stride = (int64_t)hq * 128; p.o_head_stride = 128;
    p.workspace = ws.p; p.workspace_bytes = ws.bytes;
    return p;
  }
};

static void verify_attn(AttnBufs& A, int nsel, const std::vector<int32_t>& idx, const std::string& tag) {
  const int hpg = A.hq / A.hkv, S = A.S;
  std::vector<float> o = download16(A.o.p, (size_t)A.B * A.hq * 128);
  Rng r(5 + nsel);
  double err = 0, mx = 0;
  bool finite = true, zeros = true;
  for (int s = 0; s < 3; ++s) {
    const int b = r.below(A.B);
    const int g = idx[(size_t)b * nsel + r.below(nsel)];
    const int h = g * hpg + r.below(hpg);
    std::vector<double> sc(S);
    double m = -1e300;
    for (int p = 0; p < S; ++p) {
      double acc = 0;
      for (int t = 0; t < 128; ++t)
        acc += (double)host_val(21, ((size_t)b * A.hq + h) * 128 + t, 1.7f) * host_val(22, (((size_t)b * S + p) * A.hkv + g) * 128 + t, 1.7f);
      sc[p] = acc / std::sqrt(128.0);
      m = std::max(m, sc[p]);
    }
    double den = 0;
    for (int p = 0; p < S; ++p) den += (sc[p] = std::exp(sc[p] - m));
    for (int t = 0; t < 128; t += 9) {
      double acc = 0;
      for (int p = 0; p < S; ++p) acc += sc[p] * host_val(23, (((size_t)b * S + p) * A.hkv + g) * 128 + t, 1.7f);
      acc /= den;
      const double got = o[((size_t)b * A.hq + h) * 128 + t];
      finite &= std::isfinite(got);
      err = std::max(err, std::fabs(got - acc));
      mx = std::max(mx, std::fabs(acc));
    }
    // a head of a group that b does not keep is zero
    std::vector<char> kept(A.hkv, 0);
    for (int j = 0; j < nsel; ++j) kept[idx[(size_t)b * nsel + j]] = 1;
    for (int gg = 0; gg < A.hkv; ++gg)
      if (!kept[gg]) zeros &= o[((size_t)b * A.hq + gg * hpg) * 128] == 0.f;
  }
  const double tol = (g_dt == POLAR_F16 ? 4e-3 : 3e-2) * (mx + 0.05);
  check(finite && err <= tol, "attn " + tag, err, tol);
  check(zeros, "attn zeros " + tag, 0, 0);
}

static void bench_attn(bool gqa) {
  struct Model {
    const char* name;
    int hq, hkv;
  };
  std::vector<Model> models = gqa ? std::vector<Model>{{"llama-3-8b", 32, 8}, {"llama-3-70b", 64, 8}}
                                  : std::vector<Model>{{"opt-6.7b", 32, 32}, {"opt-66b", 72, 72}};
  std::vector<std::pair<int, int>> shapes = gqa ? std::vector<std::pair<int, int>>{{16, 4096}, {64, 4096}, {64, 8192}}
                                                : std::vector<std::pair<int, int>>{{16, 1920}, {64, 1920}, {64, 4096}};
  std::vector<double> dens = gqa ? std::vector<double>{0.5, 0.625, 1.0} : std::vector<double>{0.3, 0.5, 1.0};
  for (const Model& M : models)
    for (auto [B, S] : shapes) {
      if (g_quick && B != 64) continue;
      AttnBufs A(B, S, M.hkv, M.hq);
      polar_cuda_attn_params pd = A.params(M.hkv, true);
      if (polar_cuda_attn_workspace(&pd) > A.ws.bytes) std::exit(3);
      const double dense = time_ms([&] { PK(polar_cuda_attn_decode(&pd)); });
      for (double de : dens) {
        const int top = std::max(1, (int)std::ceil(M.hkv * de));
        Rng r(300 + B + S + top);
        std::vector<int32_t> idx((size_t)B * top);
        for (int b = 0; b < B; ++b) {
          std::vector<int32_t> s = rand_sorted_subset(r, M.hkv, top);
          std::copy(s.begin(), s.end(), idx.begin() + (size_t)b * top);
        }
        CK(cudaMemcpy(A.idx.p, idx.data(), idx.size() * 4, cudaMemcpyHostToDevice));
        polar_cuda_attn_params p = A.params(top, false);
        if (polar_cuda_attn_workspace(&p) > A.ws.bytes) std::exit(3);
        CK(cudaMemset(A.o.p, 0xFF, A.o.bytes));
        PK(polar_cuda_attn_decode(&p));
        CK(cudaDeviceSynchronize());
        char tag[128];
        std::snprintf(tag, sizeof tag, "%s B=%d S=%d top=%d", M.name, B, S, top);
        verify_attn(A, top, idx, tag);
        const double ms = time_ms([&] { PK(polar_cuda_attn_decode(&p)); });
        if (g_sweep) {  // pipeline depth x split-K over the context (0 = the planner's choice)
          for (int st : {0, 2, 3}) {
            set_tuning([st](polar_cuda_tuning& t) { t.attn_stages = st; });
            for (int sp : {0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 30}) {
              if (st == 0 && sp != 0) continue;
              polar_cuda_attn_params q = p;
              q.splits = sp;
              if (polar_cuda_attn_workspace(&q) > A.ws.bytes) continue;
              std::printf("{\"bench\":\"sweep_attn\",\"kind\":\"%s\",\"model\":\"%s\",\"batch\":%d,\"seq\":%d,\"kept\":%d,\"stages\":%d,\"splits\":%d,\"ms\":%s}\n",
                          gqa ? "gqa" : "attn", M.name, B, S, top, st, sp, jnum(time_ms([&] { PK(polar_cuda_attn_decode(&q)); })).c_str());
            }
          }
          set_tuning([](polar_cuda_tuning& t) { t.attn_stages = 0; });
          std::fflush(stdout);
        }
        char plan[128], plan_dense[128];
        PK(polar_cuda_attn_describe(&p, plan, sizeof plan));
        PK(polar_cuda_attn_describe(&pd, plan_dense, sizeof plan_dense));
        const int hpg = M.hq / M.hkv;
        const double bytes = 2.0 * B * S * top * 128 * 2 + 2.0 * B * top * hpg * 128 * 2 + (double)B * M.hq * 128 * 2 + B * top * 4.0;
        const double flops = 4.0 * B * S * top * hpg * 128;
        const double limit = std::max(bytes / HBM, flops / PEAK) * 1e3;
        std::printf(
            "{\"bench\":\"%s\",\"model\":\"%s\",\"gpu\":\"%s\",\"dtype\":\"%s\",\"batch\":%d,\"seq\":%d,\"q_heads\":%d,\"kv_heads\":%d,"
            "\"density\":%g,\"kept\":%d,\"ms\":%s,\"dense_ms\":%s,\"speedup_vs_dense\":%s,\"bytes\":%.0f,\"gbps\":%s,\"limit_ms\":%s,"
            "\"frac_of_limit\":%s,\"plan\":\"%s\",\"plan_dense\":\"%s\"}\n",
            gqa ? "gqa" : "attn", M.name, g_gpu.c_str(), dtname(g_dt), B, S, M.hq, M.hkv, de, top, jnum(ms).c_str(),
            jnum(dense).c_str(), jnum(dense / ms, 3).c_str(), bytes, jnum(bytes / ms / 1e6, 1).c_str(), jnum(limit).c_str(),
            jnum(limit / ms, 3).c_str(), plan, plan_dense);
        std::fflush(stdout);
        std::fprintf(stderr, "%-4s %-11s B=%-3d S=%-5d kept=%-3d %8.4f ms  %6.0f GB/s  %5.1f%% of limit  dense %.4f ms (x%.2f)\n",
                     gqa ? "gqa" : "attn", M.name, B, S, top, ms, bytes / ms / 1e6, 100 * limit / ms, dense, dense / ms);
      }
    }
}

// ---- read patterns (--only reads; not in the default run) ---------------------------------------------
// How fast the HBM delivers the selective GEMMs' weight streams with no arithmetic: pieces of P bytes from
// half of OPT-66B's 36864 weight rows (18 KB each, a random sorted half, as a router picks), one CTA per
// (column block, K range). fc2 reads 256 bytes of each kept row per CTA, fc1 128 per pipeline stage over its
// 128 rows; the dense GEMMs read every row. "blocked" stores each column block's pieces of all rows
// contiguously ([column block][row][P]), a layout a loader could produce. Tells whether a kernel's shortfall
// against the limit is its access pattern or its own pipeline.
// lockstep: the CTAs of a thread-block cluster (adjacent column blocks) pass a cluster barrier after every round of
// loads, so that their pieces of the same rows are requested together (a cluster of 4 at 256 bytes asks for 1 KB
// of each row at once).
__global__ void __launch_bounds__(256) read_pattern_kernel(const uint4* __restrict__ base, const int* __restrict__ rows, int nrows,
                                                           int rows_per_cta, int p16, int64_t row16, int64_t cb16, unsigned* sink,
                                                           int lockstep) {
  extern __shared__ int srow[];  // this CTA's row indices, loaded first: no index round trip before each load
  const int r0 = blockIdx.y * rows_per_cta;
  const int nr = min(rows_per_cta, nrows - r0);
  if (nr <= 0) return;
  for (int i = threadIdx.x; i < nr; i += 256) srow[i] = rows[r0 + i];
  __syncthreads();
  const int64_t total = (int64_t)nr * p16;
  const uint4* cb = base + blockIdx.x * cb16;
  unsigned acc = 0;
  for (int64_t e0 = threadIdx.x; e0 < total; e0 += 256 * 8) {
    uint4 v[8];
#pragma unroll
    for (int u = 0; u < 8; ++u) {  // eight 16-byte loads in flight per thread before any is used
      const int64_t e = e0 + u * 256;
      v[u] = make_uint4(0, 0, 0, 0);
      if (e < total) {
        const int r = (int)(e / p16);
        v[u] = __ldcs(cb + (int64_t)srow[r] * row16 + (e - (int64_t)r * p16));
      }
    }
#pragma unroll
    for (int u = 0; u < 8; ++u) acc ^= v[u].x ^ v[u].w;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (lockstep) asm volatile("barrier.cluster.arrive.relaxed.aligned;\nbarrier.cluster.wait.aligned;\n" ::: "memory");
#endif
  }
  if (acc == 0x9e3779b9u) *sink = acc;
}
// The same pieces through the TMA's 1-D bulk copies (sm_90): one warp per CTA, each lane copies one row's piece of
// a stage (32 rows) into shared memory with one instruction; a ring of `stages` stages on mbarriers, no compute.
// What a loader that issues one copy per gathered row (instead of 16-byte cp.async per thread) could stream.
__global__ void __launch_bounds__(32) read_pattern_bulk_kernel(const char* __restrict__ base, const int* __restrict__ rows, int nrows,
                                                               int rows_per_cta, int piece, int64_t row_bytes, int64_t cb_bytes,
                                                               int stages, int lockstep) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ __align__(128) char sm[];
  const int lane = threadIdx.x;
  const int r0 = blockIdx.y * rows_per_cta, nr = min(rows_per_cta, nrows - r0);
  if (nr <= 0) return;
  const uint32_t bars = (uint32_t)__cvta_generic_to_shared(sm), buf = bars + 128;
  int* srow = reinterpret_cast<int*>(sm + 128 + stages * 32 * piece);  // the CTA's row indices, loaded first
  for (int i = lane; i < nr; i += 32) srow[i] = rows[r0 + i];
  if (lane < stages) asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(bars + 8 * lane) : "memory");
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  __syncwarp();
  auto wait = [&](int s, int parity) {
    asm volatile(
        "{\n.reg .pred p;\nRP_WAIT:\nmbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n@!p bra RP_WAIT;\n}\n" ::"r"(bars + 8 * s),
        "r"(parity)
        : "memory");
  };
  const char* cb = base + blockIdx.x * cb_bytes;
  const int nst = (nr + 31) / 32;
  for (int i = 0; i < nst; ++i) {
    const int s = i % stages;
    if (i >= stages) wait(s, ((i / stages) - 1) & 1);  // the slot's previous copies landed
    const int here = min(32, nr - i * 32);
    if (lane == 0)
      asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bars + 8 * s), "r"(here * piece) : "memory");
    __syncwarp();
    if (lockstep) asm volatile("barrier.cluster.arrive.relaxed.aligned;\nbarrier.cluster.wait.aligned;\n" ::: "memory");
    if (lane < here) {
      const char* src = cb + (int64_t)srow[i * 32 + lane] * row_bytes;
      asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                       buf + (uint32_t)(s * 32 + lane) * piece),
                   "l"(src), "r"(piece), "r"(bars + 8 * s)
                   : "memory");
    }
  }
  for (int i = max(0, nst - stages); i < nst; ++i) wait(i % stages, (i / stages) & 1);
#endif
}
static void bench_reads() {
  const int R = 36864, ROW = 18432;  // OPT-66B's fc weight rows: 36864 x 9216 fp16
  Dev w((size_t)R * ROW + 64);
  CK(cudaMemset(w.p, 1, w.bytes));
  std::vector<int> all(R), half;
  for (int i = 0; i < R; ++i) all[i] = i;
  std::mt19937 rng(7);
  std::shuffle(all.begin(), all.end(), rng);
  half.assign(all.begin(), all.begin() + R / 2);
  std::sort(half.begin(), half.end());
  for (int i = 0; i < R; ++i) all[i] = i;
  Dev dh(half.size() * 4), da(all.size() * 4);
  CK(cudaMemcpy(dh.p, half.data(), half.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(da.p, all.data(), all.size() * 4, cudaMemcpyHostToDevice));
  polar_cuda_device_info info;
  PK(polar_cuda_get_device_info(0, &info));
  unsigned* sink = (unsigned*)((char*)w.p + (size_t)R * ROW);
  struct Pat {
    const char* rows;
    const char* layout;
    int piece;
    int ctas_per_sm;
    int stages;   // 0: plain loads (read_pattern_kernel); > 0: bulk copies with that many stages of 32 rows
    int cluster;  // > 1: clusters of that many adjacent column blocks in lockstep
  };
  const Pat pats[] = {{"half", "rowmajor", 128, 8, 0, 0},  {"half", "rowmajor", 256, 8, 0, 0},   {"half", "rowmajor", 512, 8, 0, 0},
                      {"half", "rowmajor", 1024, 8, 0, 0}, {"half", "rowmajor", ROW, 8, 0, 0},   {"all", "rowmajor", ROW, 8, 0, 0},
                      {"half", "rowmajor", 256, 3, 0, 0},  {"half", "rowmajor", 256, 3, 0, 4},   {"half", "rowmajor", 256, 8, 0, 4},
                      {"half", "rowmajor", 256, 3, 0, 2},  {"half", "rowmajor", 256, 3, 0, 8},   {"half", "rowmajor", 128, 4, 0, 8},
                      {"half", "rowmajor", 256, 4, 4, 0},  {"half", "rowmajor", 256, 4, 4, 4},   {"half", "rowmajor", 256, 8, 3, 0},
                      {"half", "rowmajor", 256, 8, 3, 4},  {"half", "rowmajor", 256, 3, 6, 0},   {"half", "rowmajor", 256, 3, 6, 4},
                      {"half", "rowmajor", 512, 2, 4, 0},  {"half", "rowmajor", 512, 4, 3, 0},   {"half", "rowmajor", 1024, 2, 2, 0},
                      {"half", "rowmajor", 1024, 1, 4, 0}, {"half", "rowmajor", 1024, 2, 3, 0}, {"half", "blocked", 256, 8, 0, 0}};
  for (const Pat& pt : pats) {
    const bool half_rows = !std::strcmp(pt.rows, "half"), blocked = !std::strcmp(pt.layout, "blocked");
    if ((pt.stages || pt.cluster > 1) && info.major < 9) continue;
    const int nrows = half_rows ? R / 2 : R;
    const int p16 = pt.piece / 16, blocks = ROW / pt.piece;
    int splits = std::max(1, (info.sms * pt.ctas_per_sm + blocks - 1) / blocks);
    const int rpc = (nrows + splits - 1) / splits;
    splits = (nrows + rpc - 1) / rpc;  // every CTA has rows (the cluster barriers count on it)
    const int64_t row16 = blocked ? p16 : ROW / 16, cb16 = blocked ? (int64_t)R * p16 : p16;
    const int* rows = (const int*)(half_rows ? dh.p : da.p);
    const int smem = (pt.stages ? 128 + pt.stages * 32 * pt.piece : 0) + rpc * 4;
    const void* fn = pt.stages ? (const void*)read_pattern_bulk_kernel : (const void*)read_pattern_kernel;
    const int threads = pt.stages ? 32 : 256;
    CK(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    CK(cudaFuncSetAttribute(fn, cudaFuncAttributePreferredSharedMemoryCarveout, pt.stages ? 100 : -1));
    int occ = 0;
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, fn, threads, smem));
    const int lock = pt.cluster > 1 ? 1 : 0;
    const double ms = time_ms([&] {
      cudaLaunchConfig_t cfg = {};
      cfg.gridDim = dim3(blocks, splits);
      cfg.blockDim = dim3(threads);
      cfg.dynamicSmemBytes = smem;
      cudaLaunchAttribute at;
      at.id = cudaLaunchAttributeClusterDimension;
      at.val.clusterDim.x = std::max(1, pt.cluster);
      at.val.clusterDim.y = 1;
      at.val.clusterDim.z = 1;
      cfg.attrs = &at;
      cfg.numAttrs = pt.cluster > 1 ? 1 : 0;
      if (pt.stages)
        CK(cudaLaunchKernelEx(&cfg, read_pattern_bulk_kernel, (const char*)w.p, rows, nrows, rpc, pt.piece, row16 * 16, cb16 * 16, pt.stages, lock));
      else
        CK(cudaLaunchKernelEx(&cfg, read_pattern_kernel, (const uint4*)w.p, rows, nrows, rpc, p16, row16, cb16, sink, lock));
    });
    const double bytes = (double)nrows * ROW;
    std::printf("{\"bench\":\"read_pattern\",\"gpu\":\"%s\",\"rows\":\"%s\",\"layout\":\"%s\",\"piece_bytes\":%d,\"copy\":\"%s\",\"stages\":%d,"
                "\"cluster_lockstep\":%d,\"ctas\":%d,\"ctas_per_sm_resident\":%d,\"rows_per_cta\":%d,\"mb\":%s,\"ms\":%s,\"gb_per_s\":%s,\"of_limit\":%s}\n",
                g_gpu.c_str(), pt.rows, pt.layout, pt.piece, pt.stages ? "bulk" : "loads", pt.stages, pt.cluster, blocks * splits, occ, rpc,
                jnum(bytes / 1e6, 1).c_str(), jnum(ms).c_str(), jnum(bytes / (ms * 1e-3) / 1e9, 1).c_str(), jnum(bytes / (ms * 1e-3) / HBM, 3).c_str());
    std::fflush(stdout);
  }
}

// ---- one OPT-66B decode step: (QKV proj) + attention + (out proj) + MLP, sparse vs dense ----------------
static void bench_block() {
  if (!polar_cuda_cublaslt_available()) {
    std::fprintf(stderr, "block: skipped, cuBLASLt unavailable: %s\n", polar_last_error());
    return;
  }
  const int d = 9216, H = 72, D = 128, ffn = 36864, B = 64, S = 1920, rank = 1024;
  const double head_dens = 0.3, mlp_dens = 0.5;
  const int top = (int)std::ceil(H * head_dens), k = (int)std::ceil(ffn * mlp_dens / 128) * 128;
  Dev x((size_t)B * d * 2), wqkv((size_t)3 * d * d * 2), bqkv(3 * d * 2), qkv((size_t)B * 3 * d * 2), wo((size_t)d * d * 2), bo(d * 2),
      ao((size_t)B * d * 2), o((size_t)B * d * 2), kc((size_t)B * S * H * D * 2), vc((size_t)B * S * H * D * 2), lens(B * 4),
      w1((size_t)ffn * d * 2), b1(ffn * 2), w2t((size_t)ffn * d * 2), b2(d * 2), h((size_t)B * ffn * 2), y((size_t)B * d * 2),
      hr_w((size_t)H * d * 2), hr_b(H * 2), mr1((size_t)rank * d * 2), mr2((size_t)ffn * rank * 2), hidx((size_t)B * top * 4),
      midx(ffn * 4), ws(128u << 20);
  init(x.p, (size_t)B * d, 31, 1.7f);
  init(wqkv.p, (size_t)3 * d * d, 32, 0.018f);
  init(bqkv.p, 3 * d, 33, 0.1f);
  init(wo.p, (size_t)d * d, 34, 0.018f);
  init(bo.p, d, 35, 0.1f);
  init(kc.p, (size_t)B * S * H * D, 36, 1.7f);
  init(vc.p, (size_t)B * S * H * D, 37, 1.7f);
  init(w1.p, (size_t)ffn * d, 38, 0.018f);
  init(b1.p, ffn, 39, 0.1f);
  init(w2t.p, (size_t)ffn * d, 40, 0.009f);
  init(b2.p, d, 41, 0.1f);
  init(hr_w.p, (size_t)H * d, 42, 0.018f);
  init(hr_b.p, H, 43, 0.1f);
  init(mr1.p, (size_t)rank * d, 44, 0.018f);
  init(mr2.p, (size_t)ffn * rank, 45, 0.05f);
  std::vector<int32_t> l(B, S);
  CK(cudaMemcpy(lens.p, l.data(), B * 4, cudaMemcpyHostToDevice));
  CK(cudaMemset(ws.p, 0, ws.bytes));
  CK(cudaDeviceSynchronize());

  auto lin = [&](const void* xin, int n, int kk, const void* w, const void* b, int act, void* out) {
    polar_cuda_dense_linear_params p{};
    p.dtype = g_dt; p.m = B; p.n = n; p.k = kk; p.x = xin; p.ldx = kk; p.w = w; p.ldw = kk; p.w_kn = 0; p.bias = b; p.act = act; p.y = out; p.ldy = n;
    PK(polar_cuda_dense_linear(&p));
  };
  int attn_splits = 0;  // 0 = planned (--sweep times others)
  auto attn_params = [&](bool sparse) {
    polar_cuda_attn_params p{};
    p.splits = attn_splits;
    p.dtype = g_dt; p.batch = B; p.q_heads = H; p.kv_heads = H; p.head_dim = D; p.max_seq = S;
    p.q = qkv.p; p.q_batch_stride = 3 * d; p.q_head_stride = D;  // q = the first d columns of the QKV output
    p.k_cache = kc.p; p.k_batch_stride = (int64_t)S * H * D;
    p.k_seq_stride = g_kv_bhsd ? D : (int64_t)H * D; p.k_head_stride = g_kv_bhsd ? (int64_t)S * D : D;
    p.v_cache = vc.p; p.v_batch_stride = p.k_batch_stride; p.v_seq_stride = p.k_seq_stride; p.v_head_stride = p.k_head_stride;
    p.seqlens = (const int32_t*)lens.p; p.idx = sparse ? (const int32_t*)hidx.p : nullptr; p.n_sel = top; p.idx_stride = top;
    p.scale = 1.f / std::sqrt((float)D); p.out = ao.p; p.o_batch_stride = d; p.o_head_stride = D;
    p.workspace = ws.p; p.workspace_bytes = ws.bytes;
    return p;
  };
  auto attn = [&](bool sparse) {
    const polar_cuda_attn_params p = attn_params(sparse);
    PK(polar_cuda_attn_decode(&p));
  };
  auto attn_plan = [&](bool sparse) {
    const polar_cuda_attn_params p = attn_params(sparse);
    char buf[128];
    PK(polar_cuda_attn_describe(&p, buf, sizeof buf));
    return std::string(buf);
  };
  auto head_router = [&] {
    polar_cuda_head_router_params p{};
    p.dtype = g_dt; p.m = B; p.d = d; p.units = H; p.q_heads = H; p.kv_heads = H; p.k = top; p.x = x.p; p.ldx = d;
    p.w = hr_w.p; p.b = hr_b.p; p.out_idx = (int32_t*)hidx.p; p.ld_idx = top; p.workspace = ws.p; p.workspace_bytes = ws.bytes;
    PK(polar_cuda_head_router(&p));
  };
  int router_k = k;  // 0: scores only (the top-k kernel returns at once), to time the selection apart
  int router_rank = rank;  // 8: the router's fixed costs (launches, token sum, barriers, select) with ~1 MB of weights
  auto mlp_router = [&] {
    polar_cuda_mlp_router_params p{};
    p.dtype = g_dt; p.m = B; p.d = d; p.rank = router_rank; p.ffn = ffn; p.k = router_k; p.x = o.p; p.ldx = d; p.fc1 = mr1.p; p.fc2 = mr2.p;
    p.score = POLAR_CUDA_SCORE_LOGIT; p.out_idx = (int32_t*)midx.p; p.workspace = ws.p; p.workspace_bytes = ws.bytes;
    PK(polar_cuda_mlp_router(&p));
  };
  auto mlp_sparse = [&] {
    polar_cuda_sel_fc1_params p1{};
    p1.dtype = g_dt; p1.m = B; p1.d = d; p1.k = k; p1.x = o.p; p1.ldx = d; p1.w1 = w1.p; p1.ldw1 = d; p1.b1 = b1.p;
    p1.idx = (const int32_t*)midx.p; p1.act = POLAR_ACT_RELU; p1.h = h.p; p1.ldh = k; p1.workspace = ws.p; p1.workspace_bytes = ws.bytes;
    PK(polar_cuda_sel_fc1(&p1));
    polar_cuda_sel_fc2_params p2{};
    p2.dtype = g_dt; p2.m = B; p2.d = d; p2.k = k; p2.h = h.p; p2.ldh = k; p2.w2t = w2t.p; p2.ldw2t = d; p2.b2 = b2.p;
    p2.idx = p1.idx; p2.y = y.p; p2.ldy = d; p2.workspace = ws.p; p2.workspace_bytes = ws.bytes; p2.after_fc1 = 1;
    PK(polar_cuda_sel_fc2(&p2));
  };
  auto mlp_dense = [&] {
    lin(o.p, ffn, d, w1.p, b1.p, POLAR_ACT_RELU, h.p);
    polar_cuda_dense_linear_params p{};
    p.dtype = g_dt; p.m = B; p.n = d; p.k = ffn; p.x = h.p; p.ldx = ffn; p.w = w2t.p; p.ldw = d; p.w_kn = 1; p.bias = b2.p; p.y = y.p; p.ldy = d;
    PK(polar_cuda_dense_linear(&p));
  };
  // the routers' workspaces must fit
  {
    polar_cuda_mlp_router_params p{};
    p.dtype = g_dt; p.m = B; p.d = d; p.rank = rank; p.ffn = ffn; p.k = k; p.x = o.p; p.ldx = d; p.fc1 = mr1.p; p.fc2 = mr2.p; p.out_idx = (int32_t*)midx.p;
    if (polar_cuda_mlp_router_workspace(&p) > ws.bytes) std::exit(4);
  }
  auto qkv_proj = [&] { lin(x.p, 3 * d, d, wqkv.p, bqkv.p, POLAR_ACT_NONE, qkv.p); };
  auto o_proj = [&] { lin(ao.p, d, d, wo.p, bo.p, POLAR_ACT_NONE, o.p); };

  // run once to set the router outputs, then time
  head_router();
  qkv_proj();
  attn(true);
  o_proj();
  mlp_router();
  mlp_sparse();
  CK(cudaDeviceSynchronize());
  const double t_hr = time_ms(head_router), t_mr = time_ms(mlp_router), t_qkv = time_ms(qkv_proj), t_o = time_ms(o_proj);
  const double t_as = time_ms([&] { attn(true); }), t_ad = time_ms([&] { attn(false); });
  const double t_ms = time_ms(mlp_sparse), t_md = time_ms(mlp_dense);
  router_k = 0;
  const double t_mr_scores = time_ms(mlp_router);
  router_k = k;
  const std::string router_path = polar_cuda_mlp_router_path();
  const std::string head_path = polar_cuda_head_router_path();
  // the router at rank 8 (~1 MB of weights): its fixed costs (launches, token sum, barriers, select), with and
  // without the select; then the batch's own selection is put back in midx
  auto router_probe = [&](double* full, double* scores) {
    router_rank = 8;
    *full = time_ms(mlp_router);
    router_k = 0;
    *scores = time_ms(mlp_router);
    router_k = k;
    router_rank = rank;
    mlp_router();
  };
  double t_mr_r8 = 0, t_mr_r8_scores = 0;
  router_probe(&t_mr_r8, &t_mr_r8_scores);
  if (g_sweep) {  // head router split-K on its GEMM path (the tuning's router_splits; 0 = default heuristic)
    polar_cuda_tuning before;
    polar_cuda_get_tuning(&before);
    for (int sp : {0, 1, 4, 9, 18, 36, 72, 144}) {
      set_tuning([sp](polar_cuda_tuning& t) { t.router_splits = sp; t.head_router_fused = 0; });
      const double t = time_ms(head_router);
      std::printf("{\"bench\":\"sweep_head_router\",\"model\":\"opt-66b\",\"batch\":%d,\"splits\":%d,\"ms\":%s,\"path\":\"%s\"}\n", B, sp,
                  jnum(t).c_str(), polar_cuda_head_router_path());
    }
    polar_cuda_set_tuning(&before);
    for (int st : {0, 2, 3})  // attention pipeline depth (0 = the planner's) x split-K, sparse and dense
      for (int sp : {0, 1, 2, 3, 4, 5, 6, 10}) {
        if ((st == 0) != (sp == 0)) continue;
        set_tuning([st](polar_cuda_tuning& t) { t.attn_stages = st; });
        attn_splits = sp;
        const double ts = time_ms([&] { attn(true); }), td = time_ms([&] { attn(false); });
        std::printf("{\"bench\":\"sweep_block_attn\",\"model\":\"opt-66b\",\"batch\":%d,\"seq\":%d,\"stages\":%d,\"splits\":%d,\"sparse_ms\":%s,\"dense_ms\":%s}\n",
                    B, S, st, sp, jnum(ts).c_str(), jnum(td).c_str());
      }
    set_tuning([](polar_cuda_tuning& t) { t.attn_stages = 0; });
    attn_splits = 0;
    // which heads are kept: the router's, the first `top` heads of every sequence, or the router's sorted
    // (whether the kept heads' positions in the cache move the sparse attention's rate per byte)
    std::vector<int32_t> sel((size_t)B * top);
    CK(cudaMemcpy(sel.data(), hidx.p, sel.size() * 4, cudaMemcpyDeviceToHost));
    const double t_router = time_ms([&] { attn(true); });
    std::vector<int32_t> alt(sel);
    for (int b = 0; b < B; ++b) std::sort(alt.begin() + (size_t)b * top, alt.begin() + (size_t)(b + 1) * top);
    CK(cudaMemcpy(hidx.p, alt.data(), alt.size() * 4, cudaMemcpyHostToDevice));
    const double t_sorted = time_ms([&] { attn(true); });
    for (int b = 0; b < B; ++b)
      for (int j = 0; j < top; ++j) alt[(size_t)b * top + j] = j;
    CK(cudaMemcpy(hidx.p, alt.data(), alt.size() * 4, cudaMemcpyHostToDevice));
    const double t_first = time_ms([&] { attn(true); });
    CK(cudaMemcpy(hidx.p, sel.data(), sel.size() * 4, cudaMemcpyHostToDevice));
    std::printf("{\"bench\":\"sweep_block_attn_heads\",\"model\":\"opt-66b\",\"batch\":%d,\"seq\":%d,\"router_ms\":%s,\"sorted_ms\":%s,\"first_ms\":%s,\"first_sel\":[%d,%d,%d,%d]}\n",
                B, S, jnum(t_router).c_str(), jnum(t_sorted).c_str(), jnum(t_first).c_str(), sel[0], sel[1], sel[2], sel[3]);
    std::fflush(stdout);
  }
  auto sparse_step = [&] {
    head_router();
    attn(true);
    mlp_router();
    mlp_sparse();
  };
  const double sparse_core = time_ms(sparse_step);
  const double dense_core = time_ms([&] {
    attn(false);
    mlp_dense();
  });
  // A/Bs in the same run: the tuning changed by `change`, the router part timed alone (and the MLP router's rank-8
  // probe where asked), the path it took, and the step; then the tuning is put back
  polar_cuda_tuning tu0;
  polar_cuda_get_tuning(&tu0);
  struct Variant {
    double part_ms = 0, r8_ms = 0, r8_scores_ms = 0, step_ms = 0;
    std::string path;
  };
  auto variant = [&](auto change, auto part, const char* (*path)(void), bool probe) {
    Variant v;
    set_tuning(change);
    v.part_ms = time_ms(part);
    v.path = path();
    if (probe) router_probe(&v.r8_ms, &v.r8_scores_ms);
    v.step_ms = time_ms(sparse_step);
    polar_cuda_set_tuning(&tu0);
    return v;
  };
  // the MLP router on its other path (tuning router_fused flipped)
  const Variant mr_alt = variant([&tu0](polar_cuda_tuning& t) { t.router_fused = !tu0.router_fused; }, mlp_router,
                                 polar_cuda_mlp_router_path, true);
  // the head router on its other path (tuning head_router_fused flipped)
  const Variant hr_alt = variant([&tu0](polar_cuda_tuning& t) { t.head_router_fused = !tu0.head_router_fused; }, head_router,
                                 polar_cuda_head_router_path, false);
  head_router();  // the default path's selection back in hidx
  // the MLP router's select always on its three-pass path (tuning select_cap = 0)
  const Variant mr_3p = variant([](polar_cuda_tuning& t) { t.select_cap = 0; }, mlp_router, polar_cuda_mlp_router_path, true);
  // the MLP router's token sum the other way (tuning router_fold_sum flipped: folded into the first GEMV, or its own kernel)
  const Variant mr_fold = variant([&tu0](polar_cuda_tuning& t) { t.router_fold_sum = !tu0.router_fold_sum; }, mlp_router,
                                  polar_cuda_mlp_router_path, true);
  // the select's first histogram the other way (tuning router_hist_in_gemv flipped)
  const Variant mr_hist = variant([&tu0](polar_cuda_tuning& t) { t.router_hist_in_gemv = !tu0.router_hist_in_gemv; }, mlp_router,
                                  polar_cuda_mlp_router_path, true);
  const double sparse_full = time_ms([&] {
    head_router();
    qkv_proj();
    attn(true);
    o_proj();
    mlp_router();
    mlp_sparse();
  });
  const double dense_full = time_ms([&] {
    qkv_proj();
    attn(false);
    o_proj();
    mlp_dense();
  });
  std::printf(
      "{\"bench\":\"block\",\"model\":\"opt-66b\",\"gpu\":\"%s\",\"dtype\":\"%s\",\"kv_layout\":\"%s\",\"topk_launch\":\"%s\",\"batch\":%d,\"seq\":%d,\"head_density\":%g,\"kept_heads\":%d,"
      "\"mlp_density\":%g,\"k\":%d,\"router_rank\":%d,\"attn_mlp_sparse_ms\":%s,\"attn_mlp_dense_ms\":%s,\"attn_mlp_speedup\":%s,"
      "\"block_sparse_ms\":%s,\"block_dense_ms\":%s,\"block_speedup\":%s,\"mlp_router_path\":\"%s\","
      "\"router_other_path\":{\"path\":\"%s\",\"mlp_router_ms\":%s,\"attn_mlp_sparse_ms\":%s},"
      "\"select_three_pass\":{\"mlp_router_ms\":%s,\"attn_mlp_sparse_ms\":%s},\"fold_sum_other\":{\"router_fold_sum\":%d,\"mlp_router_ms\":%s,\"attn_mlp_sparse_ms\":%s,\"rank8_ms\":%s},\"hist_in_gemv_other\":{\"router_hist_in_gemv\":%d,\"mlp_router_ms\":%s,\"attn_mlp_sparse_ms\":%s,\"rank8_ms\":%s},\"head_router_path\":\"%s\",\"head_router_other_path\":{\"path\":\"%s\",\"head_router_ms\":%s,\"attn_mlp_sparse_ms\":%s},"
      "\"attn_plan\":\"%s\",\"attn_plan_dense\":\"%s\",\"parts_ms\":{\"head_router\":%s,\"mlp_router\":%s,\"mlp_router_scores\":%s,"
      "\"qkv_proj\":%s,\"out_proj\":%s,\"attn_sparse\":%s,\"attn_dense\":%s,\"mlp_sparse\":%s,\"mlp_dense\":%s}}\n",
      g_gpu.c_str(), dtname(g_dt), g_kv_bhsd ? "bhsd" : "bshd", polar_cuda_topk_launch_mode(), B, S, head_dens, top, mlp_dens, k, rank, jnum(sparse_core).c_str(), jnum(dense_core).c_str(),
      jnum(dense_core / sparse_core, 3).c_str(), jnum(sparse_full).c_str(), jnum(dense_full).c_str(), jnum(dense_full / sparse_full, 3).c_str(),
      router_path.c_str(), mr_alt.path.c_str(), jnum(mr_alt.part_ms).c_str(), jnum(mr_alt.step_ms).c_str(), jnum(mr_3p.part_ms).c_str(),
      jnum(mr_3p.step_ms).c_str(), !tu0.router_fold_sum, jnum(mr_fold.part_ms).c_str(), jnum(mr_fold.step_ms).c_str(), jnum(mr_fold.r8_ms).c_str(),
      !tu0.router_hist_in_gemv, jnum(mr_hist.part_ms).c_str(), jnum(mr_hist.step_ms).c_str(), jnum(mr_hist.r8_ms).c_str(), head_path.c_str(),
      hr_alt.path.c_str(), jnum(hr_alt.part_ms).c_str(), jnum(hr_alt.step_ms).c_str(), attn_plan(true).c_str(), attn_plan(false).c_str(), jnum(t_hr).c_str(),
      jnum(t_mr).c_str(), jnum(t_mr_scores).c_str(), jnum(t_qkv).c_str(), jnum(t_o).c_str(), jnum(t_as).c_str(), jnum(t_ad).c_str(),
      jnum(t_ms).c_str(), jnum(t_md).c_str());
  // the MLP router's fixed costs (launches, token sum, barriers, select): rank 8, ~1 MB of weights
  std::printf("{\"bench\":\"router_probe\",\"model\":\"opt-66b\",\"batch\":%d,\"rank\":8,\"path\":\"%.5s\",\"ms\":%s,\"scores_ms\":%s,"
              "\"other_path\":\"%.5s\",\"other_ms\":%s,\"other_scores_ms\":%s,\"select_three_pass_ms\":%s}\n",
              B, router_path.c_str(), jnum(t_mr_r8).c_str(), jnum(t_mr_r8_scores).c_str(), mr_alt.path.c_str(), jnum(mr_alt.r8_ms).c_str(),
              jnum(mr_alt.r8_scores_ms).c_str(), jnum(mr_3p.r8_ms).c_str());
  std::fflush(stdout);
  std::fprintf(stderr, "block opt-66b B=64 S=1920: attn+MLP sparse %.4f ms vs dense %.4f ms (x%.2f); with QKV/out proj %.4f vs %.4f (x%.2f)\n",
               sparse_core, dense_core, dense_core / sparse_core, sparse_full, dense_full, dense_full / sparse_full);
}

int main(int argc, char** argv) {
  std::set<std::string> only;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") g_quick = true;
    else if (a == "--sweep") g_sweep = true;
    else if (a == "--sweep-points" && i + 1 < argc) g_sweep_points = argv[++i];
    else if (a == "--sweep-variants" && i + 1 < argc) g_sweep_variants = argv[++i];
    else if (a == "--mlp-point" && i + 1 < argc) g_point = argv[++i];
    else if (a == "--flush" && i + 1 < argc) {
      const std::string f = argv[++i];
      if (f != "read" && f != "write") {
        std::fprintf(stderr, "cuda_bench: --flush must be read or write, not '%s'\n", f.c_str());
        return 2;
      }
      g_flush_write = f == "write";
    } else if (a == "--hbm" && i + 1 < argc) {
      const std::string h = argv[++i];
      char* end = nullptr;
      const double tbs = std::strtod(h.c_str(), &end);
      if (h.empty() || *end || !(tbs > 0.1 && tbs < 100)) {
        std::fprintf(stderr, "cuda_bench: --hbm takes the memory limit in TB/s (e.g. 3.0), not '%s'\n", h.c_str());
        return 2;
      }
      HBM = tbs * 1e12;
    } else if (a == "--kv-layout" && i + 1 < argc) {
      const std::string l = argv[++i];
      if (l != "bshd" && l != "bhsd") {
        std::fprintf(stderr, "cuda_bench: --kv-layout must be bshd or bhsd, not '%s'\n", l.c_str());
        return 2;
      }
      g_kv_bhsd = l == "bhsd";
    } else if (a == "--dtype" && i + 1 < argc) g_dt = std::string(argv[++i]) == "bf16" ? POLAR_BF16 : POLAR_F16;
    else if (a == "--only" && i + 1 < argc) {
      std::string s = argv[++i];
      size_t p = 0;
      while (p <= s.size()) {
        size_t q = s.find(',', p);
        if (q == std::string::npos) q = s.size();
        only.insert(s.substr(p, q - p));
        p = q + 1;
      }
    }
  }
  polar_cuda_device_info info;
  if (polar_cuda_get_device_info(0, &info) != 0) {
    std::fprintf(stderr, "no usable CUDA device: %s\n", polar_last_error());
    return 1;
  }
  g_gpu = info.name;
  g_wgmma = info.wgmma;
  Dev flush(256u << 20);
  g_flush = &flush;
  CK(cudaMemset(flush.p, 0, flush.bytes));  // written once, so the read flush reads initialized memory
  CK(cudaDeviceSynchronize());
  const char* hbm_source = HBM > 0 ? "--hbm" : "measured";
  const double copy_bw = measure_copy_bw();
  if (HBM <= 0) HBM = copy_bw;
  std::fprintf(stderr, "memory limit: %.3f TB/s (%s; device-to-device copy measured %.3f TB/s)\n", HBM / 1e12,
               hbm_source, copy_bw / 1e12);
  std::printf("{\"bench\":\"meta\",\"gpu\":\"%s\",\"sm\":\"%d.%d\",\"sms\":%d,\"wgmma\":%d,\"dtype\":\"%s\",\"hbm_bytes_per_s\":%.4g,\"hbm_source\":\"%s\","
              "\"copy_bytes_per_s_measured\":%.4g,\"peak_flops\":%.3g,\"l2_flush_bytes\":%zu,\"l2_flush\":\"%s\",\"cublaslt\":%d}\n",
              g_gpu.c_str(), info.major, info.minor, info.sms, info.wgmma, dtname(g_dt), HBM, hbm_source, copy_bw, PEAK, flush.bytes,
              g_flush_write ? "write" : "read", polar_cuda_cublaslt_available());
  auto want = [&](const char* s) { return only.empty() || only.count(s); };
  if (want("mlp")) bench_mlp();
  if (want("attn")) bench_attn(false);
  if (want("gqa")) bench_attn(true);
  if (want("block")) bench_block();
  if (only.count("reads")) bench_reads();  // a probe of the memory system, not in the default run
  if (g_sweep) bench_sweep();
  polar_cuda_release();
  if (g_fail) std::fprintf(stderr, "%d checks FAILED\n", g_fail);
  return g_fail ? 1 : 0;
}
