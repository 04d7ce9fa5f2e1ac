// Build and machine facts for `polar doctor`: CPU features the kernels were compiled for, threads, CUDA.
#include "registry.h"
#include "polar/common.h"

static Napi::Value BuildInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  Napi::Array feats = Napi::Array::New(env);
  uint32_t i = 0;
#ifdef __AVX2__
  feats.Set(i++, "avx2");
#endif
#ifdef __FMA__
  feats.Set(i++, "fma");
#endif
#ifdef __F16C__
  feats.Set(i++, "f16c");
#endif
#ifdef __AVX512F__
  feats.Set(i++, "avx512f");
#endif
#ifdef __AVX512BF16__
  feats.Set(i++, "avx512bf16");
#endif
#ifdef __ARM_NEON
  feats.Set(i++, "neon");
#endif
  o.Set("compiledFeatures", feats);
  o.Set("threads", Napi::Number::New(env, polar_cpu_threads()));
#ifdef POLAR_HAVE_CUDA
  o.Set("cudaBuilt", Napi::Boolean::New(env, true));
#else
  o.Set("cudaBuilt", Napi::Boolean::New(env, false));
#endif
  o.Set("compiler", Napi::String::New(env, __VERSION__));
  return o;
}

static Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  polar_set_cpu_threads(info[0].As<Napi::Number>().Int32Value());
  return Napi::Number::New(info.Env(), polar_cpu_threads());
}

static void InitInfo(Napi::Env env, Napi::Object exports) {
  exports.Set("buildInfo", Napi::Function::New(env, BuildInfo));
  exports.Set("setThreads", Napi::Function::New(env, SetThreads));
}
POLAR_REGISTER(InitInfo);
