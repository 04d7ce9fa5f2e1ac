// Element-wise and fused kernels of router training (the TensorFlow.js native backend): weighted binary
// cross-entropy on logits, AdamW, bias/activation, broadcasting arithmetic, reductions, label unpacking and
// the routers' evaluation counts. Plain C API over POD parameter structs; fp32; threaded through the CPU
// pool; vectorised (AVX-512 / AVX2+FMA / scalar, chosen by the build's -march).
//
// Determinism: every result is independent of the thread count and of scheduling. Reductions sum fixed
// chunks in a fixed order, so the same inputs give the same bits on any run of the same build.
#pragma once
#include "polar/common.h"

#ifdef __cplusplus
extern "C" {
#endif

// Weighted BCE on logits z with labels y in [0, 1], fused forward and backward:
//   loss_i = pos_weight * y_i * softplus(-z_i) + neg_weight * (1 - y_i) * softplus(z_i)
//   grad_i = grad_scale * (pos_weight * y_i * (sigmoid(z_i) - 1) + neg_weight * (1 - y_i) * sigmoid(z_i))
// *loss_sum receives sum_i loss_i (not scaled). grad may be NULL (loss only) and may alias nothing.
typedef struct {
  int64_t n;
  const float* logits;
  const float* labels;
  float pos_weight, neg_weight;
  float grad_scale;
  float* grad;
  double* loss_sum;
} polar_bce_params;
int polar_bce_logits(const polar_bce_params* p);

// AdamW (decoupled weight decay, PyTorch's formula), in place on w, m, v:
//   w -= lr * weight_decay * w;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   w -= (lr / (1 - b1^step)) * m / (sqrt(v) / sqrt(1 - b2^step) + eps)
typedef struct {
  int64_t n;
  float* w;
  const float* g;
  float* m;
  float* v;
  float lr, beta1, beta2, eps, weight_decay;
  int64_t step;  // >= 1
} polar_adamw_params;
int polar_adamw(const polar_adamw_params* p);

// out[r, c] = a(r, c) OP b(r, c) over a rows x cols grid, each operand with its own broadcast mode.
// out may alias a or b when that operand is POLAR_BC_FULL.
typedef enum { POLAR_OP_ADD = 0, POLAR_OP_SUB = 1, POLAR_OP_MUL = 2, POLAR_OP_DIV = 3, POLAR_OP_MAX = 4, POLAR_OP_MIN = 5,
               POLAR_OP_SQDIFF = 6 } polar_binop;
typedef enum {
  POLAR_BC_FULL = 0,    // [rows, cols]
  POLAR_BC_SCALAR = 1,  // one value
  POLAR_BC_ROW = 2,     // [cols], the same for every row
  POLAR_BC_COL = 3      // [rows], the same for every column
} polar_bcast;
typedef struct {
  int op;
  int64_t rows, cols;
  const float* a; int a_mode;
  const float* b; int b_mode;
  float* out;
} polar_binary_params;
int polar_binary(const polar_binary_params* p);

// out[i] = f(x[i]); out may alias x.
typedef enum { POLAR_UN_SIGMOID = 0, POLAR_UN_RELU = 1, POLAR_UN_NEG = 2, POLAR_UN_EXP = 3, POLAR_UN_LOG = 4,
               POLAR_UN_SQRT = 5, POLAR_UN_SQUARE = 6, POLAR_UN_ABS = 7, POLAR_UN_SOFTPLUS = 8,
               POLAR_UN_STEP = 9 /* x > 0 ? 1 : 0 (ReLU's derivative mask) */ } polar_unop;
typedef struct {
  int op;
  int64_t n;
  const float* x;
  float* out;
} polar_unary_params;
int polar_unary(const polar_unary_params* p);

// In place on y [rows, cols] (row stride ldy): y = act(y + bias[col]); bias may be NULL; act 0 none, 1 ReLU.
typedef struct {
  int64_t rows, cols;
  float* y; int64_t ldy;
  const float* bias;
  int act;
} polar_bias_act_params;
int polar_bias_act(const polar_bias_act_params* p);

// out[c] = sum_r x[r, c] (rows summed in order: bias gradients, Sum over axis 0).
typedef struct {
  int64_t rows, cols;
  const float* x;
  float* out;
} polar_col_sum_params;
int polar_col_sum(const polar_col_sum_params* p);

// out[r] = sum_c x[r, c] (Sum over the last axis).
int polar_row_sum(const polar_col_sum_params* p);

// Bit-packed labels to fp32 0/1: out[r, c] = bit c of row r (byte c >> 3, bit c & 7), rows of `stride` bytes.
typedef struct {
  int64_t rows, cols, stride;
  const uint8_t* bits;
  float* out;
} polar_unpack_bits_params;
int polar_unpack_bits(const polar_unpack_bits_params* p);

// Evaluation counts of a router on a block of rows. A unit (neuron or head) is predicted on when its logit
// is > threshold; labels come as fp32 0/1 (labels) or bit-packed rows (bits, bit_stride bytes per row).
// For each k in ks (ascending, 1..cols), the top-k units of each row by logit (ties: lower index first)
// are compared with the row's positives:
//   hits[j]       += sum over rows of |topk(row) ∩ positives(row)|
//   recall_sum[j] += sum over rows with >= 1 positive of |topk ∩ positives| / |positives|
// Counts accumulate into the outputs (zero them first). Row sums are added in fixed chunks and order.
typedef struct {
  int64_t rows, cols;
  const float* logits; int64_t ld;
  const float* labels;   // [rows, cols] or NULL
  const uint8_t* bits;   // [rows, bit_stride] or NULL
  int64_t bit_stride;
  float threshold;
  int nk;
  const int32_t* ks;
  // outputs (accumulated)
  int64_t* tp; int64_t* fp; int64_t* fn;
  int64_t* positives;        // total positive labels
  int64_t* rows_with_pos;
  int64_t* hits;             // [nk]
  double* recall_sum;        // [nk]
} polar_router_eval_params;
int polar_router_eval(const polar_router_eval_params* p);

#ifdef __cplusplus
}
#endif
