// Model forward of the CUDA backend (polar/cuda_model.h): weights uploaded once (fp16/bf16), per-session KV
// cache on the GPU, and the batched causal forward of OPT and LLaMA, dense or sparse, with the semantics of
// the CPU backend (kernels/cpu/forward.cc). Projections go through cuBLASLt (polar_cuda_dense_linear), the
// sparse MLP through the router + selective fc1/fc2 kernels, sparse decode attention through the head router
// + polar_cuda_attn_decode; the glue kernels (embeddings, norms, RoPE + KV store, exact prefill attention,
// residual adds, fp32 logits GEMM) are simple and live in this file.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "common.cuh"
#include "polar/cuda_model.h"
#include "../host/model_config.h"

using namespace polar_cuda;

namespace {

// Failure inside the forward or a constructor: the message is already in polar_last_error().
struct Fail {};

[[noreturn]] __attribute__((format(printf, 1, 2))) void fail(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  polar_set_error("%s", buf);
  throw Fail{};
}

#define FW_CU(call)                                                                                        \
  do {                                                                                                     \
    cudaError_t e_ = (call);                                                                               \
    if (e_ != cudaSuccess)                                                                                 \
      fail("CUDA call %s failed: %s (%s:%d)", #call, cudaGetErrorString(e_), __FILE__, __LINE__);          \
  } while (0)
#define FW_LAUNCHED(what)                                                                                  \
  do {                                                                                                     \
    cudaError_t e_ = cudaGetLastError();                                                                   \
    if (e_ != cudaSuccess) fail("CUDA launch of %s failed: %s (%s:%d)", what, cudaGetErrorString(e_), __FILE__, __LINE__); \
  } while (0)
// A kernel-library call (polar/cuda.h) that failed: keep its message, add where it was called from.
#define FW_K(call)                                                                                         \
  do {                                                                                                     \
    if ((call) != 0) {                                                                                     \
      std::string m_ = polar_last_error();                                                                 \
      fail("%s (called at %s:%d)", m_.c_str(), __FILE__, __LINE__);                                        \
    }                                                                                                      \
  } while (0)

// ---- device memory -------------------------------------------------------------------------------------
struct DevBuf {
  void* p = nullptr;
  size_t bytes = 0;
  DevBuf() = default;
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  ~DevBuf() {
    if (p) cudaFree(p);
  }
  // Grows (contents are not kept) to at least b bytes.
  void* ensure(size_t b) {
    if (b <= bytes && p) return p;
    if (p) {
      cudaFree(p);
      p = nullptr;
      bytes = 0;
    }
    size_t want = std::max<size_t>(b, 256);
    FW_CU(cudaMalloc(&p, want));
    bytes = want;
    return p;
  }
  template <class T>
  T* as() const {
    return (T*)p;
  }
};

// ---- small kernels ---------------------------------------------------------------------------------------
__device__ __forceinline__ float ld_any(const void* p, int dt, int64_t i) {
  if (dt == POLAR_F32) return ((const float*)p)[i];
  if (dt == POLAR_F16) return __half2float(((const __half*)p)[i]);
  return __bfloat162float(((const __nv_bfloat16*)p)[i]);
}
__device__ __forceinline__ void st_any(void* p, int dt, int64_t i, float v) {
  if (dt == POLAR_F32)
    ((float*)p)[i] = v;
  else if (dt == POLAR_F16)
    ((__half*)p)[i] = __float2half_rn(v);
  else
    ((__nv_bfloat16*)p)[i] = __float2bfloat16_rn(v);
}

// dst = convert(src); transposed: src [rows, cols] -> dst [cols, rows].
__global__ void k_convert(const void* src, int sdt, void* dst, int ddt, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    st_any(dst, ddt, i, ld_any(src, sdt, i));
}
__global__ void k_transpose(const void* src, int sdt, void* dst, int ddt, int64_t rows, int64_t cols) {
  __shared__ float tile[32][33];
  const int64_t c0 = blockIdx.x * 32, r0 = blockIdx.y * 32;
  for (int i = threadIdx.y; i < 32; i += blockDim.y) {
    const int64_t r = r0 + i, c = c0 + threadIdx.x;
    if (r < rows && c < cols) tile[i][threadIdx.x] = ld_any(src, sdt, r * cols + c);
  }
  __syncthreads();
  for (int i = threadIdx.y; i < 32; i += blockDim.y) {
    const int64_t c = c0 + i, r = r0 + threadIdx.x;
    if (r < rows && c < cols) st_any(dst, ddt, c * rows + r, tile[threadIdx.x][i]);
  }
}

// x[t, :] = emb[tok[t], :] (+ pos[(pos_t + off), :]) ; width n
__global__ void k_embed(const void* emb, int edt, const int32_t* tok, const void* pos_emb, const int32_t* pos, int off, int n,
                        float* x) {
  const int t = blockIdx.x;
  const int64_t eb = (int64_t)tok[t] * n;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    float v = ld_any(emb, edt, eb + i);
    if (pos_emb) v += ld_any(pos_emb, edt, (int64_t)(pos[t] + off) * n + i);
    x[(int64_t)t * n + i] = v;
  }
}
__global__ void k_add_pos(float* x, const void* pos_emb, int edt, const int32_t* pos, int off, int n) {
  const int t = blockIdx.x;
  for (int i = threadIdx.x; i < n; i += blockDim.x) x[(int64_t)t * n + i] += ld_any(pos_emb, edt, (int64_t)(pos[t] + off) * n + i);
}

__device__ double block_sum(double v, double* sh) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int w = threadIdx.x / 32, l = threadIdx.x % 32, nw = blockDim.x / 32;
  __syncthreads();
  if (l == 0) sh[w] = v;
  __syncthreads();
  double s = 0;
  for (int i = 0; i < nw; i++) s += sh[i];
  return s;
}

// mode 0: copy, 1: LayerNorm, 2: RMSNorm. Row t of x [T, n] -> yf (fp32, may alias x; may be NULL) and yh
// (dtype dt; may be NULL). fp32 math with double sums, as kernels/cpu/norm.cc.
template <typename T>
__global__ void k_norm(int mode, const float* x, int n, const float* w, const float* b, float eps, float* yf, T* yh) {
  __shared__ double sh[32];
  const int64_t row = (int64_t)blockIdx.x * n;
  const float* xr = x + row;
  float mean = 0.f, rs = 1.f;
  if (mode == 1) {
    double s = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += xr[i];
    const double m = block_sum(s, sh) / n;
    double v = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const double d = xr[i] - m;
      v += d * d;
    }
    v = block_sum(v, sh);
    rs = (float)(1.0 / sqrt(v / n + (double)eps));
    mean = (float)m;
  } else if (mode == 2) {
    double s = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += (double)xr[i] * xr[i];
    s = block_sum(s, sh);
    rs = (float)(1.0 / sqrt(s / n + (double)eps));
  }
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    float y = xr[i];
    if (mode == 1)
      y = (y - mean) * rs * w[i] + (b ? b[i] : 0.f);
    else if (mode == 2)
      y = w[i] * (y * rs);
    if (yf) yf[row + i] = y;
    if (yh) yh[row + i] = Dt<T>::t(y);
  }
}

// x[t, i] += y[t * ldy + i] (ldy 0: a broadcast bias row); y in dtype T
template <typename T>
__global__ void k_add(float* x, int n, const T* y, int64_t ldy, int64_t total) {
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t t = e / n, i = e % n;
    x[e] += Dt<T>::f(y[t * ldy + i]);
  }
}

template <typename T>
__global__ void k_silu_mul(const T* g, T* u, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const float a = Dt<T>::f(g[i]);
    u[i] = Dt<T>::t(a / (1.0f + expf(-a)) * Dt<T>::f(u[i]));
  }
}

