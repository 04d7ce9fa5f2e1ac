// N-API glue of the tensor kernels used by the TensorFlow.js native backend and router training
// (polar/gemm.h: polar_sgemm; polar/train_ops.h). No math here: argument checks, then one kernel call.
//
// Every function is synchronous and works on the caller's typed arrays in place (the tensors' memory in
// the TensorFlow.js backend): no copies. They are short (microseconds to milliseconds) and called from
// inside TensorFlow.js kernels, which are synchronous by contract. The TypeScript wrapper
// (src/runtime/ops.ts) validates shapes first; the checks here keep out-of-bounds access impossible even
// when it is bypassed.
#include <cstdint>
#include <string>
#include <vector>

#include "registry.h"
#include "polar/gemm.h"
#include "polar/train_ops.h"

namespace {

using polar_native::throw_kernel_error;

[[noreturn]] void type_error(Napi::Env env, const std::string& msg) { throw Napi::TypeError::New(env, msg); }

int64_t get_int(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsNumber()) type_error(info.Env(), std::string(name) + ": expected a number");
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!(v == double(int64_t(v))) || v < -9007199254740991.0 || v > 9007199254740991.0)
    type_error(info.Env(), std::string(name) + ": expected an integer");
  return int64_t(v);
}

double get_num(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsNumber()) type_error(info.Env(), std::string(name) + ": expected a number");
  return info[i].As<Napi::Number>().DoubleValue();
}

bool is_nullish(const Napi::CallbackInfo& info, size_t i) {
  return i >= info.Length() || info[i].IsNull() || info[i].IsUndefined();
}

template <class T, napi_typedarray_type TT>
struct Arr {
  T* p = nullptr;
  int64_t n = 0;
};

template <class T, napi_typedarray_type TT>
Arr<T, TT> get_arr(const Napi::CallbackInfo& info, size_t i, const char* name, bool optional = false) {
  Arr<T, TT> a;
  if (optional && is_nullish(info, i)) return a;
  if (i >= info.Length() || !info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != TT) {
    const char* tn = TT == napi_float32_array ? "Float32Array" : TT == napi_int32_array ? "Int32Array" : "Uint8Array";
    type_error(info.Env(), std::string(name) + ": expected a " + tn + (optional ? " or null" : ""));
  }
  Napi::TypedArray ta = info[i].As<Napi::TypedArray>();
  Napi::ArrayBuffer ab = ta.ArrayBuffer();
  a.p = reinterpret_cast<T*>(static_cast<uint8_t*>(ab.Data()) + ta.ByteOffset());
  a.n = int64_t(ta.ElementLength());
  return a;
}
using F32 = Arr<float, napi_float32_array>;
using I32 = Arr<int32_t, napi_int32_array>;
using U8 = Arr<uint8_t, napi_uint8_array>;
inline F32 f32(const Napi::CallbackInfo& info, size_t i, const char* name, bool optional = false) {
  return get_arr<float, napi_float32_array>(info, i, name, optional);
}

void need(Napi::Env env, bool ok, const std::string& msg) {
  if (!ok) throw Napi::RangeError::New(env, msg);
}

// Elements a row-major operand spans: `lines` lines of `len` elements, `ld` apart, `batch` copies `stride` apart.
int64_t span(int64_t lines, int64_t len, int64_t ld, int batch, int64_t stride) {
  if (lines == 0 || len == 0 || batch == 0) return 0;
  return (batch - 1) * stride + (lines - 1) * ld + len;
}

// sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, batch, strideA, strideB, strideC)
Napi::Value Sgemm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  polar_sgemm_params p{};
  p.trans_a = int(get_int(info, 0, "transA") != 0);
  p.trans_b = int(get_int(info, 1, "transB") != 0);
  const int64_t m = get_int(info, 2, "m"), n = get_int(info, 3, "n"), k = get_int(info, 4, "k");
  p.alpha = float(get_num(info, 5, "alpha"));
  F32 a = f32(info, 6, "a");
  p.lda = get_int(info, 7, "lda");
  F32 b = f32(info, 8, "b");
  p.ldb = get_int(info, 9, "ldb");
  p.beta = float(get_num(info, 10, "beta"));
  F32 c = f32(info, 11, "c");
  p.ldc = get_int(info, 12, "ldc");
  const int64_t batch = get_int(info, 13, "batch");
  p.stride_a = get_int(info, 14, "strideA");
  p.stride_b = get_int(info, 15, "strideB");
  p.stride_c = get_int(info, 16, "strideC");
  need(env, m >= 0 && n >= 0 && k >= 0 && m < INT32_MAX && n < INT32_MAX && k < INT32_MAX, "sgemm: m, n, k must be in 0..2^31-1");
  need(env, batch >= 1 && batch < INT32_MAX, "sgemm: batch must be >= 1");
  need(env, p.stride_a >= 0 && p.stride_b >= 0 && p.stride_c >= 0, "sgemm: strides must be >= 0");
  // op(A) is m x k: stored [m, k] (lda >= k) or, transposed, [k, m] (lda >= m).
  const int64_t a_lines = p.trans_a ? k : m, a_len = p.trans_a ? m : k;
  const int64_t b_lines = p.trans_b ? n : k, b_len = p.trans_b ? k : n;
  need(env, p.lda >= (a_len > 0 ? a_len : 1) && p.ldb >= (b_len > 0 ? b_len : 1) && p.ldc >= (n > 0 ? n : 1),
       "sgemm: leading dimensions are smaller than the rows they hold");
  need(env, span(a_lines, a_len, p.lda, int(batch), p.stride_a) <= a.n, "sgemm: a is too short for m, k, lda, batch, strideA");
  need(env, span(b_lines, b_len, p.ldb, int(batch), p.stride_b) <= b.n, "sgemm: b is too short for k, n, ldb, batch, strideB");
  need(env, span(m, n, p.ldc, int(batch), p.stride_c) <= c.n, "sgemm: c is too short for m, n, ldc, batch, strideC");
  need(env, batch == 1 || p.stride_c >= m * p.ldc, "sgemm: strideC must separate the batch's outputs");
  p.m = int(m);
  p.n = int(n);
  p.k = int(k);
  p.a = a.p;
  p.b = b.p;
  p.c = c.p;
  p.batch = int(batch);
  if (polar_sgemm(&p) != 0) throw_kernel_error(env, "sgemm");
  return env.Undefined();
}

// bceLogits(logits, labels, posWeight, negWeight, gradScale, grad | null) -> loss sum
Napi::Value BceLogits(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  F32 z = f32(info, 0, "logits"), y = f32(info, 1, "labels");
  F32 g = f32(info, 5, "grad", true);
  need(env, y.n == z.n, "bceLogits: labels must have as many elements as logits");
  need(env, !g.p || g.n == z.n, "bceLogits: grad must have as many elements as logits");
  double loss = 0;
  polar_bce_params p{};
  p.n = z.n;
  p.logits = z.p;
  p.labels = y.p;
  p.pos_weight = float(get_num(info, 2, "posWeight"));
  p.neg_weight = float(get_num(info, 3, "negWeight"));
  p.grad_scale = float(get_num(info, 4, "gradScale"));
  p.grad = g.p;
  p.loss_sum = &loss;
  if (polar_bce_logits(&p) != 0) throw_kernel_error(env, "bceLogits");
  return Napi::Number::New(env, loss);
}

// adamw(w, g, m, v, lr, beta1, beta2, eps, weightDecay, step)
Napi::Value AdamW(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  F32 w = f32(info, 0, "w"), g = f32(info, 1, "g"), m = f32(info, 2, "m"), v = f32(info, 3, "v");
  need(env, g.n == w.n && m.n == w.n && v.n == w.n, "adamw: w, g, m, v must have the same length");
  polar_adamw_params p{};
  p.n = w.n;
  p.w = w.p;
  p.g = g.p;
  p.m = m.p;
  p.v = v.p;
  p.lr = float(get_num(info, 4, "lr"));
  p.beta1 = float(get_num(info, 5, "beta1"));
  p.beta2 = float(get_num(info, 6, "beta2"));
  p.eps = float(get_num(info, 7, "eps"));
  p.weight_decay = float(get_num(info, 8, "weightDecay"));
  p.step = get_int(info, 9, "step");
  need(env, p.step >= 1, "adamw: step must be >= 1");
  if (polar_adamw(&p) != 0) throw_kernel_error(env, "adamw");
  return env.Undefined();
}

int64_t bc_len(int mode, int64_t rows, int64_t cols) {
  switch (mode) {
    case POLAR_BC_FULL: return rows * cols;
    case POLAR_BC_ROW: return cols;
    case POLAR_BC_COL: return rows;
    default: return 1;
  }
}

