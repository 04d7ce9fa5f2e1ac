// Each glue file registers its exports with POLAR_REGISTER(fn); addon.cc calls them all at load.
// This keeps the glue files independent of each other (model, tensor ops, info, CUDA).
#pragma once
#include <napi.h>
#include <string>
#include <vector>

namespace polar_native {
using InitFn = void (*)(Napi::Env, Napi::Object);
std::vector<InitFn>& registry();
struct Registrar {
  explicit Registrar(InitFn fn) { registry().push_back(fn); }
};

// Throws a JS Error carrying the kernels' last error message, prefixed with the call that failed.
[[noreturn]] void throw_kernel_error(Napi::Env env, const char* call);
}  // namespace polar_native

#define POLAR_REGISTER_CAT2(a, b) a##b
#define POLAR_REGISTER_CAT(a, b) POLAR_REGISTER_CAT2(a, b)
#define POLAR_REGISTER(fn) static ::polar_native::Registrar POLAR_REGISTER_CAT(polar_registrar_, __LINE__)(fn)
