// Glue of the model forward (kernels/include/polar/model.h): handles for models and sessions, and the
// forward as an AsyncWorker that returns a Promise. Argument values are checked in TypeScript
// (src/runtime/model.ts); here only the JS types and buffer sizes are checked so that a wrong call can
// never reach the kernels with a bad pointer. No math here.
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "polar/model.h"
#include "model_request.h"
#include "registry.h"

namespace {

using polar_native::handle;
using polar_native::type_error;

constexpr uint32_t kModelTag = 0x4d4f444c;    // 'MODL'
constexpr uint32_t kSessionTag = 0x53455353;  // 'SESS'

struct ModelHandle {
  uint32_t tag = kModelTag;
  std::shared_ptr<polar_model> m;
};

struct SessionHandle {
  uint32_t tag = kSessionTag;
  std::shared_ptr<polar_session> s;
  std::shared_ptr<std::atomic<bool>> busy = std::make_shared<std::atomic<bool>>(false);
  int max_seqs = 0, layers = 0, hidden = 0, heads = 0, ffn = 0, vocab = 0;
};


ModelHandle* model_of(const Napi::Value& v) {
  ModelHandle* h = handle<ModelHandle>(v, kModelTag, "model");
  if (!h->m) throw Napi::Error::New(v.Env(), "model: the model was disposed");
  return h;
}

SessionHandle* session_of(const Napi::Value& v) {
  SessionHandle* h = handle<SessionHandle>(v, kSessionTag, "session");
  if (!h->s) throw Napi::Error::New(v.Env(), "session: the session was disposed");
  return h;
}


Napi::Value ModelCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  polar_native::ModelDescription md;
  polar_native::parse_model_description(env, info[0], info[1], "modelCreate", md);
  polar_model* m = polar_model_create(&md.config, md.weights.data(), (int)md.weights.size());
  if (!m) polar_native::throw_kernel_error(env, "modelCreate");
  auto* h = new ModelHandle();
  h->m = std::shared_ptr<polar_model>(m, polar_model_free);
  return Napi::External<ModelHandle>::New(env, h, [](Napi::Env, ModelHandle* p) { delete p; });
}

Napi::Value ModelFree(const Napi::CallbackInfo& info) {
  ModelHandle* h = handle<ModelHandle>(info[0], kModelTag, "model");
  h->m.reset();  // sessions and running forwards keep their own reference
  return info.Env().Undefined();
}

Napi::Value SessionCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ModelHandle* mh = model_of(info[0]);
  if (!info[1].IsNumber() || !info[2].IsNumber()) type_error(env, "sessionCreate(model, maxSeqs, maxLen): expected numbers");
  const int max_seqs = info[1].As<Napi::Number>().Int32Value(), max_len = info[2].As<Napi::Number>().Int32Value();
  polar_session* s = polar_session_create(mh->m.get(), max_seqs, max_len);
  if (!s) polar_native::throw_kernel_error(env, "sessionCreate");
  auto* h = new SessionHandle();
  std::shared_ptr<polar_model> keep = mh->m;
  h->s = std::shared_ptr<polar_session>(s, [keep](polar_session* p) { polar_session_free(p); });
  h->max_seqs = max_seqs;
  const polar_model_config& c = *polar_model_get_config(mh->m.get());
  h->layers = c.layers;
  h->hidden = c.hidden;
  h->heads = c.heads;
  h->ffn = c.ffn;
  h->vocab = c.vocab;
  return Napi::External<SessionHandle>::New(env, h, [](Napi::Env, SessionHandle* p) { delete p; });
}

Napi::Value SessionFree(const Napi::CallbackInfo& info) {
  SessionHandle* h = handle<SessionHandle>(info[0], kSessionTag, "session");
  h->s.reset();  // a running forward keeps its own reference
  return info.Env().Undefined();
}

Napi::Value SessionReset(const Napi::CallbackInfo& info) {
  SessionHandle* h = session_of(info[0]);
  if (h->busy->load()) throw Napi::Error::New(info.Env(), "session reset: a forward is running on this session");
  const int slot = info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value() : -1;
  if (polar_session_reset(h->s.get(), slot)) polar_native::throw_kernel_error(info.Env(), "sessionReset");
  return info.Env().Undefined();
}

Napi::Value SessionLength(const Napi::CallbackInfo& info) {
  SessionHandle* h = session_of(info[0]);
  return Napi::Number::New(info.Env(), polar_session_length(h->s.get(), info[1].As<Napi::Number>().Int32Value()));
}

// sessionForward(session, req) -> Promise<void>; outputs are written into req's typed arrays.
Napi::Value SessionForward(const Napi::CallbackInfo& info) {
  SessionHandle* h = session_of(info[0]);
  return polar_native::queue_forward<polar_session, polar_forward>(info.Env(), "sessionForward", "forward", h->s, h->busy, info[1],
                                                                   {h->layers, h->hidden, h->heads, h->ffn, h->vocab});
}

void InitModel(Napi::Env env, Napi::Object exports) {
  exports.Set("modelCreate", Napi::Function::New(env, ModelCreate));
  exports.Set("modelFree", Napi::Function::New(env, ModelFree));
  exports.Set("sessionCreate", Napi::Function::New(env, SessionCreate));
  exports.Set("sessionFree", Napi::Function::New(env, SessionFree));
  exports.Set("sessionReset", Napi::Function::New(env, SessionReset));
  exports.Set("sessionLength", Napi::Function::New(env, SessionLength));
  exports.Set("sessionForward", Napi::Function::New(env, SessionForward));
}

}  // namespace

POLAR_REGISTER(InitModel);
