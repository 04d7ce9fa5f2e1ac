// Glue of the CUDA model forward (kernels/include/polar/cuda_model.h): handles for CUDA models and sessions,
// and the forward as an AsyncWorker that returns a Promise. The request object is the one of
// native/model_glue.cc (NativeForwardRequest in src/runtime/model.ts); values are checked in TypeScript,
// here only JS types and buffer sizes. Without the CUDA build every function throws
// "CUDA backend not compiled". No math here.
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "registry.h"

#ifdef POLAR_HAVE_CUDA
#include "polar/cuda_model.h"
#endif

namespace {

#ifndef POLAR_HAVE_CUDA

Napi::Value NotCompiled(const Napi::CallbackInfo& info) {
  throw Napi::Error::New(info.Env(),
                         "CUDA backend not compiled: this polar_native.node was built without nvcc (rebuild with `npm run build:native` "
                         "on a machine with the CUDA toolkit)");
}

void InitCuda(Napi::Env env, Napi::Object exports) {
  for (const char* n : {"cudaModelCreate", "cudaModelFree", "cudaModelInfo", "cudaSessionCreate", "cudaSessionFree", "cudaSessionReset",
                        "cudaSessionLength", "cudaSessionForward"})
    exports.Set(n, Napi::Function::New(env, NotCompiled, n));
}

#else

constexpr uint32_t kModelTag = 0x43554d44;    // 'CUMD'
constexpr uint32_t kSessionTag = 0x43555353;  // 'CUSS'

struct ModelHandle {
  uint32_t tag = kModelTag;
  std::shared_ptr<polar_cuda_model> m;
};

struct SessionHandle {
  uint32_t tag = kSessionTag;
  std::shared_ptr<polar_cuda_session> s;
  std::shared_ptr<std::atomic<bool>> busy = std::make_shared<std::atomic<bool>>(false);
  int layers = 0, hidden = 0, heads = 0, ffn = 0, vocab = 0;
};

[[noreturn]] void type_error(Napi::Env env, const std::string& msg) { throw Napi::TypeError::New(env, msg); }

template <class H>
H* handle(const Napi::Value& v, uint32_t tag, const char* what) {
  if (!v.IsExternal()) type_error(v.Env(), std::string(what) + ": expected a native CUDA handle");
  H* h = v.As<Napi::External<H>>().Data();
  if (!h || h->tag != tag) type_error(v.Env(), std::string(what) + ": expected a native CUDA handle of the right kind");
  return h;
}

ModelHandle* model_of(const Napi::Value& v) {
  ModelHandle* h = handle<ModelHandle>(v, kModelTag, "cuda model");
  if (!h->m) throw Napi::Error::New(v.Env(), "cuda model: the model was disposed");
  return h;
}

SessionHandle* session_of(const Napi::Value& v) {
  SessionHandle* h = handle<SessionHandle>(v, kSessionTag, "cuda session");
  if (!h->s) throw Napi::Error::New(v.Env(), "cuda session: the session was disposed");
  return h;
}

double num(const Napi::Object& o, const char* k) {
  Napi::Value v = o.Get(k);
  if (!v.IsNumber()) type_error(o.Env(), std::string("config.") + k + ": expected a number");
  return v.As<Napi::Number>().DoubleValue();
}
int inum(const Napi::Object& o, const char* k) { return (int)num(o, k); }

class Keep {
 public:
  template <class T>
  T* view(Napi::Env env, const Napi::Value& v, napi_typedarray_type type, size_t want, const char* what, bool optional = true) {
    if (v.IsUndefined() || v.IsNull()) {
      if (optional) return nullptr;
      type_error(env, std::string(what) + ": expected a typed array, received nothing");
    }
    if (!v.IsTypedArray()) type_error(env, std::string(what) + ": expected a typed array");
    Napi::TypedArray ta = v.As<Napi::TypedArray>();
    if (ta.TypedArrayType() != type) type_error(env, std::string(what) + ": expected a typed array of the right element type");
    if (ta.ElementLength() < want)
      type_error(env, std::string(what) + ": expected at least " + std::to_string(want) + " elements, received " + std::to_string(ta.ElementLength()));
    refs_.push_back(Napi::Persistent(v.As<Napi::Object>()));
    uint8_t* base = (uint8_t*)ta.ArrayBuffer().Data();
    return (T*)(base + ta.ByteOffset());
  }

