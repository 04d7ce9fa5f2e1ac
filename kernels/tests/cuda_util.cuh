// Helpers shared by the CUDA test and benchmark executables (host side): device buffers, a seeded RNG,
// host fp16/bf16 conversion, a parallel-for for the CPU references.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "polar/cuda.h"

#define CK(call)                                                                                       \
  do {                                                                                                 \
    cudaError_t e_ = (call);                                                                           \
    if (e_ != cudaSuccess) {                                                                           \
      std::fprintf(stderr, "FATAL: %s failed: %s (%s:%d)\n", #call, cudaGetErrorString(e_), __FILE__, __LINE__); \
      std::exit(2);                                                                                    \
    }                                                                                                  \
  } while (0)
#define PK(call)                                                                                        \
  do {                                                                                                  \
    if ((call) != 0) {                                                                                  \
      std::fprintf(stderr, "FATAL: %s failed: %s (%s:%d)\n", #call, polar_last_error(), __FILE__, __LINE__); \
      std::exit(2);                                                                                     \
    }                                                                                                   \
  } while (0)

namespace tu {

struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 0x1234567ull) {}
  uint64_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
  double uni() { return (next() >> 11) * (1.0 / 9007199254740992.0); }
  double normal() {
    double u1 = std::max(uni(), 1e-300), u2 = uni();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
  int below(int n) { return (int)(next() % (uint64_t)n); }
};

// Host storage of 16-bit values with the dtype's rounding.
inline uint16_t to_bits(float f, polar_dtype dt) {
  if (dt == POLAR_F16) {
    __half h = __float2half_rn(f);
    uint16_t u;
    std::memcpy(&u, &h, 2);
    return u;
  }
  __nv_bfloat16 h = __float2bfloat16_rn(f);
  uint16_t u;
  std::memcpy(&u, &h, 2);
  return u;
}
inline float from_bits(uint16_t u, polar_dtype dt) {
  if (dt == POLAR_F16) {
    __half h;
    std::memcpy(&h, &u, 2);
    return __half2float(h);
  }
  __nv_bfloat16 h;
  std::memcpy(&h, &u, 2);
  return __bfloat162float(h);
}
inline float round_t(float f, polar_dtype dt) { return from_bits(to_bits(f, dt), dt); }

// A tensor kept on host (as the rounded float values) and device (16-bit).
struct T16 {
  polar_dtype dt;
  std::vector<float> h;  // values exactly representable in dt
  void* d = nullptr;
  size_t n = 0;
  T16(polar_dtype dt_, size_t n_) : dt(dt_), h(n_), n(n_) { CK(cudaMalloc(&d, std::max<size_t>(n, 1) * 2)); }
  ~T16() { cudaFree(d); }
  T16(const T16&) = delete;
  T16& operator=(const T16&) = delete;
  void fill_normal(Rng& r, double scale) {
    for (auto& v : h) v = round_t((float)(r.normal() * scale), dt);
  }
  void upload() {
    std::vector<uint16_t> b(n);
    for (size_t i = 0; i < n; ++i) b[i] = to_bits(h[i], dt);
    CK(cudaMemcpy(d, b.data(), n * 2, cudaMemcpyHostToDevice));
  }
  void poison() { CK(cudaMemset(d, 0xFF, n * 2)); }  // NaN in fp16 and bf16
  std::vector<float> download() const {
    std::vector<uint16_t> b(n);
    CK(cudaMemcpy(b.data(), d, n * 2, cudaMemcpyDeviceToHost));
    std::vector<float> o(n);
    for (size_t i = 0; i < n; ++i) o[i] = from_bits(b[i], dt);
    return o;
  }
};

struct DBuf {
  void* d = nullptr;
  size_t bytes = 0;
  explicit DBuf(size_t b) : bytes(b) {
    if (b) {
      CK(cudaMalloc(&d, b));
      CK(cudaMemset(d, 0, b));
    }
  }
  ~DBuf() { cudaFree(d); }
  DBuf(const DBuf&) = delete;
  DBuf& operator=(const DBuf&) = delete;
};

template <typename F>
void parallel_for(int n, F&& f) {
  int nt = (int)std::thread::hardware_concurrency();
  nt = std::max(1, std::min(nt, 32));
  if (n < 2 * nt) nt = 1;
  if (nt == 1) {
    for (int i = 0; i < n; ++i) f(i);
    return;
  }
  std::vector<std::thread> th;
  for (int t = 0; t < nt; ++t)
    th.emplace_back([&, t] {
      for (int i = t; i < n; i += nt) f(i);
    });
  for (auto& x : th) x.join();
}

// Changes the tuning fields that f sets (polar_cuda_set_tuning keeps every field f leaves out of range).
template <typename F>
inline void set_tuning(F f) {
  polar_cuda_tuning t = polar_cuda_tuning_unchanged();
  f(t);
  polar_cuda_set_tuning(&t);
}

inline const char* dtname(polar_dtype dt) { return dt == POLAR_F16 ? "f16" : "bf16"; }

}  // namespace tu
