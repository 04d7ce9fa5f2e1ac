// CUDA backend of the kernels (Polar Sparsity decode kernels + dense baselines). Plain C API of POD
// parameter structs; no Node and no CUDA headers here (streams are passed as void*, cudaStream_t).
//
// Conventions shared by every entry point:
//  - All pointers are device pointers unless said otherwise; matrices are row-major with the given leading
//    dimension in elements. fp16 and bf16 are supported (polar_dtype POLAR_F16 / POLAR_BF16) for every
//    tensor of a call (index lists are int32, scores fp32).
//  - Returns 0 on success, -1 on failure with the message in polar_last_error() (the CUDA call, file and
//    line where a CUDA call failed). Nothing aborts. Launches are asynchronous on `stream` (NULL: default).
//  - `workspace`: device memory of at least the size that the matching *_workspace() function returns for
//    the same parameters, zero-filled ONCE when allocated (cudaMemset); every call leaves it zero-filled
//    again. Calls that share a workspace must be ordered (same stream). workspace_bytes is checked.
//  - Alignment: 16 bytes for every matrix base pointer, and leading dimensions that are multiples of 8.
//
// Shapes follow the Polar Sparsity paper (arXiv 2505.14884): fc1 is the up projection W1 [ffn, d]
// (nn.Linear layout), W2t [ffn, d] the TRANSPOSED down projection (one contiguous row per neuron). The
// attention takes any KV cache layout through strides: [batch, max_seq, kv_heads, head_dim] ("bshd", the
// reference kernels' and the benchmark grid's) or head-major [batch, kv_heads, max_seq, head_dim] ("bhsd",
// the runtime's session cache: a kept head's keys are one contiguous stream).
#pragma once
#include "polar/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { POLAR_ACT_NONE = 0, POLAR_ACT_RELU = 1 } polar_act;
// Implementation choice of the GEMM-like kernels (tests force each one; AUTO picks by GPU and batch).
typedef enum { POLAR_IMPL_AUTO = 0, POLAR_IMPL_MMA = 1, POLAR_IMPL_WGMMA = 2 } polar_cuda_impl;

// ---- device ---------------------------------------------------------------------------------------
typedef struct {
  char name[256];
  int major, minor;        // compute capability
  int sms;                 // multiprocessors
  int l2_bytes;
  int wgmma;               // 1 when the Hopper (sm_90a) kernels are usable on this device
} polar_cuda_device_info;
// Returns -1 (with the reason) when no CUDA device/driver is usable.
int polar_cuda_get_device_info(int device, polar_cuda_device_info* out);

// ---- selective MLP (fc1 + fc2 over the kept neurons) ------------------------------------------------
// fc1:  h[i, j] = act( x[i, :] . w1[idx[j], :] + b1[idx[j]] )      i < m, j < k   (compact [m, k])
typedef struct {
  polar_dtype dtype;
  int m, d, k;                 // batch rows (any >= 1), model dim (multiple of 8), kept neurons (multiple of 8)
  const void* x; int64_t ldx;  // [m, d]
  const void* w1; int64_t ldw1;  // [ffn, d]
  const void* b1;              // [ffn] or NULL
  const int32_t* idx;          // [k] neuron ids (device), distinct, any order; NULL: 0..k-1 (dense fc1)
  int act;                     // polar_act
  void* h; int64_t ldh;        // [m, k] output
  int impl;                    // polar_cuda_impl
  int splits;                  // split-K over d: 0 = auto (tests force others)
  void* workspace; size_t workspace_bytes;
  void* stream;
} polar_cuda_sel_fc1_params;
size_t polar_cuda_sel_fc1_workspace(const polar_cuda_sel_fc1_params* p);
int polar_cuda_sel_fc1(const polar_cuda_sel_fc1_params* p);

