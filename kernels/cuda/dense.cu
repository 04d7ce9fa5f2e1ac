// Dense baseline GEMMs through cuBLASLt (fused bias / bias+ReLU epilogues), loaded at run time.
//
// cuBLAS is not needed to build: the few cuBLASLt entry points and enum values used here are declared
// below (stable since CUDA 11; values from cublasLt.h / cublas_api.h) and resolved with dlopen from
// $POLAR_CUBLASLT, libcublasLt.so.13, libcublasLt.so.12, libcublasLt.so. When none loads, the dense
// calls fail and say what was tried (no silent fallback).
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "common.cuh"

namespace polar_cuda {
namespace {

typedef int lt_status;  // cublasStatus_t, 0 = success
typedef void* lt_handle;
typedef void* lt_desc;
typedef void* lt_layout;
typedef void* lt_pref;
struct lt_algo {
  uint64_t data[8];
};
struct lt_heur {
  lt_algo algo;
  size_t workspaceSize;
  lt_status state;
  float wavesCount;
  int reserved[4];
};
enum {
  LT_COMPUTE_32F = 68,              // CUBLAS_COMPUTE_32F
  LT_OP_N = 0, LT_OP_T = 1,         // cublasOperation_t
  LT_DESC_TRANSA = 3, LT_DESC_TRANSB = 4, LT_DESC_EPILOGUE = 7, LT_DESC_BIAS_POINTER = 8,
  LT_EPI_DEFAULT = 1, LT_EPI_RELU = 2, LT_EPI_BIAS = 4, LT_EPI_RELU_BIAS = 6,
  LT_PREF_MAX_WORKSPACE_BYTES = 1,
};

struct Lt {
  lt_status (*create)(lt_handle*);
  lt_status (*destroy)(lt_handle);
  lt_status (*desc_create)(lt_desc*, int, int);
  lt_status (*desc_destroy)(lt_desc);
  lt_status (*desc_set)(lt_desc, int, const void*, size_t);
  lt_status (*layout_create)(lt_layout*, int, uint64_t, uint64_t, int64_t);
  lt_status (*layout_destroy)(lt_layout);
  lt_status (*pref_create)(lt_pref*);
  lt_status (*pref_destroy)(lt_pref);
  lt_status (*pref_set)(lt_pref, int, const void*, size_t);
  lt_status (*heuristic)(lt_handle, lt_desc, lt_layout, lt_layout, lt_layout, lt_layout, lt_pref, int, lt_heur*, int*);
  lt_status (*matmul)(lt_handle, lt_desc, const void*, const void*, lt_layout, const void*, lt_layout, const void*,
                      const void*, lt_layout, void*, lt_layout, const lt_algo*, void*, size_t, cudaStream_t);
  bool ok = false;
  std::string why;
};

std::mutex g_lt_mu;
Lt g_lt;
bool g_lt_tried = false;

Lt* lt_load() {
  std::lock_guard<std::mutex> lk(g_lt_mu);
  if (g_lt_tried) return g_lt.ok ? &g_lt : nullptr;
  g_lt_tried = true;
  const char* env = std::getenv("POLAR_CUBLASLT");
  const char* names[] = {env, "libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"};
  void* h = nullptr;
  std::string tried;
  for (const char* n : names) {
    if (!n || !*n) continue;
    h = dlopen(n, RTLD_NOW | RTLD_LOCAL);
    if (h) break;
    const char* e = dlerror();
    tried += std::string(" ") + n + " (" + (e ? e : "not found") + ");";
  }
  if (!h) {
    g_lt.why = "cuBLASLt could not be loaded; tried:" + tried +
               " fixes: install the CUDA toolkit's cuBLAS (or pip nvidia-cublas), add its lib folder to LD_LIBRARY_PATH, or set POLAR_CUBLASLT to the library's path";
    return nullptr;
  }
  bool good = true;
  auto sym = [&](const char* name) {
    void* s = dlsym(h, name);
    if (!s) {
      good = false;
      g_lt.why += std::string("missing symbol ") + name + "; ";
    }
    return s;
  };
  g_lt.create = (decltype(g_lt.create))sym("cublasLtCreate");
  g_lt.destroy = (decltype(g_lt.destroy))sym("cublasLtDestroy");
  g_lt.desc_create = (decltype(g_lt.desc_create))sym("cublasLtMatmulDescCreate");
  g_lt.desc_destroy = (decltype(g_lt.desc_destroy))sym("cublasLtMatmulDescDestroy");
  g_lt.desc_set = (decltype(g_lt.desc_set))sym("cublasLtMatmulDescSetAttribute");
  g_lt.layout_create = (decltype(g_lt.layout_create))sym("cublasLtMatrixLayoutCreate");
  g_lt.layout_destroy = (decltype(g_lt.layout_destroy))sym("cublasLtMatrixLayoutDestroy");
  g_lt.pref_create = (decltype(g_lt.pref_create))sym("cublasLtMatmulPreferenceCreate");
  g_lt.pref_destroy = (decltype(g_lt.pref_destroy))sym("cublasLtMatmulPreferenceDestroy");
  g_lt.pref_set = (decltype(g_lt.pref_set))sym("cublasLtMatmulPreferenceSetAttribute");
  g_lt.heuristic = (decltype(g_lt.heuristic))sym("cublasLtMatmulAlgoGetHeuristic");
  g_lt.matmul = (decltype(g_lt.matmul))sym("cublasLtMatmul");
  g_lt.ok = good;
  if (!good) g_lt.why = "cuBLASLt loaded but " + g_lt.why;
  return good ? &g_lt : nullptr;
}

// One cached plan per (device, shape, dtype, epilogue): descriptors, layouts and the heuristic's algorithm.
struct LtPlan {
  lt_desc desc;
  lt_layout la, lb, lc;
  lt_algo algo;
  size_t ws;
};
using PlanKey = std::tuple<int, int, int, int, int64_t, int64_t, int64_t, int, int, int, int>;
std::map<PlanKey, LtPlan> g_plans;
lt_handle g_handles[64];
void* g_ws[64];
constexpr size_t LT_WS = 32u << 20;

#define LT_CHECK(call)                                                                                   \
  do {                                                                                                   \
    lt_status s_ = (call);                                                                               \
    if (s_ != 0) return polar_set_error("cuBLASLt call %s failed: status %d (%s:%d)", #call, s_, __FILE__, __LINE__); \
  } while (0)

}  // namespace
}  // namespace polar_cuda

using namespace polar_cuda;

extern "C" int polar_cuda_cublaslt_available(void) {
  if (lt_load()) return 1;
  polar_set_error("%s", g_lt.why.c_str());
  return 0;
}

extern "C" int polar_cuda_dense_linear(const polar_cuda_dense_linear_params* p) {
  const char* who = "polar_cuda_dense_linear";
  POLAR_REQ(p != nullptr, "%s: expected a params struct, received NULL", who);
  POLAR_REQ(p->dtype == POLAR_F16 || p->dtype == POLAR_BF16, "%s: expected dtype f16 or bf16, received %d", who, (int)p->dtype);
  POLAR_REQ(p->m >= 1 && p->n >= 1 && p->k >= 1, "%s: expected m, n, k >= 1, received %d, %d, %d", who, p->m, p->n, p->k);
  POLAR_REQ(p->act == POLAR_ACT_NONE || p->act == POLAR_ACT_RELU, "%s: expected act 0 or 1, received %d", who, p->act);
  POLAR_REQ(p->x && p->w && p->y, "%s: expected x, w and y, received NULL", who);
  Lt* lt = lt_load();
  if (!lt) return polar_set_error("%s: %s", who, g_lt.why.c_str());
  DevProps dp;
  if (dev_props(&dp)) return -1;
  const int cdt = p->dtype == POLAR_F16 ? 2 /*CUDA_R_16F*/ : 14 /*CUDA_R_16BF*/;
  const int epi = p->bias ? (p->act ? LT_EPI_RELU_BIAS : LT_EPI_BIAS) : (p->act ? LT_EPI_RELU : LT_EPI_DEFAULT);
  std::lock_guard<std::mutex> lk(g_lt_mu);
  if (!g_handles[dp.device]) {
    LT_CHECK(lt->create(&g_handles[dp.device]));
    POLAR_CU(cudaMalloc(&g_ws[dp.device], LT_WS));
  }
  // Row-major y[m,n] = x[m,k] op(w) is column-major y^T[n,m] = op(w)^T[n,k] x^T[k,m]:
  //   A = w: w_kn == 0 ([n,k] row-major = col-major k x n, ld ldw) -> op T; w_kn == 1 ([k,n] = col-major n x k) -> op N
  //   B = x: col-major k x m, ld ldx, op N.   D = y: col-major n x m, ld ldy. Bias is per row of D (n).
  const PlanKey key{dp.device, p->m, p->n, p->k, p->ldx, p->ldw, p->ldy, p->w_kn, cdt, epi, 0};
  auto it = g_plans.find(key);
  if (it == g_plans.end()) {
    LtPlan pl{};
    LT_CHECK(lt->desc_create(&pl.desc, LT_COMPUTE_32F, 0 /*CUDA_R_32F*/));
    const int ta = p->w_kn ? LT_OP_N : LT_OP_T, tb = LT_OP_N;
    LT_CHECK(lt->desc_set(pl.desc, LT_DESC_TRANSA, &ta, sizeof ta));
    LT_CHECK(lt->desc_set(pl.desc, LT_DESC_TRANSB, &tb, sizeof tb));
    LT_CHECK(lt->desc_set(pl.desc, LT_DESC_EPILOGUE, &epi, sizeof epi));
    if (p->w_kn)
      LT_CHECK(lt->layout_create(&pl.la, cdt, (uint64_t)p->n, (uint64_t)p->k, p->ldw));
    else
      LT_CHECK(lt->layout_create(&pl.la, cdt, (uint64_t)p->k, (uint64_t)p->n, p->ldw));
    LT_CHECK(lt->layout_create(&pl.lb, cdt, (uint64_t)p->k, (uint64_t)p->m, p->ldx));
    LT_CHECK(lt->layout_create(&pl.lc, cdt, (uint64_t)p->n, (uint64_t)p->m, p->ldy));
    lt_pref pref;
    LT_CHECK(lt->pref_create(&pref));
    const uint64_t wsb = LT_WS;
    LT_CHECK(lt->pref_set(pref, LT_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb));
    lt_heur h[8];
    int nret = 0;
    // the bias pointer is part of the plan's descriptor; set a placeholder for the heuristic
    const void* bptr = p->bias;
    if (bptr) LT_CHECK(lt->desc_set(pl.desc, LT_DESC_BIAS_POINTER, &bptr, sizeof bptr));
    LT_CHECK(lt->heuristic(g_handles[dp.device], pl.desc, pl.la, pl.lb, pl.lc, pl.lc, pref, 8, h, &nret));
    lt->pref_destroy(pref);
    if (nret < 1) return polar_set_error("%s: cuBLASLt found no algorithm for m=%d n=%d k=%d", who, p->m, p->n, p->k);
    pl.algo = h[0].algo;
    pl.ws = h[0].workspaceSize;
    it = g_plans.emplace(key, pl).first;
  }
  LtPlan& pl = it->second;
  if (p->bias) {
    const void* bptr = p->bias;
    LT_CHECK(lt->desc_set(pl.desc, LT_DESC_BIAS_POINTER, &bptr, sizeof bptr));
  }
  const float alpha = 1.f, beta = 0.f;
  LT_CHECK(lt->matmul(g_handles[dp.device], pl.desc, &alpha, p->w, pl.la, p->x, pl.lb, &beta, p->y, pl.lc, p->y, pl.lc, &pl.algo,
                      g_ws[dp.device], LT_WS, (cudaStream_t)p->stream));
  return 0;
}

extern "C" void polar_cuda_release(void) {
  std::lock_guard<std::mutex> lk(g_lt_mu);
  if (g_lt.ok) {
    for (auto& kv : g_plans) {
      g_lt.layout_destroy(kv.second.la);
      g_lt.layout_destroy(kv.second.lb);
      g_lt.layout_destroy(kv.second.lc);
      g_lt.desc_destroy(kv.second.desc);
    }
  }
  g_plans.clear();
  for (int d = 0; d < 64; ++d) {
    if (g_ws[d]) {
      int cur = 0;
      cudaGetDevice(&cur);
      cudaSetDevice(d);
      cudaFree(g_ws[d]);
      cudaSetDevice(cur);
      g_ws[d] = nullptr;
    }
    if (g_handles[d] && g_lt.ok) g_lt.destroy(g_handles[d]);
    g_handles[d] = nullptr;
  }
}
