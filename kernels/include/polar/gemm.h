// CPU GEMMs of the runtime and of the TensorFlow.js native backend. fp32 math, weights widened on the fly.
#pragma once
#include "polar/common.h"

#ifdef __cplusplus
extern "C" {
#endif

// Plain fp32 GEMM, row-major: C[M,N] = alpha * op(A)[M,K] @ op(B)[K,N] + beta * C.
// op(A) = A^T when trans_a (A stored [K,M]); op(B) = B^T when trans_b (B stored [N,K]).
// batch > 1: the i-th product uses A + i*stride_a, B + i*stride_b, C + i*stride_c (stride 0 broadcasts).
typedef struct {
  int trans_a, trans_b;
  int m, n, k;
  float alpha, beta;
  const float* a; int64_t lda;
  const float* b; int64_t ldb;
  float* c; int64_t ldc;
  int batch; int64_t stride_a, stride_b, stride_c;
} polar_sgemm_params;
int polar_sgemm(const polar_sgemm_params* p);

// Linear layer in Hugging Face layout (nn.Linear weight is [out, in]):
//   Y[m, j] = act( X[m, :] . W[row(j), :] + bias[row(j)] )   (+ Y[m, j] when accumulate)
// X fp32 [m, k] (ldx), W [*, k] (ldw) in dtype wdt, bias (may be NULL) in dtype bdt.
// rows: NULL for rows 0..n-1, else n int32 row indices into W (selective fc1 / router top-k rows).
// act: 0 none, 1 ReLU.
typedef struct {
  int m, n, k;
  const float* x; int64_t ldx;
  const void* w; polar_dtype wdt; int64_t ldw;
  const int32_t* rows;
  const void* bias; polar_dtype bdt;
  float* y; int64_t ldy;
  int accumulate;
  int act;
} polar_linear_params;
int polar_linear(const polar_linear_params* p);

// Gathered-K product for the selective down projection, with W stored [K_total, n] (the transposed
// down projection, one row per neuron):
//   Y[m, :] (+)= sum_i X[m, i] * W[idx(i), :]   for i in 0..k-1, idx(i) = rows ? rows[i] : i
typedef struct {
  int m, n, k;
  const float* x; int64_t ldx;
  const void* w; polar_dtype wdt; int64_t ldw;
  const int32_t* rows;
  const void* bias; polar_dtype bdt;  // length n, may be NULL
  float* y; int64_t ldy;
  int accumulate;
} polar_linear_t_params;
int polar_linear_t(const polar_linear_t_params* p);

// Vector ISA the CPU GEMMs were compiled for: "avx512", "avx2" or "scalar" (for `polar doctor`, bench JSON).
const char* polar_gemm_cpu_isa(void);

#ifdef __cplusplus
}
#endif