 private:
  std::vector<Napi::ObjectReference> refs_;
};

Napi::Value ModelCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject() || !info[1].IsArray()) type_error(env, "cudaModelCreate(config, weights, opts): expected an object and an array");
  Napi::Object o = info[0].As<Napi::Object>();
  polar_model_config c{};
  c.family = (polar_family)inum(o, "family");
  c.layers = inum(o, "layers");
  c.hidden = inum(o, "hidden");
  c.heads = inum(o, "heads");
  c.kv_heads = inum(o, "kvHeads");
  c.head_dim = inum(o, "headDim");
  c.ffn = inum(o, "ffn");
  c.vocab = inum(o, "vocab");
  c.max_positions = inum(o, "maxPositions");
  c.embed_dim = inum(o, "embedDim");
  c.position_offset = inum(o, "positionOffset");
  c.norm_before = inum(o, "normBefore");
  c.gated = inum(o, "gated");
  c.norm_eps = (float)num(o, "normEps");
  c.rope = (polar_rope_type)inum(o, "rope");
  c.rope_theta = (float)num(o, "ropeTheta");
  c.rope_factor = (float)num(o, "ropeFactor");
  c.rope_low_freq_factor = (float)num(o, "ropeLowFreqFactor");
  c.rope_high_freq_factor = (float)num(o, "ropeHighFreqFactor");
  c.rope_original_max_positions = inum(o, "ropeOriginalMaxPositions");

  Napi::Array arr = info[1].As<Napi::Array>();
  const uint32_t n = arr.Length();
  std::vector<std::string> names(n), files(n);
  std::vector<polar_weight_desc> w(n);
  for (uint32_t i = 0; i < n; i++) {
    Napi::Value e = arr.Get(i);
    if (!e.IsObject()) type_error(env, "weights[" + std::to_string(i) + "]: expected an object");
    Napi::Object d = e.As<Napi::Object>();
    if (!d.Get("name").IsString() || !d.Get("file").IsString() || !d.Get("dtype").IsString() || !d.Get("shape").IsArray())
      type_error(env, "weights[" + std::to_string(i) + "]: expected {name, file, offset, nbytes, dtype, shape}");
    names[i] = d.Get("name").As<Napi::String>().Utf8Value();
    files[i] = d.Get("file").As<Napi::String>().Utf8Value();
    const std::string dt = d.Get("dtype").As<Napi::String>().Utf8Value();
    polar_weight_desc& x = w[i];
    x.name = names[i].c_str();
    x.file = files[i].c_str();
    x.offset = (int64_t)num(d, "offset");
    x.nbytes = (int64_t)num(d, "nbytes");
    x.data = nullptr;
    x.dtype = dt == "F32" ? POLAR_F32 : dt == "F16" ? POLAR_F16 : dt == "BF16" ? POLAR_BF16 : (polar_dtype)-1;
    Napi::Array sh = d.Get("shape").As<Napi::Array>();
    x.ndim = (int)sh.Length();
    if (x.ndim > 4) type_error(env, "weights[" + std::to_string(i) + "].shape: expected at most 4 dimensions");
    for (int j = 0; j < x.ndim; j++) x.shape[j] = (int64_t)sh.Get(j).As<Napi::Number>().DoubleValue();
  }
  polar_cuda_model_options mo{};
  mo.device = 0;
  mo.dtype = POLAR_F16;
  if (info[2].IsObject()) {
    Napi::Object op = info[2].As<Napi::Object>();
    if (op.Get("device").IsNumber()) mo.device = op.Get("device").As<Napi::Number>().Int32Value();
    if (op.Get("dtype").IsString()) {
      const std::string d = op.Get("dtype").As<Napi::String>().Utf8Value();
      if (d == "bf16")
        mo.dtype = POLAR_BF16;
      else if (d != "f16")
        type_error(env, "cudaModelCreate opts.dtype: expected \"f16\" or \"bf16\", received \"" + d + "\"");
    }
  }
  polar_cuda_model* m = polar_cuda_model_create(&c, w.data(), (int)n, &mo);
  if (!m) polar_native::throw_kernel_error(env, "cudaModelCreate");
  auto* h = new ModelHandle();
  h->m = std::shared_ptr<polar_cuda_model>(m, polar_cuda_model_free);
  return Napi::External<ModelHandle>::New(env, h, [](Napi::Env, ModelHandle* p) { delete p; });
}