// RoPE on q (in place) and k, then k/v rows into the cache: cache[(slot * max_len + pos) * KD + g * hd + d]
// (the cache pointers are the layer's base). One block per token.
template <typename T>
__global__ void k_rope_store(T* q, const T* k, const T* v, int NH, int KV, int hd, const int32_t* tok_slot, const int32_t* tok_pos,
                             const float* cos_t, const float* sin_t, int rope, T* kc, T* vc, int max_len) {
  const int t = blockIdx.x;
  const int half = hd / 2;
  const int QD = NH * hd, KD = KV * hd;
  const int pos = tok_pos[t];
  T* qt = q + (int64_t)t * QD;
  const T* kt = k + (int64_t)t * KD;
  const T* vt = v + (int64_t)t * KD;
  // head-major cache: a slot is [KV][max_len][hd], so position pos of head h is at h * hs + pos * hd
  const int64_t hs = (int64_t)max_len * hd;
  T* kd = kc + (int64_t)tok_slot[t] * max_len * KD + (int64_t)pos * hd;
  T* vd = vc + (int64_t)tok_slot[t] * max_len * KD + (int64_t)pos * hd;
  const float* cs = cos_t + (int64_t)pos * half;
  const float* sn = sin_t + (int64_t)pos * half;
  if (rope) {
    for (int e = threadIdx.x; e < NH * half; e += blockDim.x) {
      const int h = e / half, i = e % half;
      T* r = qt + h * hd;
      const float a = Dt<T>::f(r[i]), b = Dt<T>::f(r[i + half]);
      r[i] = Dt<T>::t(a * cs[i] - b * sn[i]);
      r[i + half] = Dt<T>::t(b * cs[i] + a * sn[i]);
    }
    for (int e = threadIdx.x; e < KV * half; e += blockDim.x) {
      const int h = e / half, i = e % half;
      const T* r = kt + h * hd;
      const float a = Dt<T>::f(r[i]), b = Dt<T>::f(r[i + half]);
      kd[h * hs + i] = Dt<T>::t(a * cs[i] - b * sn[i]);
      kd[h * hs + i + half] = Dt<T>::t(b * cs[i] + a * sn[i]);
    }
  } else {
    for (int e = threadIdx.x; e < KD; e += blockDim.x) kd[e / hd * hs + e % hd] = kt[e];
  }
  for (int e = threadIdx.x; e < KD; e += blockDim.x) vd[e / hd * hs + e % hd] = vt[e];
}

// Exact causal attention of the T new tokens: one warp per (token, head); keys 0..pos_t of the token's slot.
// Online softmax in fp32 over chunks of 32 keys (lane j scores key j of the chunk), output in dtype T.
// mask [T, NH] (NULL: every head): masked heads output zeros and a zero norm.
constexpr int kAttnWarps = 4;
constexpr int kMaxHd = 256;
template <typename T>
__global__ void k_attn(const T* q, int T_, int NH, int KV, int hd, const int32_t* tok_slot, const int32_t* tok_pos, const T* kc, const T* vc,
                       int max_len, float scale, const uint8_t* mask, T* out, float* head_norm) {
  __shared__ float qs[kAttnWarps][kMaxHd];
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t pair = (int64_t)blockIdx.x * kAttnWarps + w;
  if (pair >= (int64_t)T_ * NH) return;
  const int t = (int)(pair / NH), h = (int)(pair % NH);
  const int G = NH / KV, g = h / G;
  const int QD = NH * hd, KD = KV * hd;
  T* o = out + (int64_t)t * QD + (int64_t)h * hd;
  if (mask && !mask[(int64_t)t * NH + h]) {
    for (int d = lane; d < hd; d += 32) o[d] = Dt<T>::t(0.f);
    if (head_norm && lane == 0) head_norm[(int64_t)t * NH + h] = 0.f;
    return;
  }
  const T* qt = q + (int64_t)t * QD + (int64_t)h * hd;
  for (int d = lane; d < hd; d += 32) qs[w][d] = Dt<T>::f(qt[d]) * scale;
  __syncwarp();
  const int n_keys = tok_pos[t] + 1;
  const T* K = kc + (int64_t)tok_slot[t] * max_len * KD + (int64_t)g * max_len * hd;  // head-major slot
  const T* V = vc + (int64_t)tok_slot[t] * max_len * KD + (int64_t)g * max_len * hd;
  const int nd = (hd + 31) / 32;
  float acc[kMaxHd / 32];
#pragma unroll
  for (int i = 0; i < kMaxHd / 32; i++) acc[i] = 0.f;
  float m = -INFINITY, l = 0.f;
  for (int k0 = 0; k0 < n_keys; k0 += 32) {
    const int key = k0 + lane;
    float s = -INFINITY;
    if (key < n_keys) {
      const T* kr = K + (int64_t)key * hd;
      float a = 0.f;
      for (int d = 0; d < hd; d += 8) {
        const V8 u = *reinterpret_cast<const V8*>(kr + d);
#pragma unroll
        for (int j = 0; j < 4; j++) {
          const float2 f = Dt<T>::unpack(u.u[j]);
          a += qs[w][d + 2 * j] * f.x + qs[w][d + 2 * j + 1] * f.y;
        }
      }
      s = a;
    }
    float cm = s;
    for (int off = 16; off > 0; off >>= 1) cm = fmaxf(cm, __shfl_xor_sync(0xffffffffu, cm, off));
    const float mn = fmaxf(m, cm);
    const float alpha = m == -INFINITY ? 0.f : expf(m - mn);
    const float p = key < n_keys ? expf(s - mn) : 0.f;
    float ps = p;
    for (int off = 16; off > 0; off >>= 1) ps += __shfl_xor_sync(0xffffffffu, ps, off);
    l = l * alpha + ps;
    m = mn;
#pragma unroll
    for (int i = 0; i < kMaxHd / 32; i++) acc[i] *= alpha;
    const int nk = min(32, n_keys - k0);
    for (int j = 0; j < nk; j++) {
      const float pj = __shfl_sync(0xffffffffu, p, j);
      const T* vr = V + (int64_t)(k0 + j) * hd;
#pragma unroll
      for (int i = 0; i < kMaxHd / 32; i++) {
        const int d = lane + 32 * i;
        if (i < nd && d < hd) acc[i] += pj * Dt<T>::f(vr[d]);
      }
    }
  }
  const float inv = 1.0f / l;
  float ss = 0.f;
#pragma unroll
  for (int i = 0; i < kMaxHd / 32; i++) {
    const int d = lane + 32 * i;
    if (i < nd && d < hd) {
      const float y = acc[i] * inv;
      ss += y * y;
      o[d] = Dt<T>::t(y);
    }
  }
  if (head_norm) {
    for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, off);
    if (lane == 0) head_norm[(int64_t)t * NH + h] = sqrtf(ss);
  }
}

// L2 norm of each head's output: att [T, NH*hd] -> norm [T, NH]
template <typename T>
__global__ void k_head_norm(const T* att, int NH, int hd, float* norm) {
  const int t = blockIdx.x;
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int h = w; h < NH; h += blockDim.x / 32) {
    const T* o = att + ((int64_t)t * NH + h) * hd;
    float s = 0.f;
    for (int d = lane; d < hd; d += 32) {
      const float v = Dt<T>::f(o[d]);
      s += v * v;
    }
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (lane == 0) norm[(int64_t)t * NH + h] = sqrtf(s);
  }
}

// kept groups idx [T, ld] (k of them, entries out of range skipped) -> mask [T, NH]
__global__ void k_mask_from_idx(const int32_t* idx, int64_t ld, int k, int T_, int NH, int KV, uint8_t* mask) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= T_) return;
  const int G = NH / KV;
  uint8_t* mt = mask + (int64_t)t * NH;
  for (int h = 0; h < NH; h++) mt[h] = 0;
  for (int j = 0; j < k; j++) {
    const int g = idx[(int64_t)t * ld + j];
    if (g >= 0 && g < KV)
      for (int r = 0; r < G; r++) mt[g * G + r] = 1;
  }
}

// idx[0..k) ascending and distinct; appends the `pad` smallest neuron ids not in it at idx[k..k+pad).
__global__ void k_pad_idx(int32_t* idx, int k, int pad) {
  if (threadIdx.x || blockIdx.x) return;
  int j = 0, found = 0;
  for (int n = 0; found < pad; n++) {
    while (j < k && idx[j] < n) j++;
    if (j < k && idx[j] == n) continue;
    idx[k + found++] = n;
  }
}