// fc2:  y[i, :] (+)= sum_j h[i, j] * w2t[idx[j], :] + b2                            (y [m, d])
typedef struct {
  polar_dtype dtype;
  int m, d, k;
  const void* h; int64_t ldh;    // [m, k]
  const void* w2t; int64_t ldw2t;  // [ffn, d]
  const void* b2;                // [d] or NULL
  const int32_t* idx;            // [k] (the same list as fc1); NULL: 0..k-1
  void* y; int64_t ldy;          // [m, d]
  int accumulate;                // 1: y += result (fused residual add)
  int impl, splits;              // splits: split over the k neurons (0 = auto)
  // 1 only when this call directly follows polar_cuda_sel_fc1 on the same stream with the same idx (and no
  // other kernel wrote idx or w2t in between): on sm_90 fc2 then starts streaming its weights while fc1
  // finishes (programmatic dependent launch), and waits for fc1 only before reading h.
  int after_fc1;
  void* workspace; size_t workspace_bytes;
  void* stream;
} polar_cuda_sel_fc2_params;
size_t polar_cuda_sel_fc2_workspace(const polar_cuda_sel_fc2_params* p);
int polar_cuda_sel_fc2(const polar_cuda_sel_fc2_params* p);

// ---- decode attention over a strided KV cache (selective or dense) ----------------------------------
// For each sequence b and each kept KV group g = idx[b, j] (j < n_sel), every query head h of the group
// (h = g * (q_heads / kv_heads) + r) gets  out[b, h] = softmax(scale * q[b, h] . K[b, :len_b, g]) V[b, :len_b, g].
// Query heads of groups that are not kept get zeros. MHA is q_heads == kv_heads (a group is a head).
// idx == NULL: dense (every group). Entries < 0 or >= kv_heads are skipped (padding); duplicates are
// harmless. Long contexts are split over CTAs and merged with a log-sum-exp rescaling.
typedef struct {
  polar_dtype dtype;
  int batch, q_heads, kv_heads, head_dim;  // head_dim: 128; q_heads / kv_heads <= 16
  int max_seq;                             // capacity of the cache (positions)
  const void* q; int64_t q_batch_stride, q_head_stride;   // [batch, q_heads, head_dim]
  const void* k_cache; int64_t k_batch_stride, k_seq_stride, k_head_stride;  // bshd: S*H*D, H*D, D; bhsd: H*S*D, D, S*D
  const void* v_cache; int64_t v_batch_stride, v_seq_stride, v_head_stride;
  const int32_t* seqlens;                  // [batch] valid positions (clamped to max_seq), NULL = max_seq
  const int32_t* idx; int n_sel; int64_t idx_stride;  // [batch, n_sel] kept groups (row stride idx_stride)
  float scale;                             // usually 1/sqrt(head_dim)
  void* out; int64_t o_batch_stride, o_head_stride;   // [batch, q_heads, head_dim]
  int splits;                              // 0 = auto
  void* workspace; size_t workspace_bytes;
  void* stream;
} polar_cuda_attn_params;
size_t polar_cuda_attn_workspace(const polar_cuda_attn_params* p);
// The plan the decode attention takes for p (pipeline stages, split count, CTAs per SM), as text; 0 or -1.
int polar_cuda_attn_describe(const polar_cuda_attn_params* p, char* buf, size_t n);
int polar_cuda_attn_decode(const polar_cuda_attn_params* p);

// ---- routers with fused top-k ------------------------------------------------------------------------
// MLP router (low rank, no bias, no activation between, as kernels/cpu/sparse.cc):
//   s[t, :] = fc2 . (fc1 . x[t]);  score[f] = sum_t s[t, f] (LOGIT) or sum_t sigmoid(s[t, f]) (SIGMOID)
//   out_idx = the k neurons of largest score, ascending (ties: lower index first).
//   Precision: LOGIT is computed as fc2 . (fc1 . sum_t x[t]) with fp32 sums and accumulation (the router is
//   linear); SIGMOID rounds h = fc1 . x[t] to the dtype per token. The select uses a cooperative launch.
typedef enum { POLAR_CUDA_SCORE_LOGIT = 0, POLAR_CUDA_SCORE_SIGMOID = 1 } polar_cuda_score;
typedef struct {
  polar_dtype dtype;
  int m, d, rank, ffn, k;
  const void* x; int64_t ldx;     // [m, d]
  const void* fc1;                // [rank, d]
  const void* fc2;                // [ffn, rank]
  int score;                      // polar_cuda_score
  int32_t* out_idx;               // [k]
  float* out_scores;              // [ffn] fp32 or NULL (the summed scores; kept in the workspace otherwise)
  void* workspace; size_t workspace_bytes;
  void* stream;
} polar_cuda_mlp_router_params;
size_t polar_cuda_mlp_router_workspace(const polar_cuda_mlp_router_params* p);
int polar_cuda_mlp_router(const polar_cuda_mlp_router_params* p);
// How this process last launched a cooperative router kernel (the multi-CTA top-k or the fused MLP router;
// sm_90): "programmatic" (a cooperative grid that is also a programmatic dependent of the kernel before it),
// "plain: <why>" (the driver refused that pair, named by its CUDA error, and plain cooperative launches of that
// kernel since; or programmatic launch is off), or "none yet".
const char* polar_cuda_topk_launch_mode(void);
// Which path the last polar_cuda_mlp_router call took: "fused: <grid>" (LOGIT scores: token sum, both GEMVs and
// the top-k in one cooperative kernel) or "separate kernels: <why>".
const char* polar_cuda_mlp_router_path(void);

