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
#include "model_request.h"
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

using polar_native::handle;
using polar_native::type_error;

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


Napi::Value ModelCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  polar_native::ModelDescription md;
  polar_native::parse_model_description(env, info[0], info[1], "cudaModelCreate", md);
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
  polar_cuda_model* m = polar_cuda_model_create(&md.config, md.weights.data(), (int)md.weights.size(), &mo);
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

Napi::Value SessionForward(const Napi::CallbackInfo& info) {
  SessionHandle* h = session_of(info[0]);
  return polar_native::queue_forward<polar_cuda_session, polar_cuda_forward>(info.Env(), "cudaSessionForward", "cuda forward", h->s, h->busy,
                                                                             info[1], {h->layers, h->hidden, h->heads, h->ffn, h->vocab});
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
