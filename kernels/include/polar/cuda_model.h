// Model forward of the CUDA backend: the same model, session and forward semantics as the CPU backend
// (polar/model.h: OPT and LLaMA, batched causal prefill/decode, dense or sparse, captures), with the weights
// and the KV cache on the GPU. Plain C API, no Node and no CUDA headers here.
//
// Numerics (kernels/cuda/forward.cu):
//  - weights live on the GPU in fp16 or bf16: as stored; fp32 checkpoints are converted (fp16 by default,
//    bf16 with dtype = POLAR_BF16); norm weights and biases of the norms stay fp32.
//  - the residual stream, norms, RoPE, softmax and the logits are fp32; the inputs of the projections
//    (cuBLASLt polar_cuda_dense_linear or the selective GEMMs) and the KV cache are in the weights' dtype,
//    accumulation is fp32 everywhere.
//  - the sparse path uses the verified kernels of polar/cuda.h: MLP router with fused top-k + selective
//    fc1/fc2 (kept-neuron counts are padded to a multiple of 8 with neurons whose activations are zeroed, so
//    results equal an unpadded computation), head router with fused top-k + the decode attention kernel with
//    a per-sequence group index. Router weights (fp32 host arrays of polar_sparse_layer) are uploaded once
//    per session and cached by host address, size and a sampled fingerprint of their contents.
//  - prefill attention (and decode where the fast kernel does not apply: head_dim != 128, explicit head
//    masks, head-norm captures, slots not in arithmetic progression) runs a simple exact kernel: one warp
//    per (token, head), online softmax in fp32.
//
// Every entry point returns 0 / non-NULL on success and -1 / NULL on failure with the message in
// polar_last_error(); CUDA failures name the CUDA call, file and line. Nothing aborts.
#pragma once
#include "polar/common.h"
#include "polar/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct polar_cuda_model polar_cuda_model;
typedef struct polar_cuda_session polar_cuda_session;

typedef struct {
  int device;           // CUDA device ordinal
  polar_dtype dtype;    // dtype of fp32 checkpoints on the GPU: POLAR_F16 (default, also for F32 = 0) or POLAR_BF16
  int fp32_projections; // reserved (0)
} polar_cuda_model_options;

// Reads the weights (files or caller memory, as polar_model_create) and uploads them. opts may be NULL.
polar_cuda_model* polar_cuda_model_create(const polar_model_config* cfg, const polar_weight_desc* weights, int n_weights,
                                          const polar_cuda_model_options* opts);
void polar_cuda_model_free(polar_cuda_model* m);
const polar_model_config* polar_cuda_model_get_config(const polar_cuda_model* m);
// dtype of the weights on the GPU, bytes of GPU memory the weights take.
polar_dtype polar_cuda_model_dtype(const polar_cuda_model* m);
size_t polar_cuda_model_bytes(const polar_cuda_model* m);

// A KV cache of max_seqs slots x max_len positions on the GPU (the weights' dtype).
polar_cuda_session* polar_cuda_session_create(polar_cuda_model* m, int max_seqs, int max_len);
void polar_cuda_session_free(polar_cuda_session* s);
int polar_cuda_session_length(const polar_cuda_session* s, int slot);
int polar_cuda_session_reset(polar_cuda_session* s, int slot);  // slot < 0: every slot

// The same call as polar_forward (host pointers for every input and output); synchronous: it returns when
// the outputs are in the caller's buffers. Slot lengths advance only when the call succeeds.
int polar_cuda_forward(polar_cuda_session* s, const polar_forward_params* p);

#ifdef __cplusplus
}
#endif