Napi::Value ModelFree(const Napi::CallbackInfo& info) {
  ModelHandle* h = handle<ModelHandle>(info[0], kModelTag, "cuda model");
  h->m.reset();  // sessions keep their own reference
  return info.Env().Undefined();
}

Napi::Value ModelInfo(const Napi::CallbackInfo& info) {
  ModelHandle* h = model_of(info[0]);
  Napi::Object o = Napi::Object::New(info.Env());
  const polar_dtype d = polar_cuda_model_dtype(h->m.get());
  o.Set("dtype", Napi::String::New(info.Env(), d == POLAR_BF16 ? "bf16" : "f16"));
  o.Set("weightBytes", Napi::Number::New(info.Env(), (double)polar_cuda_model_bytes(h->m.get())));
  return o;
}

Napi::Value SessionCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ModelHandle* mh = model_of(info[0]);
  if (!info[1].IsNumber() || !info[2].IsNumber()) type_error(env, "cudaSessionCreate(model, maxSeqs, maxLen): expected numbers");
  const int max_seqs = info[1].As<Napi::Number>().Int32Value(), max_len = info[2].As<Napi::Number>().Int32Value();
  polar_cuda_session* s = polar_cuda_session_create(mh->m.get(), max_seqs, max_len);
  if (!s) polar_native::throw_kernel_error(env, "cudaSessionCreate");
  auto* h = new SessionHandle();
  std::shared_ptr<polar_cuda_model> keep = mh->m;
  h->s = std::shared_ptr<polar_cuda_session>(s, [keep](polar_cuda_session* p) { polar_cuda_session_free(p); });
  const polar_model_config& c = *polar_cuda_model_get_config(mh->m.get());
  h->layers = c.layers;
  h->hidden = c.hidden;
  h->heads = c.heads;
  h->ffn = c.ffn;
  h->vocab = c.vocab;
  return Napi::External<SessionHandle>::New(env, h, [](Napi::Env, SessionHandle* p) { delete p; });
}

Napi::Value SessionFree(const Napi::CallbackInfo& info) {
  SessionHandle* h = handle<SessionHandle>(info[0], kSessionTag, "cuda session");
  h->s.reset();  // a running forward keeps its own reference
  return info.Env().Undefined();
}

Napi::Value SessionReset(const Napi::CallbackInfo& info) {
  SessionHandle* h = session_of(info[0]);
  if (h->busy->load()) throw Napi::Error::New(info.Env(), "session reset: a forward is running on this session");
  const int slot = info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value() : -1;
  if (polar_cuda_session_reset(h->s.get(), slot)) polar_native::throw_kernel_error(info.Env(), "cudaSessionReset");
  return info.Env().Undefined();
}

Napi::Value SessionLength(const Napi::CallbackInfo& info) {
  SessionHandle* h = session_of(info[0]);
  return Napi::Number::New(info.Env(), polar_cuda_session_length(h->s.get(), info[1].As<Napi::Number>().Int32Value()));
}

class ForwardWorker : public Napi::AsyncWorker {
 public:
  ForwardWorker(Napi::Env env, SessionHandle* h)
      : Napi::AsyncWorker(env, "polar:cudaForward"), deferred_(Napi::Promise::Deferred::New(env)), s_(h->s), busy_(h->busy) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  Keep keep;
  polar_forward_params p{};
  std::vector<polar_layer_capture> caps;
  std::vector<polar_sparse_layer> sparse;