// h[t, c] = 0 for c in [k0, k1)  (h [T, ld])
template <typename T>
__global__ void k_zero_cols(T* h, int64_t ld, int k0, int k1, int T_) {
  const int64_t n = (int64_t)T_ * (k1 - k0);
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t t = e / (k1 - k0), c = k0 + e % (k1 - k0);
    h[t * ld + c] = Dt<T>::t(0.f);
  }
}

// out [T, F] fp32 (zeroed before) : out[t, idx[j]] = h[t, j], j < k
template <typename T>
__global__ void k_scatter(const T* h, int64_t ldh, const int32_t* idx, int k, int T_, int F, float* out) {
  const int64_t n = (int64_t)T_ * k;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t t = e / k, j = e % k;
    out[t * F + idx[j]] = Dt<T>::f(h[t * ldh + j]);
  }
}

// rows: dst[i, :] = src[row[i], :]
__global__ void k_gather(const float* src, const int32_t* row, int n, float* dst) {
  const int i = blockIdx.x;
  for (int c = threadIdx.x; c < n; c += blockDim.x) dst[(int64_t)i * n + c] = src[(int64_t)row[i] * n + c];
}

// Y[M, N] = X[M, K] (fp32) . W[N, K]^T (dtype T), fp32 out: the logits, OPT project_in/out. 64x64 tiles.
template <typename T>
__global__ void __launch_bounds__(256) k_gemm_f32(int M, int N, int K, const float* X, int64_t ldx, const T* W, int64_t ldw, float* Y,
                                                  int64_t ldy) {
  __shared__ float As[16][64 + 4], Bs[16][64 + 4];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int m0 = blockIdx.y * 64, n0 = blockIdx.x * 64;
  float acc[4][4] = {};
  for (int k0 = 0; k0 < K; k0 += 16) {
    for (int i = tid; i < 64 * 16; i += 256) {
      const int r = i / 16, c = i % 16, gk = k0 + c;
      const int gm = m0 + r, gn = n0 + r;
      As[c][r] = (gm < M && gk < K) ? X[(int64_t)gm * ldx + gk] : 0.f;
      Bs[c][r] = (gn < N && gk < K) ? Dt<T>::f(W[(int64_t)gn * ldw + gk]) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < 16; kk++) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; i++) a[i] = As[kk][ty * 4 + i];
#pragma unroll
      for (int j = 0; j < 4; j++) b[j] = Bs[kk][tx * 4 + j];
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int gm = m0 + ty * 4 + i;
    if (gm >= M) continue;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const int gn = n0 + tx * 4 + j;
      if (gn < N) Y[(int64_t)gm * ldy + gn] = acc[i][j];
    }
  }
}

inline int grid_for(int64_t n, int threads = 256) { return (int)std::max<int64_t>(1, std::min<int64_t>((n + threads - 1) / threads, 65535)); }

// ---- host helpers ----------------------------------------------------------------------------------------
const char* dtype_name(polar_dtype d) { return d == POLAR_F32 ? "F32" : d == POLAR_F16 ? "F16" : d == POLAR_BF16 ? "BF16" : "?"; }

std::string shape_str(const int64_t* s, int n) {
  std::string r = "[";
  for (int i = 0; i < n; i++) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

void check_config(const polar_model_config& c) {
  if (const std::string e = polar::model_config_error(c); !e.empty()) fail("%s", e.c_str());
  // what the CUDA kernels need
  if (c.head_dim % 8 || c.head_dim > kMaxHd)
    fail("CUDA backend: config.head_dim: expected a multiple of 8 up to %d, received %d", kMaxHd, c.head_dim);
  if (c.hidden % 8 || c.ffn % 8 || c.embed_dim % 8)
    fail("CUDA backend: expected hidden, ffn and embed_dim multiples of 8 (16-byte rows for cuBLASLt and the selective GEMMs), received %d, %d, %d",
         c.hidden, c.ffn, c.embed_dim);
}

}  // namespace

// ---- model -----------------------------------------------------------------------------------------------
struct CLayer {
  void *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr, *qb = nullptr, *kb = nullptr, *vb = nullptr, *ob = nullptr;
  void *up = nullptr, *gate = nullptr, *down_t = nullptr, *upb = nullptr, *gateb = nullptr, *downb = nullptr;
  float *an_w = nullptr, *an_b = nullptr, *mn_w = nullptr, *mn_b = nullptr;
};

struct polar_cuda_model {
  polar_model_config cfg{};
  polar_dtype dt = POLAR_F16;
  int device = 0;
  std::vector<void*> allocs;
  size_t bytes = 0;
  void *tok_emb = nullptr, *pos_emb = nullptr, *proj_in = nullptr, *proj_out = nullptr, *lm_head = nullptr;
  float *fn_w = nullptr, *fn_b = nullptr;
  std::vector<CLayer> layers;
  std::vector<float> inv_freq;
  ~polar_cuda_model() {
    if (!allocs.empty()) cudaSetDevice(device);
    for (void* p : allocs) cudaFree(p);
  }
};

namespace {

class Uploader {
 public:
  Uploader(polar_cuda_model* m, const polar_weight_desc* w, int n) : m_(m) {
    for (int i = 0; i < n; i++) {
      if (!w[i].name) fail("weight %d: name is NULL", i);
      byname_[w[i].name] = &w[i];
    }
  }

  // Uploads a tensor converted to `to` (F32 for norms), transposed when asked ([r, c] -> [c, r]); NULL when
  // absent and not required. Identical (file, offset, conversion) tensors share one upload (tied embeddings).
  void* get(const std::string& name, std::vector<int64_t> shape, polar_dtype to, bool required = true, bool transpose = false) {
    auto it = byname_.find(name);
    if (it == byname_.end()) {
      if (!required) return nullptr;
      fail("weight \"%s\": expected a tensor of shape %s, received none", name.c_str(), shape_str(shape.data(), (int)shape.size()).c_str());
    }
    const polar_weight_desc& d = *it->second;
    if (d.dtype != POLAR_F32 && d.dtype != POLAR_F16 && d.dtype != POLAR_BF16)
      fail("weight \"%s\".dtype: expected F32, F16 or BF16, received %d", name.c_str(), (int)d.dtype);
    bool same = d.ndim == (int)shape.size();
    for (int i = 0; same && i < d.ndim; i++) same = d.shape[i] == shape[i];
    if (!same)
      fail("weight \"%s\".shape: expected %s, received %s", name.c_str(), shape_str(shape.data(), (int)shape.size()).c_str(),
           shape_str(d.shape, std::max(0, std::min(d.ndim, 4))).c_str());
    int64_t numel = 1;
    for (int64_t s : shape) numel *= s;
    const int64_t want = numel * (int64_t)polar_dtype_size(d.dtype);
    if (d.nbytes != want)
      fail("weight \"%s\": expected %lld bytes for %s %s, received %lld", name.c_str(), (long long)want, dtype_name(d.dtype),
           shape_str(shape.data(), (int)shape.size()).c_str(), (long long)d.nbytes);
    auto key = std::make_tuple(std::string(d.file ? d.file : ""), d.file ? d.offset : (int64_t)(intptr_t)d.data, (int)to, transpose);
    auto hit = done_.find(key);
    if (hit != done_.end()) return hit->second;

    const void* host = d.data;
    if (d.file) {
      buf_.resize((size_t)d.nbytes);
      read_range(d.file, d.offset, d.nbytes, buf_.data(), name);
      host = buf_.data();
    } else if (!host) {
      fail("weight \"%s\": expected a file or a data pointer, received neither", name.c_str());
    }
    void* dst = nullptr;
    const size_t out_bytes = (size_t)numel * polar_dtype_size(to);
    FW_CU(cudaMalloc(&dst, std::max<size_t>(out_bytes, 16)));
    m_->allocs.push_back(dst);
    m_->bytes += out_bytes;
    if (d.dtype == to && !transpose) {
      FW_CU(cudaMemcpy(dst, host, (size_t)d.nbytes, cudaMemcpyHostToDevice));
    } else {
      void* st = staging_.ensure((size_t)d.nbytes);
      FW_CU(cudaMemcpy(st, host, (size_t)d.nbytes, cudaMemcpyHostToDevice));
      if (transpose) {
        const int64_t r = shape[0], c = shape[1];
        dim3 grid((unsigned)((c + 31) / 32), (unsigned)((r + 31) / 32));
        k_transpose<<<grid, dim3(32, 8)>>>(st, d.dtype, dst, to, r, c);
      } else {
        k_convert<<<grid_for(numel), 256>>>(st, d.dtype, dst, to, numel);
      }
      FW_LAUNCHED("weight conversion");
      FW_CU(cudaDeviceSynchronize());
    }
    done_[key] = dst;
    return dst;
  }