// Head router: logits[t, u] = x[t] . w[u] + b[u], u < units; units == kv_heads (one score per group) or
// units == q_heads (a group scores the sum of its heads). Per token: the k groups of largest score,
// ascending, into out_idx[t * ld_idx + j] (the attention kernel's idx).
typedef struct {
  polar_dtype dtype;
  int m, d, units, q_heads, kv_heads, k;   // kv_heads <= 1024
  const void* x; int64_t ldx;
  const void* w;                 // [units, d]
  const void* b;                 // [units] or NULL
  int32_t* out_idx; int64_t ld_idx;
  float* out_logits;             // [m, units] fp32 or NULL
  void* workspace; size_t workspace_bytes;
  void* stream;
} polar_cuda_head_router_params;
size_t polar_cuda_head_router_workspace(const polar_cuda_head_router_params* p);
int polar_cuda_head_router(const polar_cuda_head_router_params* p);
// Which path the last polar_cuda_head_router call took: "one kernel: <shape>" or "GEMM + top-k kernel: <why>".
const char* polar_cuda_head_router_path(void);

// ---- dense baselines -----------------------------------------------------------------------------
// cuBLASLt GEMM with fused epilogue:  y[i, :] = act( x[i, :] . op(w) + bias )
//   w_kn == 0: w is [n, k] (nn.Linear layout);  w_kn == 1: w is [k, n] (e.g. W2t for fc2).
// cuBLASLt is loaded at run time (dlopen libcublasLt.so.13, or the path in POLAR_CUBLASLT); when it
// cannot be loaded the call fails and says where it looked.
typedef struct {
  polar_dtype dtype;
  int m, n, k;
  const void* x; int64_t ldx;
  const void* w; int64_t ldw; int w_kn;
  const void* bias;              // [n] or NULL
  int act;                       // polar_act
  void* y; int64_t ldy;
  void* stream;
} polar_cuda_dense_linear_params;
int polar_cuda_dense_linear(const polar_cuda_dense_linear_params* p);
// 1 when cuBLASLt could be loaded; otherwise 0 and polar_last_error() says why.
int polar_cuda_cublaslt_available(void);

// Dense decode attention: polar_cuda_attn_decode with idx == NULL.

// Frees what the backend caches per process (cuBLASLt handles, plans and their 32 MB workspaces). Call it
// only when no call is in flight; later calls recreate what they need.
void polar_cuda_release(void);