  void Execute() override {
    try {
      if (polar_cuda_forward(s_.get(), &p)) SetError(std::string("cuda forward: ") + polar_last_error());
    } catch (const std::exception& e) {
      SetError(std::string("cuda forward: ") + e.what());
    }
  }
  void OnOK() override {
    busy_->store(false);
    deferred_.Resolve(Env().Undefined());
  }
  void OnError(const Napi::Error& e) override {
    busy_->store(false);
    deferred_.Reject(e.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<polar_cuda_session> s_;
  std::shared_ptr<std::atomic<bool>> busy_;
};

Napi::Value SessionForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  SessionHandle* h = session_of(info[0]);
  if (!info[1].IsObject()) type_error(env, "cudaSessionForward(session, req): expected an object");
  Napi::Object r = info[1].As<Napi::Object>();
  if (h->busy->load()) throw Napi::Error::New(env, "forward: a forward is already running on this session (await it first)");
  auto* w = new ForwardWorker(env, h);
  try {
    Keep& k = w->keep;
    polar_forward_params& p = w->p;
    Napi::Value slotsV = r.Get("slots");
    if (!slotsV.IsTypedArray()) type_error(env, "req.slots: expected an Int32Array");
    const size_t n_in = slotsV.As<Napi::TypedArray>().ElementLength();
    p.n_inputs = (int)n_in;
    p.slots = k.view<int32_t>(env, slotsV, napi_int32_array, n_in, "req.slots", false);
    p.n_tokens = k.view<int32_t>(env, r.Get("counts"), napi_int32_array, n_in, "req.counts", false);
    size_t T = 0;
    for (size_t i = 0; i < n_in; i++) {
      if (p.n_tokens[i] < 1) type_error(env, "req.counts: expected positive counts");
      T += (size_t)p.n_tokens[i];
    }
    p.tokens = k.view<int32_t>(env, r.Get("tokens"), napi_int32_array, T, "req.tokens", false);
    const int mode = r.Get("logitsMode").As<Napi::Number>().Int32Value();
    if (mode < 0 || mode > 2) type_error(env, "req.logitsMode: expected 0, 1 or 2");
    p.logits_mode = (polar_logits_mode)mode;
    const size_t rows = mode == POLAR_LOGITS_ALL ? T : n_in;
    p.logits = mode == POLAR_LOGITS_NONE ? nullptr : k.view<float>(env, r.Get("logits"), napi_float32_array, rows * (size_t)h->vocab, "req.logits", false);
    Napi::Value capsV = r.Get("captures");
    if (capsV.IsArray()) {
      Napi::Array ca = capsV.As<Napi::Array>();
      if (ca.Length() != (uint32_t)h->layers) type_error(env, "req.captures: expected one entry per layer");
      w->caps.assign(h->layers, polar_layer_capture{});
      for (int l = 0; l < h->layers; l++) {
        Napi::Value e = ca.Get(l);
        if (!e.IsObject()) continue;
        Napi::Object o = e.As<Napi::Object>();
        polar_layer_capture& c = w->caps[l];
        c.attn_in = k.view<float>(env, o.Get("attnIn"), napi_float32_array, T * h->hidden, "capture.attnIn");
        c.mlp_in = k.view<float>(env, o.Get("mlpIn"), napi_float32_array, T * h->hidden, "capture.mlpIn");
        c.mlp_act = k.view<float>(env, o.Get("mlpAct"), napi_float32_array, T * h->ffn, "capture.mlpAct");
        c.head_norm = k.view<float>(env, o.Get("headNorm"), napi_float32_array, T * h->heads, "capture.headNorm");
      }
      p.captures = w->caps.data();
    }
    Napi::Value spV = r.Get("sparse");
    if (spV.IsArray()) {
      Napi::Array sa = spV.As<Napi::Array>();
      if (sa.Length() != (uint32_t)h->layers) type_error(env, "req.sparse: expected one entry per layer");
      w->sparse.assign(h->layers, polar_sparse_layer{});
      for (int l = 0; l < h->layers; l++) {
        Napi::Value e = sa.Get(l);
        if (!e.IsObject()) continue;
        Napi::Object o = e.As<Napi::Object>();
        polar_sparse_layer& s = w->sparse[l];
        auto geti = [&](const char* key) {
          Napi::Value v = o.Get(key);
          return v.IsNumber() ? v.As<Napi::Number>().Int32Value() : 0;
        };
        s.mlp_mode = (polar_sparse_mode)geti("mlpMode");
        s.mlp_rank = geti("mlpRank");
        s.mlp_score = (polar_mlp_score)geti("mlpScore");
        s.mlp_k = geti("mlpK");
        if (s.mlp_mode == POLAR_SPARSE_ROUTER) {
          if (s.mlp_rank < 1) type_error(env, "sparse.mlpRank: expected >= 1");
          s.mlp_fc1 = k.view<float>(env, o.Get("mlpFc1"), napi_float32_array, (size_t)s.mlp_rank * h->hidden, "sparse.mlpFc1", false);
          s.mlp_fc2 = k.view<float>(env, o.Get("mlpFc2"), napi_float32_array, (size_t)s.mlp_rank * h->ffn, "sparse.mlpFc2", false);
        } else if (s.mlp_mode == POLAR_SPARSE_EXPLICIT) {
          Napi::Value iv = o.Get("mlpIdx");
          if (!iv.IsTypedArray()) type_error(env, "sparse.mlpIdx: expected an Int32Array");
          s.mlp_idx_n = (int)iv.As<Napi::TypedArray>().ElementLength();
          s.mlp_idx = k.view<int32_t>(env, iv, napi_int32_array, 0, "sparse.mlpIdx", false);
        }
        s.attn_mode = (polar_sparse_mode)geti("attnMode");
        s.attn_units = geti("attnUnits");
        s.attn_k = geti("attnK");
        if (s.attn_mode == POLAR_SPARSE_ROUTER) {
          if (s.attn_units < 1) type_error(env, "sparse.attnUnits: expected >= 1");
          s.attn_w = k.view<float>(env, o.Get("attnW"), napi_float32_array, (size_t)s.attn_units * h->hidden, "sparse.attnW", false);
          s.attn_b = k.view<float>(env, o.Get("attnB"), napi_float32_array, (size_t)s.attn_units, "sparse.attnB");
        } else if (s.attn_mode == POLAR_SPARSE_EXPLICIT) {
          s.attn_mask = k.view<uint8_t>(env, o.Get("attnMask"), napi_uint8_array, T * h->heads, "sparse.attnMask", false);
        }
        s.out_mlp_idx = k.view<int32_t>(env, o.Get("outMlpIdx"), napi_int32_array, (size_t)h->ffn, "sparse.outMlpIdx");
        s.out_mlp_n = k.view<int32_t>(env, o.Get("outMlpN"), napi_int32_array, 1, "sparse.outMlpN");
        s.out_heads = k.view<uint8_t>(env, o.Get("outHeads"), napi_uint8_array, T * h->heads, "sparse.outHeads");
      }
      p.sparse = w->sparse.data();
    }
  } catch (...) {
    delete w;
    throw;
  }
  h->busy->store(true);
  Napi::Promise pr = w->promise();
  w->Queue();
  return pr;
}

void InitCuda(Napi::Env env, Napi::Object exports) {
  exports.Set("cudaModelCreate", Napi::Function::New(env, ModelCreate));
  exports.Set("cudaModelFree", Napi::Function::New(env, ModelFree));
  exports.Set("cudaModelInfo", Napi::Function::New(env, ModelInfo));
  exports.Set("cudaSessionCreate", Napi::Function::New(env, SessionCreate));
  exports.Set("cudaSessionFree", Napi::Function::New(env, SessionFree));
  exports.Set("cudaSessionReset", Napi::Function::New(env, SessionReset));
  exports.Set("cudaSessionLength", Napi::Function::New(env, SessionLength));
  exports.Set("cudaSessionForward", Napi::Function::New(env, SessionForward));
}

#endif  // POLAR_HAVE_CUDA

}  // namespace

POLAR_REGISTER(InitCuda);