  const std::unordered_map<std::string, const polar_weight_desc*>& all() const { return byname_; }

 private:
  static void read_range(const char* path, int64_t off, int64_t n, uint8_t* dst, const std::string& name) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail("%s: cannot open weights file: %s", path, std::strerror(errno));
    int64_t got = 0;
    while (got < n) {
      ssize_t r = pread(fd, dst + got, (size_t)std::min<int64_t>(n - got, 1 << 30), off + got);
      if (r <= 0) {
        const int e = errno;
        close(fd);
        fail("%s: weight \"%s\": expected bytes [%lld, %lld) within the file, read failed at %lld: %s", path, name.c_str(), (long long)off,
             (long long)(off + n), (long long)(off + got), r == 0 ? "end of file" : std::strerror(e));
      }
      got += r;
    }
    close(fd);
  }

  polar_cuda_model* m_;
  std::unordered_map<std::string, const polar_weight_desc*> byname_;
  std::map<std::tuple<std::string, int64_t, int, bool>, void*> done_;
  std::vector<uint8_t> buf_;
  DevBuf staging_;
};

void build(polar_cuda_model* m, const polar_model_config& c, const polar_weight_desc* w, int n, const polar_cuda_model_options* o) {
  check_config(c);
  m->cfg = c;
  m->device = o ? o->device : 0;
  int ndev = 0;
  FW_CU(cudaGetDeviceCount(&ndev));
  if (m->device < 0 || m->device >= ndev) fail("CUDA device: expected 0..%d, received %d", ndev - 1, m->device);
  FW_CU(cudaSetDevice(m->device));
  Uploader u(m, w, n);
  // dtype on the GPU: the stored half dtype (bf16 wins when both occur); fp32 checkpoints -> opts.dtype (f16 default)
  bool any_bf16 = false, any_f16 = false;
  for (auto& kv : u.all()) {
    any_bf16 |= kv.second->dtype == POLAR_BF16;
    any_f16 |= kv.second->dtype == POLAR_F16;
  }
  m->dt = any_bf16 ? POLAR_BF16 : any_f16 ? POLAR_F16 : (o && o->dtype == POLAR_BF16 ? POLAR_BF16 : POLAR_F16);
  const polar_dtype D = m->dt;
  const int64_t H = c.hidden, F = c.ffn, V = c.vocab, QD = (int64_t)c.heads * c.head_dim, KD = (int64_t)c.kv_heads * c.head_dim;
  if (c.family == POLAR_FAMILY_OPT) {
    const int64_t E = c.embed_dim;
    m->tok_emb = u.get("tok_emb.weight", {V, E}, D);
    m->pos_emb = u.get("pos_emb.weight", {c.max_positions + (int64_t)c.position_offset, H}, D);
    if (E != H) {
      m->proj_in = u.get("proj_in.weight", {H, E}, D);
      m->proj_out = u.get("proj_out.weight", {E, H}, D);
    }
    if (c.norm_before) {
      m->fn_w = (float*)u.get("final_norm.weight", {H}, POLAR_F32);
      m->fn_b = (float*)u.get("final_norm.bias", {H}, POLAR_F32);
    }
    m->lm_head = u.get("lm_head.weight", {V, E}, D);
  } else {
    m->tok_emb = u.get("tok_emb.weight", {V, H}, D);
    m->fn_w = (float*)u.get("final_norm.weight", {H}, POLAR_F32);
    m->lm_head = u.get("lm_head.weight", {V, H}, D);
    polar::rope_inv_freq(c, m->inv_freq);
  }
  const bool opt = c.family == POLAR_FAMILY_OPT;
  for (int l = 0; l < c.layers; l++) {
    CLayer L;
    const std::string p = "layers." + std::to_string(l) + ".";
    L.q = u.get(p + "q.weight", {QD, H}, D);
    L.k = u.get(p + "k.weight", {KD, H}, D);
    L.v = u.get(p + "v.weight", {KD, H}, D);
    L.o = u.get(p + "o.weight", {H, QD}, D);
    L.qb = u.get(p + "q.bias", {QD}, D, false);
    L.kb = u.get(p + "k.bias", {KD}, D, false);
    L.vb = u.get(p + "v.bias", {KD}, D, false);
    L.ob = u.get(p + "o.bias", {H}, D, false);
    L.an_w = (float*)u.get(p + "attn_norm.weight", {H}, POLAR_F32);
    L.mn_w = (float*)u.get(p + "mlp_norm.weight", {H}, POLAR_F32);
    if (opt) {
      L.an_b = (float*)u.get(p + "attn_norm.bias", {H}, POLAR_F32);
      L.mn_b = (float*)u.get(p + "mlp_norm.bias", {H}, POLAR_F32);
    }
    if (c.gated) L.gate = u.get(p + "gate.weight", {F, H}, D);
    L.up = u.get(p + "up.weight", {F, H}, D);
    // the down projection is kept transposed only ([ffn, hidden]: one row per neuron, what fc2 reads; the
    // dense path uses it as a [k, n] operand of cuBLASLt)
    L.down_t = u.get(p + "down.weight", {H, F}, D, true, true);
    if (c.gated) L.gateb = u.get(p + "gate.bias", {F}, D, false);
    L.upb = u.get(p + "up.bias", {F}, D, false);
    L.downb = u.get(p + "down.bias", {H}, D, false);
    m->layers.push_back(L);
  }
}

}  // namespace

// ---- session ---------------------------------------------------------------------------------------------
struct RouterCacheEntry {
  const void* host;
  size_t bytes;
  uint64_t fp;
  DevBuf dev;
};

struct polar_cuda_session {
  polar_cuda_model* m = nullptr;
  int max_seqs = 0, max_len = 0;
  std::vector<int> len;
  cudaStream_t stream = nullptr;
  // [layers][slots][KV][max_len][hd]: head-major, so that a kept head's keys and values are one contiguous
  // stream (the selective attention reads 22 of 72 heads at OPT-66B; per position they were 256-byte pieces)
  DevBuf kc, vc;
  DevBuf rope_cos, rope_sin;
  // per-call scratch
  DevBuf ints, x, xn, xh, q, k, v, att, y, act, gate, f32tmp, logits, hrows, hn, po, e, mask, head_idx, mlp_idx, ws, hnorm;
  size_t ws_zeroed = 0;
  std::vector<std::unique_ptr<RouterCacheEntry>> routers;
  ~polar_cuda_session() {
    if (stream) {
      cudaStreamSynchronize(stream);
      cudaStreamDestroy(stream);
    }
  }
  size_t layer_off(int l) const {
    const polar_model_config& c = m->cfg;
    return (size_t)l * max_seqs * max_len * c.kv_heads * c.head_dim;
  }
};