// One line describing how the call would run (path, batch tile, grid, split-K), for benchmarks and logs.
int polar_cuda_sel_fc1_describe(const polar_cuda_sel_fc1_params* p, char* buf, size_t n);
int polar_cuda_sel_fc2_describe(const polar_cuda_sel_fc2_params* p, char* buf, size_t n);
// Experimental tuning of the selective GEMMs and the head router, for benchmarks and tests (not thread-safe
// against calls in flight). Initial values come from the environment (POLAR_CUDA_MMA_STAGES, _SPLIT_PENALTY,
// _MMA_WARPS, _WG_PAIR, _NB256, _STORE_REDUCE, _NO_PDL, _ROUTER_SPLITS, _CLUSTER_REDUCE, _PLAN = h100 | h200,
// _ROUTER_FUSED, _HEAD_ROUTER_FUSED, _SELECT_CAP, _ROUTER_FOLD_SUM, _ROUTER_HIST_IN_GEMV, _ATTN_STAGES, _SK_PARTIAL).
// polar_cuda_set_tuning changes each field that is in its range and keeps the others
// (polar_cuda_tuning_unchanged() has every field out of range).
typedef struct {
  int mma_stages;        // mma.sync pipeline depth: 3 (default) or 4
  double split_penalty;  // >= 0: scale of the split-K charge per split CTA (default 1)
  int mma_warps;         // mma.sync warps per CTA: 0 by batch tile and plan_profile (default: at nb = 64 8 on the
                         // H100, 4 on the H200; else 4), 4 or 8
  int wgmma_pair;        // nb = 128 tiles, two CTAs per SM: 0 never, 1 at every batch > 64, 2 at 65-128 (default)
  int nb256;             // batch tiles of 256: 0 two warpgroups (m64n256), 1 four (m64n128), 2 by size (default:
                         // warp-specialized stream-K from 100 MB of gathered weights, else four), 3 the
                         // warp-specialized kernel at every wgmma batch tile
  int reduce_atomic;     // split-K reduction of the mma.sync and lock-step wgmma kernels: 1 fp32 atomics (default),
                         // 0 plain partial stores (the warp-specialized kernel's shared tiles have their own scheme)
  int pdl;               // 1 programmatic dependent launch (default on sm_90), 0 off
  int router_splits;     // head router (GEMM path) split-K count: 0 the heuristic (default, ~4 K chunks of 64 per CTA)
  int cluster_reduce;    // 1 (default): the mma.sync and lock-step wgmma kernels' 2-8 split-K partial tiles are
                         // summed over a thread-block cluster through distributed shared memory where the
                         // clusters fit at once; 0: always through the fp32 workspace
  int plan_profile;      // the planner's measured per-GPU choices: 0 by the GPU (default: the H200's where the
                         // device name has "H200" in it, else the H100's), 1 the H100's, 2 the H200's
  int router_fused;      // MLP router, LOGIT scores: 0 (default) separate kernels; 1 one cooperative kernel (token
                         // sum, both GEMVs, top-k) where it fits on the GPU (measured slower on an H200, see
                         // docs/benchmarks.md)
  int head_router_fused; // head router: 1 (default) one kernel (a thread-block cluster per 16 tokens splits K and
                         // selects) where the GPU is sm_90 and the units are <= 128; 0 the split-K GEMM, then a
                         // top-k kernel (polar_cuda_head_router_path says which ran)
  int select_cap;        // MLP router's multi-CTA top-k: the most keys in the k-th key's top-11-bit bin for which it
                         // finishes in each CTA after two grid barriers (default and at most 8192); 0: always three
                         // global radix passes and four barriers
  int router_fold_sum;   // MLP router, LOGIT scores, separate kernels: 1 the token sum folded into the first GEMV (one
                         // kernel per 64 columns of x); 0 a token-sum kernel, then the GEMV
  int router_hist_in_gemv;  // MLP router, LOGIT scores, separate kernels, rank <= 1024: 1 the second GEMV counts the
                         // scores in the multi-CTA select's first-pass histogram (the select skips that pass and a
                         // grid barrier); 0 the select makes it
  int attn_stages;       // decode attention pipeline depth: 0 (default) by the planner, 2 (three CTAs per SM) or 3 (two)
  int sk_partial;        // the warp-specialized kernel's stream-K grid: the charge in K steps for each partial tile
                         // that a shared tile's first CTA adds; 0 (default) the planner's (6)
} polar_cuda_tuning;
static inline polar_cuda_tuning polar_cuda_tuning_unchanged(void) {
  polar_cuda_tuning t = {-1, -1.0, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1};
  return t;
}
void polar_cuda_get_tuning(polar_cuda_tuning* t);
void polar_cuda_set_tuning(const polar_cuda_tuning* t);

#ifdef __cplusplus
}
#endif
