// Internal interface of the selective GEMM (sel_gemm.cu), used by the MLP entry points and the routers.
#pragma once
#include <cuda.h>  // CUtensorMap (the type only; the encoder is fetched from the driver at run time)

#include "common.cuh"

namespace polar_cuda {

enum { A_ROWS = 0, A_COLS = 1 };       // fc1-like (gathered rows of A) / fc2-like (gathered K rows of A)
enum { EPI_STORE = 0, EPI_COLSUM = 1 };  // write C / add the column sums over the batch into colsum

struct GemmArgs {
  const void* A;
  int64_t lda;
  const int32_t* idx;
  const void* B;
  int64_t ldb;
  const void* bias;
  int bias_gather;  // bias[idx[f]] (fc1) instead of bias[f]
  void* C;
  int64_t ldc;
  int c_f32, accumulate;
  float* colsum;
  int colsum_sigmoid, epi, act;
  int M, F, K;
  int early_a;        // A_COLS: stream the first weight tiles before waiting for the previous kernel
  int m_inner;        // set by gemm_run: > 0 = the batch tiles are interleaved in grid.x (x = f_tile * m_inner + m_tile)
  int reduce_atomic;  // set by gemm_run
  int nchunks, cps;   // set by gemm_run
  float* ws;          // set by gemm_run
  unsigned* counters;
  int cluster_reduce;  // set by gemm_run: the split-K CTAs of a tile are one cluster (mma.sync, lock-step wgmma)
  CUtensorMap tmb;    // set by gemm_run for the warp-specialized kernel: TMA map of B, boxes of [nb rows][64 k]
};

// The experimental tuning knobs (polar_cuda_set_tuning; from the environment until set).
const polar_cuda_tuning& tuning();
// Programmatic dependent launches: on sm_90+, unless the tuning turned them off (POLAR_CUDA_NO_PDL).
inline bool pdl_on(const DevProps& dp) { return tuning().pdl && dp.major >= 9; }

// Plans and launches. need != NULL: only computes the workspace bytes into *need.
int gemm_run(polar_dtype dt, int amode, GemmArgs g, int impl, int splits, cudaStream_t st, void* ws, size_t ws_bytes,
             size_t* need, const char* who);

}  // namespace polar_cuda