namespace {

uint64_t fingerprint(const float* p, size_t n) {
  uint64_t h = 1469598103934665603ull ^ n;
  const size_t step = std::max<size_t>(1, n / 61);
  auto mix = [&](size_t i) {
    uint32_t u;
    std::memcpy(&u, p + i, 4);
    h = (h ^ u) * 1099511628211ull;
  };
  for (size_t i = 0; i < n; i += step) mix(i);
  if (n) mix(n - 1);
  return h;
}

// fp32 host router weights -> the model dtype on the GPU, cached per session (see cuda_model.h).
const void* router_weights(polar_cuda_session* s, const float* host, size_t n) {
  if (!host || !n) return nullptr;
  const uint64_t fp = fingerprint(host, n);
  for (auto& e : s->routers)
    if (e->host == host && e->bytes == n * 4 && e->fp == fp) return e->dev.p;
  if (s->routers.size() >= 4096) s->routers.clear();
  auto e = std::make_unique<RouterCacheEntry>();
  e->host = host;
  e->bytes = n * 4;
  e->fp = fp;
  DevBuf tmp;
  tmp.ensure(n * 4);
  e->dev.ensure(n * 2);
  FW_CU(cudaMemcpyAsync(tmp.p, host, n * 4, cudaMemcpyHostToDevice, s->stream));
  k_convert<<<grid_for((int64_t)n), 256, 0, s->stream>>>(tmp.p, POLAR_F32, e->dev.p, s->m->dt, (int64_t)n);
  FW_LAUNCHED("router weight conversion");
  FW_CU(cudaStreamSynchronize(s->stream));  // tmp is freed next
  s->routers.push_back(std::move(e));
  return s->routers.back()->dev.p;
}

// The shared kernel workspace: zero-filled when (re)allocated, left zero-filled by every call (polar/cuda.h).
void* workspace(polar_cuda_session* s, size_t need) {
  if (need <= s->ws_zeroed && s->ws.p) return s->ws.p;
  FW_CU(cudaStreamSynchronize(s->stream));
  s->ws.ensure(std::max(need, s->ws_zeroed * 2));
  FW_CU(cudaMemset(s->ws.p, 0, s->ws.bytes));
  s->ws_zeroed = s->ws.bytes;
  return s->ws.p;
}

// Points a kernel's params at the shared workspace, grown to `need` bytes (none when the kernel needs none).
template <typename P>
void use_workspace(polar_cuda_session* s, P& p, size_t need) {
  p.workspace = need ? workspace(s, need) : nullptr;
  p.workspace_bytes = need ? s->ws.bytes : 0;
}

struct MlpSel {
  bool sparse = false;
  int K = 0, Kp = 0;            // kept neurons, padded to a multiple of 8
  std::vector<int32_t> host;    // explicit: the sorted list
};

template <typename DT>
void forward_t(polar_cuda_session* s, const polar_forward_params* p) {
  polar_cuda_model* m = s->m;
  const polar_model_config& c = m->cfg;
  const polar_dtype D = m->dt;
  const int H = c.hidden, hd = c.head_dim, NH = c.heads, KV = c.kv_heads, F = c.ffn, E = c.embed_dim, Vv = c.vocab;
  const int QD = NH * hd, KD = KV * hd, G = NH / KV;
  const bool opt = c.family == POLAR_FAMILY_OPT;
  cudaStream_t st = s->stream;
  const size_t ts = sizeof(DT);

  // ---- argument checks (the TypeScript layer checks first) ----
  if (!p || p->n_inputs < 1 || !p->slots || !p->n_tokens || !p->tokens) fail("forward: expected at least one input");
  std::vector<char> used(s->max_seqs, 0);
  int64_t T64 = 0;
  for (int i = 0; i < p->n_inputs; i++) {
    const int sl = p->slots[i], n = p->n_tokens[i];
    if (sl < 0 || sl >= s->max_seqs) fail("forward: inputs[%d].slot: expected 0..%d, received %d", i, s->max_seqs - 1, sl);
    if (used[sl]) fail("forward: inputs[%d].slot: expected a slot not used by another input, received %d", i, sl);
    used[sl] = 1;
    if (n < 1) fail("forward: inputs[%d].tokens: expected at least one token, received %d", i, n);
    if ((int64_t)s->len[sl] + n > s->max_len)
      fail("forward: inputs[%d]: expected at most max_len (%d) tokens in the slot, received %lld", i, s->max_len, (long long)s->len[sl] + n);
    T64 += n;
  }
  if (T64 > (1 << 24)) fail("forward: expected at most 16777216 tokens per call, received %lld", (long long)T64);
  const int T = (int)T64, NI = p->n_inputs;
  // ints on the device: tokens[T] | slot[T] | pos[T] | last_row[NI] | seqlen[NI]
  std::vector<int32_t> hi((size_t)3 * T + 2 * NI);
  int32_t *h_tok = hi.data(), *h_slot = h_tok + T, *h_pos = h_slot + T, *h_last = h_pos + T, *h_len = h_last + NI;
  bool decode = true;
  {
    int t = 0;
    for (int i = 0; i < NI; i++) {
      decode &= p->n_tokens[i] == 1;
      for (int j = 0; j < p->n_tokens[i]; j++, t++) {
        const int tok = p->tokens[t];
        if (tok < 0 || tok >= Vv) fail("forward: token %d: expected an id in 0..%d, received %d", t, Vv - 1, tok);
        h_tok[t] = tok;
        h_slot[t] = p->slots[i];
        h_pos[t] = s->len[p->slots[i]] + j;
      }
      h_last[i] = t - 1;
      h_len[i] = s->len[p->slots[i]] + p->n_tokens[i];
    }
  }
  if (p->logits_mode != POLAR_LOGITS_NONE && !p->logits) fail("forward: expected a logits buffer");
  // the decode attention kernel applies when every input has one token, head_dim 128, and the slots are an
  // arithmetic progression (the kernel's batch stride)
  int slot_step = 1;
  if (decode && NI > 1) {
    slot_step = p->slots[1] - p->slots[0];
    for (int i = 2; i < NI && decode; i++) decode = p->slots[i] - p->slots[i - 1] == slot_step;
    decode &= slot_step > 0;
  }
  decode &= hd == 128 && G <= 16;

  int32_t* d_ints = (int32_t*)s->ints.ensure(hi.size() * 4);
  FW_CU(cudaMemcpyAsync(d_ints, hi.data(), hi.size() * 4, cudaMemcpyHostToDevice, st));
  const int32_t *d_tok = d_ints, *d_slot = d_tok + T, *d_pos = d_slot + T, *d_last = d_pos + T, *d_len = d_last + NI;

  float* x = (float*)s->x.ensure((size_t)T * H * 4);
  float* xn = (float*)s->xn.ensure((size_t)T * H * 4);
  DT* xh = (DT*)s->xh.ensure((size_t)T * H * ts);
  DT* q = (DT*)s->q.ensure((size_t)T * QD * ts);
  DT* kk = (DT*)s->k.ensure((size_t)T * KD * ts);
  DT* vv = (DT*)s->v.ensure((size_t)T * KD * ts);
  DT* att = (DT*)s->att.ensure((size_t)T * QD * ts);
  DT* y = (DT*)s->y.ensure((size_t)T * H * ts);
  DT* act = (DT*)s->act.ensure((size_t)T * (F + 8) * ts);
  DT* gbuf = c.gated ? (DT*)s->gate.ensure((size_t)T * (F + 8) * ts) : nullptr;
  uint8_t* mask = (uint8_t*)s->mask.ensure((size_t)T * NH);
  float* hnorm = (float*)s->hnorm.ensure((size_t)T * NH * 4);

  auto dense = [&](int mrows, int n, int k, const void* xin, int64_t ldx, const void* w, int w_kn, const void* bias, int a, void* out, int64_t ldy) {
    polar_cuda_dense_linear_params d{};
    d.dtype = D;
    d.m = mrows;
    d.n = n;
    d.k = k;
    d.x = xin;
    d.ldx = ldx;
    d.w = w;
    d.ldw = w_kn ? n : k;
    d.w_kn = w_kn;
    d.bias = bias;
    d.act = a;
    d.y = out;
    d.ldy = ldy;
    d.stream = st;
    FW_K(polar_cuda_dense_linear(&d));
  };
  auto gemm_f32 = [&](int M, int N, int K, const float* X, int64_t ldx, const void* W, float* Y, int64_t ldy) {
    dim3 grid((unsigned)((N + 63) / 64), (unsigned)((M + 63) / 64));
    k_gemm_f32<DT><<<grid, 256, 0, st>>>(M, N, K, X, ldx, (const DT*)W, K, Y, ldy);
    FW_LAUNCHED("k_gemm_f32");
  };
  auto add = [&](float* dst, int n, const DT* src, int64_t ld) {
    k_add<DT><<<grid_for((int64_t)T * n), 256, 0, st>>>(dst, n, src, ld, (int64_t)T * n);
    FW_LAUNCHED("k_add");
  };
  auto norm = [&](int mode, float* xin, const float* w, const float* b, float* yf, DT* yh, int rows) {
    k_norm<DT><<<rows, 256, 0, st>>>(mode, xin, H, w, b, c.norm_eps, yf, yh);
    FW_LAUNCHED("k_norm");
  };
  auto d2h = [&](void* dst, const void* src, size_t bytes) { FW_CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, st)); };
  const int ln_mode = opt ? 1 : 2;

  // ---- embeddings ----
  if (opt) {
    if (m->proj_in) {
      float* e = (float*)s->e.ensure((size_t)T * E * 4);
      k_embed<<<T, 256, 0, st>>>(m->tok_emb, D, d_tok, nullptr, d_pos, 0, E, e);
      FW_LAUNCHED("k_embed");
      gemm_f32(T, H, E, e, E, m->proj_in, x, H);
      k_add_pos<<<T, 256, 0, st>>>(x, m->pos_emb, D, d_pos, c.position_offset, H);
      FW_LAUNCHED("k_add_pos");
    } else {
      k_embed<<<T, 256, 0, st>>>(m->tok_emb, D, d_tok, m->pos_emb, d_pos, c.position_offset, H, x);
      FW_LAUNCHED("k_embed");
    }
  } else {
    k_embed<<<T, 256, 0, st>>>(m->tok_emb, D, d_tok, nullptr, d_pos, 0, H, x);
    FW_LAUNCHED("k_embed");
  }

  for (int l = 0; l < c.layers; l++) {
    CLayer& L = m->layers[l];
    const polar_layer_capture* cap = p->captures ? &p->captures[l] : nullptr;
    const polar_sparse_layer* sp = p->sparse ? &p->sparse[l] : nullptr;

    // ---- attention block ----
    norm(opt && !c.norm_before ? 0 : ln_mode, x, L.an_w, L.an_b, xn, xh, T);
    if (cap && cap->attn_in) d2h(cap->attn_in, xn, (size_t)T * H * 4);

    // head selection
    int attn_mode = sp ? sp->attn_mode : POLAR_SPARSE_DENSE;
    bool use_mask = false, use_idx = false;
    int head_k = 0;
    int32_t* head_idx = nullptr;
    if (attn_mode == POLAR_SPARSE_ROUTER) {
      if (!sp->attn_w || (sp->attn_units != NH && sp->attn_units != KV))
        fail("sparse head router: expected weights with heads (%d) or kv_heads (%d) outputs", NH, KV);
      head_k = std::min(std::max(sp->attn_k, 0), KV);
      head_idx = (int32_t*)s->head_idx.ensure((size_t)T * std::max(head_k, 1) * 4);
      if (head_k > 0) {
        polar_cuda_head_router_params r{};
        r.dtype = D;
        r.m = T;
        r.d = H;
        r.units = sp->attn_units;
        r.q_heads = NH;
        r.kv_heads = KV;
        r.k = head_k;
        r.x = xh;
        r.ldx = H;
        r.w = router_weights(s, sp->attn_w, (size_t)sp->attn_units * H);
        r.b = router_weights(s, sp->attn_b, (size_t)sp->attn_units);
        r.out_idx = head_idx;
        r.ld_idx = head_k;
        r.stream = st;
        use_workspace(s, r, polar_cuda_head_router_workspace(&r));
        FW_K(polar_cuda_head_router(&r));
        k_mask_from_idx<<<(T + 127) / 128, 128, 0, st>>>(head_idx, head_k, head_k, T, NH, KV, mask);
        FW_LAUNCHED("k_mask_from_idx");
      } else {
        FW_CU(cudaMemsetAsync(mask, 0, (size_t)T * NH, st));
      }
      use_mask = true;
      use_idx = head_k > 0;
    } else if (attn_mode == POLAR_SPARSE_EXPLICIT) {
      if (!sp->attn_mask) fail("sparse heads: expected a [tokens, heads] mask, received NULL");
      std::vector<uint8_t> mk((size_t)T * NH);
      for (size_t i = 0; i < mk.size(); i++) mk[i] = sp->attn_mask[i] ? 1 : 0;
      FW_CU(cudaMemcpyAsync(mask, mk.data(), mk.size(), cudaMemcpyHostToDevice, st));
      FW_CU(cudaStreamSynchronize(st));  // mk is a local
      use_mask = true;
    } else if (attn_mode != POLAR_SPARSE_DENSE) {
      fail("sparse attention mode: expected DENSE, ROUTER or EXPLICIT, received %d", attn_mode);
    }

    // MLP selection (reads the router input, attn_in)
    MlpSel ms;
    int mlp_mode = sp ? sp->mlp_mode : POLAR_SPARSE_DENSE;
    int32_t* d_midx = nullptr;
    if (mlp_mode == POLAR_SPARSE_ROUTER) {
      if (!sp->mlp_fc1 || !sp->mlp_fc2 || sp->mlp_rank < 1) fail("sparse MLP router: expected fc1, fc2 and rank >= 1");
      if (sp->mlp_k < 0 || sp->mlp_k > F) fail("sparse MLP k: expected 0..ffn (%d), received %d", F, sp->mlp_k);
      ms.sparse = true;
      ms.K = sp->mlp_k;
      ms.Kp = (ms.K + 7) / 8 * 8;
      d_midx = (int32_t*)s->mlp_idx.ensure((size_t)(F + 8) * 4);
      if (ms.K > 0) {
        polar_cuda_mlp_router_params r{};
        r.dtype = D;
        r.m = T;
        r.d = H;
        r.rank = sp->mlp_rank;
        r.ffn = F;
        r.k = ms.K;
        r.x = xh;
        r.ldx = H;
        r.fc1 = router_weights(s, sp->mlp_fc1, (size_t)sp->mlp_rank * H);
        r.fc2 = router_weights(s, sp->mlp_fc2, (size_t)F * sp->mlp_rank);
        r.score = sp->mlp_score == POLAR_MLP_SCORE_SIGMOID ? POLAR_CUDA_SCORE_SIGMOID : POLAR_CUDA_SCORE_LOGIT;
        r.out_idx = d_midx;
        r.stream = st;
        use_workspace(s, r, polar_cuda_mlp_router_workspace(&r));
        FW_K(polar_cuda_mlp_router(&r));
        if (ms.Kp > ms.K) {
          k_pad_idx<<<1, 1, 0, st>>>(d_midx, ms.K, ms.Kp - ms.K);
          FW_LAUNCHED("k_pad_idx");
        }
      }
    } else if (mlp_mode == POLAR_SPARSE_EXPLICIT) {
      if (sp->mlp_idx_n < 0 || sp->mlp_idx_n > F || (sp->mlp_idx_n && !sp->mlp_idx))
        fail("sparse MLP indices: expected 0..ffn (%d) indices, received %d", F, sp->mlp_idx_n);
      ms.sparse = true;
      ms.host.assign(sp->mlp_idx, sp->mlp_idx + sp->mlp_idx_n);
      std::sort(ms.host.begin(), ms.host.end());
      for (size_t i = 0; i < ms.host.size(); i++)
        if (ms.host[i] < 0 || ms.host[i] >= F || (i && ms.host[i] == ms.host[i - 1]))
          fail("sparse MLP indices: expected distinct integers in 0..%d, received %d", F - 1, ms.host[i]);
      ms.K = (int)ms.host.size();
      ms.Kp = (ms.K + 7) / 8 * 8;
      std::vector<int32_t> padded = ms.host;
      for (int n = 0, j = 0; (int)padded.size() < ms.Kp; n++) {
        while (j < ms.K && ms.host[j] < n) j++;
        if (j < ms.K && ms.host[j] == n) continue;
        padded.push_back(n);
      }
      d_midx = (int32_t*)s->mlp_idx.ensure((size_t)(F + 8) * 4);
      if (ms.Kp) {
        FW_CU(cudaMemcpyAsync(d_midx, padded.data(), (size_t)ms.Kp * 4, cudaMemcpyHostToDevice, st));
        FW_CU(cudaStreamSynchronize(st));  // padded is a local
      }
    } else if (mlp_mode != POLAR_SPARSE_DENSE) {
      fail("sparse MLP mode: expected DENSE, ROUTER or EXPLICIT, received %d", mlp_mode);
    }

    // q, k, v; RoPE; KV cache
    dense(T, QD, H, xh, H, L.q, 0, L.qb, 0, q, QD);
    dense(T, KD, H, xh, H, L.k, 0, L.kb, 0, kk, KD);
    dense(T, KD, H, xh, H, L.v, 0, L.vb, 0, vv, KD);
    DT* kc = (DT*)s->kc.p + s->layer_off(l);
    DT* vc = (DT*)s->vc.p + s->layer_off(l);
    k_rope_store<DT><<<T, 256, 0, st>>>(q, kk, vv, NH, KV, hd, d_slot, d_pos, s->rope_cos.as<float>(), s->rope_sin.as<float>(), opt ? 0 : 1, kc, vc,
                                       s->max_len);
    FW_LAUNCHED("k_rope_store");
    const float scale = 1.0f / std::sqrt((float)hd);
    const bool want_norm = cap && cap->head_norm;
    if (decode && !want_norm && (attn_mode == POLAR_SPARSE_DENSE || use_idx)) {
      polar_cuda_attn_params a{};
      a.dtype = D;
      a.batch = NI;
      a.q_heads = NH;
      a.kv_heads = KV;
      a.head_dim = hd;
      a.max_seq = s->max_len;
      a.q = q;
      a.q_batch_stride = QD;
      a.q_head_stride = hd;
      const int64_t slot_elems = (int64_t)s->max_len * KD;
      a.k_cache = kc + (int64_t)p->slots[0] * slot_elems;
      a.v_cache = vc + (int64_t)p->slots[0] * slot_elems;
      a.k_batch_stride = a.v_batch_stride = slot_step * slot_elems;
      a.k_seq_stride = a.v_seq_stride = hd;
      a.k_head_stride = a.v_head_stride = (int64_t)s->max_len * hd;
      a.seqlens = d_len;
      a.idx = use_idx ? head_idx : nullptr;
      a.n_sel = use_idx ? head_k : 0;
      a.idx_stride = use_idx ? head_k : 0;
      a.scale = scale;
      a.out = att;
      a.o_batch_stride = QD;
      a.o_head_stride = hd;
      a.stream = st;
      use_workspace(s, a, polar_cuda_attn_workspace(&a));
      FW_K(polar_cuda_attn_decode(&a));
    } else {
      const int64_t pairs = (int64_t)T * NH;
      k_attn<DT><<<(unsigned)((pairs + kAttnWarps - 1) / kAttnWarps), 32 * kAttnWarps, 0, st>>>(
          q, T, NH, KV, hd, d_slot, d_pos, kc, vc, s->max_len, scale, use_mask ? mask : nullptr, att, want_norm ? hnorm : nullptr);
      FW_LAUNCHED("k_attn");
    }
    if (want_norm) d2h(cap->head_norm, hnorm, (size_t)T * NH * 4);
    if (sp && sp->out_heads) {
      if (use_mask)
        d2h(sp->out_heads, mask, (size_t)T * NH);
      else
        std::fill(sp->out_heads, sp->out_heads + (size_t)T * NH, 1);
    }
    // x += att . Wo^T + bo
    dense(T, H, QD, att, QD, L.o, 0, L.ob, 0, y, H);
    add(x, H, y, H);
    if (opt && !c.norm_before) norm(ln_mode, x, L.an_w, L.an_b, x, nullptr, T);

    // ---- MLP block ----
    norm(opt && !c.norm_before ? 0 : ln_mode, x, L.mn_w, L.mn_b, xn, xh, T);
    if (cap && cap->mlp_in) d2h(cap->mlp_in, xn, (size_t)T * H * 4);
    if (!ms.sparse) {
      if (c.gated) {
        dense(T, F, H, xh, H, L.gate, 0, L.gateb, 0, gbuf, F);
        dense(T, F, H, xh, H, L.up, 0, L.upb, 0, act, F);
        k_silu_mul<DT><<<grid_for((int64_t)T * F), 256, 0, st>>>(gbuf, act, (int64_t)T * F);
        FW_LAUNCHED("k_silu_mul");
      } else {
        dense(T, F, H, xh, H, L.up, 0, L.upb, POLAR_ACT_RELU, act, F);
      }
      if (cap && cap->mlp_act) {
        float* f = (float*)s->f32tmp.ensure((size_t)T * F * 4);
        k_convert<<<grid_for((int64_t)T * F), 256, 0, st>>>(act, D, f, POLAR_F32, (int64_t)T * F);
        FW_LAUNCHED("k_convert");
        d2h(cap->mlp_act, f, (size_t)T * F * 4);
      }
      dense(T, H, F, act, F, L.down_t, 1, L.downb, 0, y, H);
      add(x, H, y, H);
      if (sp && sp->out_mlp_idx) {
        for (int i = 0; i < F; i++) sp->out_mlp_idx[i] = i;
        if (sp->out_mlp_n) *sp->out_mlp_n = F;
      }
    } else {
      const int K = ms.K, Kp = ms.Kp;
      if (K > 0) {
        auto fc1 = [&](const void* w, const void* b, int a, DT* h) {
          polar_cuda_sel_fc1_params f{};
          f.dtype = D;
          f.m = T;
          f.d = H;
          f.k = Kp;
          f.x = xh;
          f.ldx = H;
          f.w1 = w;
          f.ldw1 = H;
          f.b1 = b;
          f.idx = d_midx;
          f.act = a;
          f.h = h;
          f.ldh = Kp;
          f.stream = st;
          use_workspace(s, f, polar_cuda_sel_fc1_workspace(&f));
          FW_K(polar_cuda_sel_fc1(&f));
        };
        if (c.gated) {
          fc1(L.gate, L.gateb, POLAR_ACT_NONE, gbuf);
          fc1(L.up, L.upb, POLAR_ACT_NONE, act);
          k_silu_mul<DT><<<grid_for((int64_t)T * Kp), 256, 0, st>>>(gbuf, act, (int64_t)T * Kp);
          FW_LAUNCHED("k_silu_mul");
        } else {
          fc1(L.up, L.upb, POLAR_ACT_RELU, act);
        }
        if (Kp > K) {
          k_zero_cols<DT><<<grid_for((int64_t)T * (Kp - K)), 256, 0, st>>>(act, Kp, K, Kp, T);
          FW_LAUNCHED("k_zero_cols");
        }
        polar_cuda_sel_fc2_params f{};
        f.dtype = D;
        f.m = T;
        f.d = H;
        f.k = Kp;
        f.h = act;
        f.ldh = Kp;
        f.w2t = L.down_t;
        f.ldw2t = H;
        f.b2 = L.downb;
        f.idx = d_midx;
        f.y = y;
        f.ldy = H;
        f.accumulate = 0;
        f.stream = st;
        use_workspace(s, f, polar_cuda_sel_fc2_workspace(&f));
        FW_K(polar_cuda_sel_fc2(&f));
        add(x, H, y, H);
      } else if (L.downb) {
        add(x, H, (const DT*)L.downb, 0);
      }
      if (cap && cap->mlp_act) {
        float* f = (float*)s->f32tmp.ensure((size_t)T * F * 4);
        FW_CU(cudaMemsetAsync(f, 0, (size_t)T * F * 4, st));
        if (K > 0) {
          k_scatter<DT><<<grid_for((int64_t)T * K), 256, 0, st>>>(act, Kp, d_midx, K, T, F, f);
          FW_LAUNCHED("k_scatter");
        }
        d2h(cap->mlp_act, f, (size_t)T * F * 4);
      }
      if (sp->out_mlp_idx) {
        if (mlp_mode == POLAR_SPARSE_EXPLICIT) {
          std::copy(ms.host.begin(), ms.host.end(), sp->out_mlp_idx);
        } else if (K > 0) {
          d2h(sp->out_mlp_idx, d_midx, (size_t)K * 4);
        }
        if (sp->out_mlp_n) *sp->out_mlp_n = K;
      }
    }
    if (opt && !c.norm_before) norm(ln_mode, x, L.mn_w, L.mn_b, x, nullptr, T);
  }

  // ---- head ----
  if (p->logits_mode != POLAR_LOGITS_NONE) {
    int R = T;
    const float* rows = x;
    if (p->logits_mode == POLAR_LOGITS_LAST) {
      R = NI;
      float* g = (float*)s->hrows.ensure((size_t)R * H * 4);
      k_gather<<<R, 256, 0, st>>>(x, d_last, H, g);
      FW_LAUNCHED("k_gather");
      rows = g;
    }
    float* hn = (float*)s->hn.ensure((size_t)R * H * 4);
    if (m->fn_w)
      norm(ln_mode, (float*)rows, m->fn_w, m->fn_b, hn, nullptr, R);
    else
      FW_CU(cudaMemcpyAsync(hn, rows, (size_t)R * H * 4, cudaMemcpyDeviceToDevice, st));
    const float* top = hn;
    int Dm = H;
    if (m->proj_out) {
      float* po = (float*)s->po.ensure((size_t)R * E * 4);
      gemm_f32(R, E, H, hn, H, m->proj_out, po, E);
      top = po;
      Dm = E;
    }
    float* lg = (float*)s->logits.ensure((size_t)R * Vv * 4);
    gemm_f32(R, Vv, Dm, top, Dm, m->lm_head, lg, Vv);
    d2h(p->logits, lg, (size_t)R * Vv * 4);
  }
  FW_CU(cudaStreamSynchronize(st));
  for (int i = 0; i < NI; i++) s->len[p->slots[i]] += p->n_tokens[i];
}

}  // namespace

