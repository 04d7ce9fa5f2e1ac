// What the CPU and CUDA model glues share: JS-type checks, typed-array views kept alive across an async
// call, and the parsing of a model description and of a forward request (the object built by
// src/runtime/model.ts). Values are checked in TypeScript; here only JS types and buffer sizes, so that a
// wrong call never reaches the kernels with a bad pointer.
#pragma once
#include <napi.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "polar/model.h"

namespace polar_native {

[[noreturn]] void type_error(Napi::Env env, const std::string& msg);
double num(const Napi::Object& o, const char* k);
inline int inum(const Napi::Object& o, const char* k) { return (int)num(o, k); }

template <class H>
H* handle(const Napi::Value& v, uint32_t tag, const char* what) {
  if (!v.IsExternal()) type_error(v.Env(), std::string(what) + ": expected a native handle");
  H* h = v.As<Napi::External<H>>().Data();
  if (!h || h->tag != tag) type_error(v.Env(), std::string(what) + ": expected a native handle of the right kind");
  return h;
}

// Typed-array views with their JS objects kept alive for the duration of an async call.
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
      type_error(env, std::string(what) + ": expected at least " + std::to_string(want) + " elements, received " +
                          std::to_string(ta.ElementLength()));
    refs_.push_back(Napi::Persistent(v.As<Napi::Object>()));
    uint8_t* base = (uint8_t*)ta.ArrayBuffer().Data();
    return (T*)(base + ta.ByteOffset());
  }

 private:
  std::vector<Napi::ObjectReference> refs_;
};

// modelCreate(config, weights): the config and the weight descriptors; names/files own the strings
// that the descriptors point to.
struct ModelDescription {
  polar_model_config config{};
  std::vector<std::string> names, files;
  std::vector<polar_weight_desc> weights;
};
void parse_model_description(Napi::Env env, const Napi::Value& config, const Napi::Value& weights, const char* call, ModelDescription& out);

struct ForwardDims {
  int layers = 0, hidden = 0, heads = 0, ffn = 0, vocab = 0;
};

// One forward call's parameters, with the JS buffers they point into kept alive.
struct ForwardRequest {
  Keep keep;
  polar_forward_params p{};
  std::vector<polar_layer_capture> caps;
  std::vector<polar_sparse_layer> sparse;
};
void parse_forward_request(Napi::Env env, const Napi::Object& r, const ForwardDims& d, ForwardRequest& out);

// A forward call off the JS thread, for either backend (Fwd = polar_forward or polar_cuda_forward). The
// session's busy flag refuses a second call while one runs; the worker keeps the session alive.
template <class S, int (*Fwd)(S*, const polar_forward_params*)>
class ForwardWorker : public Napi::AsyncWorker {
 public:
  ForwardWorker(Napi::Env env, const char* label, std::shared_ptr<S> s, std::shared_ptr<std::atomic<bool>> busy)
      : Napi::AsyncWorker(env, label), label_(label), deferred_(Napi::Promise::Deferred::New(env)), s_(std::move(s)), busy_(std::move(busy)) {}
  ForwardRequest req;

  void Execute() override {
    try {
      if (Fwd(s_.get(), &req.p)) SetError(label_ + ": " + polar_last_error());
    } catch (const std::exception& e) {
      SetError(label_ + ": " + e.what());
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
  Napi::Promise promise() { return deferred_.Promise(); }

 private:
  std::string label_;
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<S> s_;
  std::shared_ptr<std::atomic<bool>> busy_;
};

// <call>(session, req) -> Promise<void>; outputs are written into req's typed arrays.
template <class S, int (*Fwd)(S*, const polar_forward_params*)>
Napi::Value queue_forward(Napi::Env env, const char* call, const char* label, const std::shared_ptr<S>& s,
                          const std::shared_ptr<std::atomic<bool>>& busy, const Napi::Value& req, const ForwardDims& d) {
  if (!req.IsObject()) type_error(env, std::string(call) + "(session, req): expected an object");
  if (busy->load()) throw Napi::Error::New(env, "forward: a forward is already running on this session (await it first)");
  auto* w = new ForwardWorker<S, Fwd>(env, label, s, busy);
  try {
    parse_forward_request(env, req.As<Napi::Object>(), d, w->req);
  } catch (...) {
    delete w;
    throw;
  }
  busy->store(true);
  Napi::Promise pr = w->promise();
  w->Queue();
  return pr;
}

}  // namespace polar_native