// binary(op, rows, cols, a, aMode, b, bMode, out)
Napi::Value Binary(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  polar_binary_params p{};
  p.op = int(get_int(info, 0, "op"));
  p.rows = get_int(info, 1, "rows");
  p.cols = get_int(info, 2, "cols");
  F32 a = f32(info, 3, "a");
  p.a_mode = int(get_int(info, 4, "aMode"));
  F32 b = f32(info, 5, "b");
  p.b_mode = int(get_int(info, 6, "bMode"));
  F32 o = f32(info, 7, "out");
  need(env, p.rows >= 0 && p.cols >= 0, "binary: rows and cols must be >= 0");
  need(env, p.a_mode >= 0 && p.a_mode <= 3 && p.b_mode >= 0 && p.b_mode <= 3, "binary: modes must be 0..3");
  need(env, a.n >= bc_len(p.a_mode, p.rows, p.cols) && a.n >= 1, "binary: a is too short for its broadcast mode");
  need(env, b.n >= bc_len(p.b_mode, p.rows, p.cols) && b.n >= 1, "binary: b is too short for its broadcast mode");
  need(env, o.n >= p.rows * p.cols, "binary: out is too short");
  p.a = a.p;
  p.b = b.p;
  p.out = o.p;
  if (polar_binary(&p) != 0) throw_kernel_error(env, "binary");
  return env.Undefined();
}

// unary(op, x, out)
Napi::Value Unary(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  polar_unary_params p{};
  p.op = int(get_int(info, 0, "op"));
  F32 x = f32(info, 1, "x"), o = f32(info, 2, "out");
  need(env, o.n >= x.n, "unary: out is shorter than x");
  p.n = x.n;
  p.x = x.p;
  p.out = o.p;
  if (polar_unary(&p) != 0) throw_kernel_error(env, "unary");
  return env.Undefined();
}

// biasAct(y, rows, cols, ldy, bias | null, act)
Napi::Value BiasAct(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  polar_bias_act_params p{};
  F32 y = f32(info, 0, "y");
  p.rows = get_int(info, 1, "rows");
  p.cols = get_int(info, 2, "cols");
  p.ldy = get_int(info, 3, "ldy");
  F32 b = f32(info, 4, "bias", true);
  p.act = int(get_int(info, 5, "act"));
  need(env, p.rows >= 0 && p.cols >= 0 && p.ldy >= p.cols, "biasAct: bad rows, cols or ldy");
  need(env, span(p.rows, p.cols, p.ldy, 1, 0) <= y.n, "biasAct: y is too short");
  need(env, !b.p || b.n >= p.cols, "biasAct: bias is shorter than cols");
  p.y = y.p;
  p.bias = b.p;
  if (polar_bias_act(&p) != 0) throw_kernel_error(env, "biasAct");
  return env.Undefined();
}

Napi::Value Sum2d(const Napi::CallbackInfo& info, bool cols_out) {
  Napi::Env env = info.Env();
  polar_col_sum_params p{};
  F32 x = f32(info, 0, "x");
  p.rows = get_int(info, 1, "rows");
  p.cols = get_int(info, 2, "cols");
  F32 o = f32(info, 3, "out");
  need(env, p.rows >= 0 && p.cols >= 0 && x.n >= p.rows * p.cols, "sum: x is too short for rows x cols");
  need(env, o.n >= (cols_out ? p.cols : p.rows), "sum: out is too short");
  p.x = x.p;
  p.out = o.p;
  if ((cols_out ? polar_col_sum(&p) : polar_row_sum(&p)) != 0) throw_kernel_error(env, cols_out ? "colSum" : "rowSum");
  return env.Undefined();
}
Napi::Value ColSum(const Napi::CallbackInfo& info) { return Sum2d(info, true); }
Napi::Value RowSum(const Napi::CallbackInfo& info) { return Sum2d(info, false); }