extern "C" {

polar_cuda_model* polar_cuda_model_create(const polar_model_config* cfg, const polar_weight_desc* weights, int n_weights,
                                          const polar_cuda_model_options* opts) {
  polar_cuda_model* m = nullptr;
  try {
    if (!cfg || (n_weights > 0 && !weights)) {
      polar_set_error("polar_cuda_model_create: expected a config and weights, received NULL");
      return nullptr;
    }
    m = new polar_cuda_model();
    build(m, *cfg, weights, n_weights, opts);
    return m;
  } catch (const Fail&) {
  } catch (const std::bad_alloc&) {
    polar_set_error("polar_cuda_model_create: out of host memory");
  } catch (const std::exception& e) {
    polar_set_error("polar_cuda_model_create: %s", e.what());
  }
  delete m;
  return nullptr;
}

void polar_cuda_model_free(polar_cuda_model* m) { delete m; }
const polar_model_config* polar_cuda_model_get_config(const polar_cuda_model* m) { return m ? &m->cfg : nullptr; }
polar_dtype polar_cuda_model_dtype(const polar_cuda_model* m) { return m ? m->dt : POLAR_F16; }
size_t polar_cuda_model_bytes(const polar_cuda_model* m) { return m ? m->bytes : 0; }

polar_cuda_session* polar_cuda_session_create(polar_cuda_model* m, int max_seqs, int max_len) {
  polar_cuda_session* s = nullptr;
  try {
    if (!m) {
      polar_set_error("polar_cuda_session_create: expected a model, received NULL");
      return nullptr;
    }
    const polar_model_config& c = m->cfg;
    if (max_seqs < 1) fail("session maxSeqs: expected an integer >= 1, received %d", max_seqs);
    if (max_len < 1) fail("session maxLen: expected an integer >= 1, received %d", max_len);
    if (c.family == POLAR_FAMILY_OPT && max_len > c.max_positions)
      fail("session maxLen: expected at most %d (the model's learned positions), received %d", c.max_positions, max_len);
    FW_CU(cudaSetDevice(m->device));
    s = new polar_cuda_session();
    s->m = m;
    s->max_seqs = max_seqs;
    s->max_len = max_len;
    s->len.assign(max_seqs, 0);
    FW_CU(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking));
    const size_t n = (size_t)max_seqs * c.layers * c.kv_heads * (size_t)max_len * c.head_dim * polar_dtype_size(m->dt);
    size_t free_b = 0, total_b = 0;
    FW_CU(cudaMemGetInfo(&free_b, &total_b));
    if (2 * n > free_b)
      fail("session: the KV cache (maxSeqs %d x maxLen %d) needs %.1f MB of GPU memory, %.1f MB are free", max_seqs, max_len, 2.0 * n / 1e6,
           free_b / 1e6);
    s->kc.ensure(n);
    s->vc.ensure(n);
    const int half = std::max(1, c.head_dim / 2);
    std::vector<float> cs((size_t)max_len * half, 1.f), sn((size_t)max_len * half, 0.f);
    if (c.family == POLAR_FAMILY_LLAMA) {
      for (int p = 0; p < max_len; p++)
        for (int i = 0; i < half; i++) {
          const float a = (float)p * m->inv_freq[i];  // as kernels/cpu/rope.cc
          cs[(size_t)p * half + i] = (float)std::cos((double)a);
          sn[(size_t)p * half + i] = (float)std::sin((double)a);
        }
    }
    s->rope_cos.ensure(cs.size() * 4);
    s->rope_sin.ensure(sn.size() * 4);
    FW_CU(cudaMemcpy(s->rope_cos.p, cs.data(), cs.size() * 4, cudaMemcpyHostToDevice));
    FW_CU(cudaMemcpy(s->rope_sin.p, sn.data(), sn.size() * 4, cudaMemcpyHostToDevice));
    return s;
  } catch (const Fail&) {
  } catch (const std::bad_alloc&) {
    polar_set_error("polar_cuda_session_create: out of host memory");
  } catch (const std::exception& e) {
    polar_set_error("polar_cuda_session_create: %s", e.what());
  }
  delete s;
  return nullptr;
}

