// Model forward of the CPU backend: a decoder-only transformer (OPT or LLaMA family) over weights that
// stay as stored (fp32/fp16/bf16, memory-mapped read-only from safetensors files), a per-session fp32 KV
// cache, and a batched causal forward (prefill and decode, sequences of different lengths in one call),
// dense or sparse (Polar Sparsity: routed MLP neurons and attention heads). Plain C API, no Node.
//
// Every entry point that can fail returns 0 / non-NULL on success and -1 / NULL on failure, with the
// message in polar_last_error(); nothing aborts, and allocation failures are reported the same way.
#pragma once
#include "polar/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { POLAR_FAMILY_OPT = 0, POLAR_FAMILY_LLAMA = 1 } polar_family;
typedef enum { POLAR_ROPE_NONE = 0, POLAR_ROPE_DEFAULT = 1, POLAR_ROPE_LLAMA3 = 2 } polar_rope_type;

// Shape and options of the model (the runtime's ModelSpec, flattened).
typedef struct {
  polar_family family;
  int layers, hidden, heads, kv_heads, head_dim, ffn, vocab;
  int max_positions;    // OPT: rows of the learned position table minus position_offset
  int embed_dim;        // OPT word_embed_proj_dim (project_in/out when != hidden); = hidden otherwise
  int position_offset;  // OPT: 2; LLaMA: 0
  int norm_before;      // OPT: pre-LN (1) or post-LN (0); LLaMA: 1
  int gated;            // 1: SiLU(gate) * up (LLaMA); 0: ReLU(up) (OPT)
  float norm_eps;       // LayerNorm (OPT) / RMSNorm (LLaMA) epsilon
  polar_rope_type rope;
  float rope_theta, rope_factor, rope_low_freq_factor, rope_high_freq_factor;
  int rope_original_max_positions;
} polar_model_config;

// One weight tensor, by canonical runtime name ("tok_emb.weight", "layers.3.up.weight", ... see
// src/model/weights.ts). Either a byte range of a file (mapped read-only by the model, shared between
// tensors of the same file) or, with file == NULL, caller memory that must outlive the model.
typedef struct {
  const char* name;
  const char* file;
  int64_t offset, nbytes;
  const void* data;
  polar_dtype dtype;
  int ndim;
  int64_t shape[4];
} polar_weight_desc;

typedef struct polar_model polar_model;
typedef struct polar_session polar_session;

// Checks every tensor the configuration needs (name, dtype, shape, byte size within the file).
polar_model* polar_model_create(const polar_model_config* cfg, const polar_weight_desc* weights, int n_weights);
void polar_model_free(polar_model* m);
const polar_model_config* polar_model_get_config(const polar_model* m);

// A KV cache of max_seqs slots x max_len positions (fp32). The model must outlive the session.
polar_session* polar_session_create(polar_model* m, int max_seqs, int max_len);
void polar_session_free(polar_session* s);
int polar_session_length(const polar_session* s, int slot);     // -1 when slot is out of range
int polar_session_reset(polar_session* s, int slot);            // slot < 0: every slot

// Per-layer capture buffers, fp32, rows in input order (NULL: not captured).
typedef struct {
  float* attn_in;    // [T, hidden] output of the pre-attention norm (post-LN OPT: the attention input)
  float* mlp_in;     // [T, hidden] output of the pre-MLP norm (post-LN OPT: the MLP input)
  float* mlp_act;    // [T, ffn]    input of the down projection (zeros for neurons a sparse MLP skipped)
  float* head_norm;  // [T, heads]  L2 norm of each head's attention output (0 for skipped heads)
} polar_layer_capture;

typedef enum { POLAR_SPARSE_DENSE = 0, POLAR_SPARSE_ROUTER = 1, POLAR_SPARSE_EXPLICIT = 2 } polar_sparse_mode;
typedef enum { POLAR_MLP_SCORE_LOGIT = 0, POLAR_MLP_SCORE_SIGMOID = 1 } polar_mlp_score;

// Sparsity of one layer for one forward call. Both routers read the layer's attn_in (the router input).
typedef struct {
  // MLP neurons, shared by every token of the call (the union a batch must compute).
  polar_sparse_mode mlp_mode;
  const float* mlp_fc1; int mlp_rank;    // ROUTER: [rank, hidden] and [ffn, rank], fp32, no bias,
  const float* mlp_fc2;                  //   no activation between: score = fc2 . (fc1 . x)
  polar_mlp_score mlp_score;             // ROUTER: per-token scores summed over the call's tokens as is
  int mlp_k;                             //   (LOGIT) or after a sigmoid (SIGMOID); top mlp_k kept
  const int32_t* mlp_idx; int mlp_idx_n; // EXPLICIT: distinct neuron indices (any order)
  // Attention heads, per token (each token its own). A KV group is the unit (a head for MHA).
  polar_sparse_mode attn_mode;
  const float* attn_w; const float* attn_b; int attn_units;  // ROUTER: [units, hidden], [units]; units =
  int attn_k;                                                //   heads (summed per group) or kv_heads
  const uint8_t* attn_mask;              // EXPLICIT: [T, heads], non-zero = computed
  // Outputs (each may be NULL).
  int32_t* out_mlp_idx; int* out_mlp_n;  // kept neurons ascending (capacity ffn); ffn of them when dense
  uint8_t* out_heads;                    // [T, heads] 1 = computed
} polar_sparse_layer;

typedef enum { POLAR_LOGITS_NONE = 0, POLAR_LOGITS_ALL = 1, POLAR_LOGITS_LAST = 2 } polar_logits_mode;

// One batched causal step: input i appends n_tokens[i] tokens to slot slots[i] (positions continue from
// the slot's length). Slots are distinct; tokens are concatenated in input order (T = sum n_tokens).
typedef struct {
  int n_inputs;
  const int32_t* slots;
  const int32_t* n_tokens;
  const int32_t* tokens;
  polar_logits_mode logits_mode;
  float* logits;                         // ALL: [T, vocab]; LAST: [n_inputs, vocab]
  const polar_layer_capture* captures;   // [layers] or NULL
  const polar_sparse_layer* sparse;      // [layers] or NULL (dense); layer entries with both modes DENSE run dense
} polar_forward_params;

// Slot lengths advance only when the call succeeds.
int polar_forward(polar_session* s, const polar_forward_params* p);

#ifdef __cplusplus
}
#endif