// unpackBits(bits, rows, cols, stride, out)
Napi::Value UnpackBits(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  U8 bits = get_arr<uint8_t, napi_uint8_array>(info, 0, "bits");
  polar_unpack_bits_params p{};
  p.rows = get_int(info, 1, "rows");
  p.cols = get_int(info, 2, "cols");
  p.stride = get_int(info, 3, "stride");
  F32 o = f32(info, 4, "out");
  need(env, p.rows >= 0 && p.cols >= 0 && p.stride * 8 >= p.cols, "unpackBits: stride must hold cols bits");
  need(env, bits.n >= p.rows * p.stride, "unpackBits: bits is too short");
  need(env, o.n >= p.rows * p.cols, "unpackBits: out is too short");
  p.bits = bits.p;
  p.out = o.p;
  if (polar_unpack_bits(&p) != 0) throw_kernel_error(env, "unpackBits");
  return env.Undefined();
}

// routerEval(logits, rows, cols, labels | null, bits | null, bitStride, threshold, ks) -> counts
Napi::Value RouterEval(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  F32 z = f32(info, 0, "logits");
  polar_router_eval_params p{};
  p.rows = get_int(info, 1, "rows");
  p.cols = get_int(info, 2, "cols");
  F32 y = f32(info, 3, "labels", true);
  U8 bits = get_arr<uint8_t, napi_uint8_array>(info, 4, "bits", true);
  p.bit_stride = get_int(info, 5, "bitStride");
  p.threshold = float(get_num(info, 6, "threshold"));
  I32 ks = get_arr<int32_t, napi_int32_array>(info, 7, "ks");
  need(env, p.rows >= 0 && p.cols >= 1, "routerEval: rows >= 0 and cols >= 1 expected");
  need(env, z.n >= p.rows * p.cols, "routerEval: logits is too short");
  need(env, (y.p != nullptr) != (bits.p != nullptr), "routerEval: pass exactly one of labels and bits");
  need(env, !y.p || y.n >= p.rows * p.cols, "routerEval: labels is too short");
  need(env, !bits.p || (p.bit_stride * 8 >= p.cols && bits.n >= p.rows * p.bit_stride), "routerEval: bits too short");
  for (int64_t j = 0; j < ks.n; ++j) {
    need(env, ks.p[j] >= 1 && ks.p[j] <= p.cols && (j == 0 || ks.p[j] >= ks.p[j - 1]),
         "routerEval: ks must be ascending values in 1..cols");
  }
  int64_t tp = 0, fp = 0, fn = 0, pos = 0, rwp = 0;
  Napi::Float64Array hits = Napi::Float64Array::New(env, size_t(ks.n));
  Napi::Float64Array rsum = Napi::Float64Array::New(env, size_t(ks.n));
  std::vector<int64_t> h(size_t(ks.n), 0);
  std::vector<double> rs(size_t(ks.n), 0.0);
  p.logits = z.p;
  p.ld = p.cols;
  p.labels = y.p;
  p.bits = bits.p;
  p.nk = int(ks.n);
  p.ks = ks.p;
  p.tp = &tp;
  p.fp = &fp;
  p.fn = &fn;
  p.positives = &pos;
  p.rows_with_pos = &rwp;
  p.hits = h.data();
  p.recall_sum = rs.data();
  if (polar_router_eval(&p) != 0) throw_kernel_error(env, "routerEval");
  for (int64_t j = 0; j < ks.n; ++j) {
    hits[size_t(j)] = double(h[size_t(j)]);
    rsum[size_t(j)] = rs[size_t(j)];
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("tp", double(tp));
  o.Set("fp", double(fp));
  o.Set("fn", double(fn));
  o.Set("positives", double(pos));
  o.Set("rowsWithPositives", double(rwp));
  o.Set("hits", hits);
  o.Set("recallSum", rsum);
  return o;
}

void InitOps(Napi::Env env, Napi::Object exports) {
  exports.Set("sgemm", Napi::Function::New(env, Sgemm));
  exports.Set("bceLogits", Napi::Function::New(env, BceLogits));
  exports.Set("adamw", Napi::Function::New(env, AdamW));
  exports.Set("binary", Napi::Function::New(env, Binary));
  exports.Set("unary", Napi::Function::New(env, Unary));
  exports.Set("biasAct", Napi::Function::New(env, BiasAct));
  exports.Set("colSum", Napi::Function::New(env, ColSum));
  exports.Set("rowSum", Napi::Function::New(env, RowSum));
  exports.Set("unpackBits", Napi::Function::New(env, UnpackBits));
  exports.Set("routerEval", Napi::Function::New(env, RouterEval));
}

}  // namespace

POLAR_REGISTER(InitOps);