void polar_cuda_session_free(polar_cuda_session* s) {
  if (s) cudaSetDevice(s->m->device);
  delete s;
}

int polar_cuda_session_length(const polar_cuda_session* s, int slot) {
  if (!s || slot < 0 || slot >= s->max_seqs) return -1;
  return s->len[slot];
}

int polar_cuda_session_reset(polar_cuda_session* s, int slot) {
  if (!s) return polar_set_error("polar_cuda_session_reset: expected a session, received NULL");
  if (slot >= s->max_seqs) return polar_set_error("session reset: slot: expected 0..%d, received %d", s->max_seqs - 1, slot);
  if (slot < 0)
    std::fill(s->len.begin(), s->len.end(), 0);
  else
    s->len[slot] = 0;
  return 0;
}

int polar_cuda_forward(polar_cuda_session* s, const polar_forward_params* p) {
  try {
    if (!s) return polar_set_error("polar_cuda_forward: expected a session, received NULL");
    FW_CU(cudaSetDevice(s->m->device));
    if (s->m->dt == POLAR_BF16)
      forward_t<__nv_bfloat16>(s, p);
    else
      forward_t<__half>(s, p);
    return 0;
  } catch (const Fail&) {
    if (s && s->stream) cudaStreamSynchronize(s->stream);  // no kernel may still use the caller's buffers
    return -1;
  } catch (const std::bad_alloc&) {
    return polar_set_error("forward: out of host memory");
  } catch (const std::exception& e) {
    return polar_set_error("forward: %s", e.what());
  }
}

}  // extern "C"
