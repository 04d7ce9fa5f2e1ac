// Module entry: runs every registered glue initialiser. No math here (DESIGN: native/ is glue only).
#include "registry.h"
#include "polar/common.h"

namespace polar_native {
std::vector<InitFn>& registry() {
  static std::vector<InitFn> fns;
  return fns;
}

void throw_kernel_error(Napi::Env env, const char* call) {
  const char* msg = polar_last_error();
  std::string s = std::string(call) + ": " + (msg && *msg ? msg : "unknown native error");
  throw Napi::Error::New(env, s);
}
}  // namespace polar_native

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  for (auto fn : polar_native::registry()) fn(env, exports);
  return exports;
}

NODE_API_MODULE(polar_native, Init)
