// Checks the CPU GEMMs (polar_sgemm, polar_linear, polar_linear_t), the thread pool and the error API
// against naive double-precision references. Standalone: exits non-zero and prints what failed.
//
// Weights in fp16/bf16 are compared with a reference that uses the same rounded weights, so the bound
// only has to cover fp32 accumulation: |got - ref| <= (k + 8) * 2^-23 * sum|terms| (the classic bound
// of recursive summation; blocked summation does better), plus a small absolute floor.
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../cpu/threadpool.h"
#include "polar/common.h"
#include "polar/gemm.h"

namespace {

int g_failures = 0, g_checks = 0;
double g_worst = 0;  // worst error / bound seen

#define CHECK(cond, ...)                          \
  do {                                            \
    ++g_checks;                                   \
    if (!(cond)) {                                \
      ++g_failures;                               \
      std::printf("FAIL %s:%d: ", __FILE__, __LINE__); \
      std::printf(__VA_ARGS__);                   \
      std::printf("\n");                          \
    }                                             \
  } while (0)

std::mt19937_64 rng(12345);
float urand() { return std::uniform_real_distribution<float>(-1.f, 1.f)(rng); }
int irand(int n) { return int(std::uniform_int_distribution<int>(0, n - 1)(rng)); }

uint16_t f32_to_f16(float f) {  // round to nearest even, enough for test data in [-1, 1]
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000u;
  int32_t exp = int32_t((u >> 23) & 0xff) - 127 + 15;
  uint32_t man = u & 0x7fffffu;
  if (exp <= 0) {
    if (exp < -10) return uint16_t(sign);
    man |= 0x800000u;
    uint32_t shift = uint32_t(14 - exp);
    uint32_t h = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1))) ++h;
    return uint16_t(sign | h);
  }
  uint32_t h = (uint32_t(exp) << 10) | (man >> 13), rem = man & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) ++h;
  return uint16_t(sign | h);
}
float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ffu, u;
  if (exp == 0) {
    float f = std::ldexp(float(man), -24);
    return sign ? -f : f;
  }
  u = sign | ((exp + 112) << 23) | (man << 13);
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1);
  return uint16_t(u >> 16);
}
float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

const char* dtname(polar_dtype t) { return t == POLAR_F32 ? "f32" : t == POLAR_F16 ? "f16" : "bf16"; }

// A buffer of `n` values in dtype t, plus the fp32 values it represents (for the reference).
struct Typed {
  polar_dtype t;
  std::vector<float> f32;     // exact values
  std::vector<uint16_t> h16;  // storage when t != F32
  void fill(polar_dtype dt, size_t n) {
    t = dt;
    f32.resize(n);
    h16.resize(dt == POLAR_F32 ? 0 : n);
    for (size_t i = 0; i < n; ++i) {
      float v = urand();
      if (dt == POLAR_F16) { h16[i] = f32_to_f16(v); v = f16_to_f32(h16[i]); }
      if (dt == POLAR_BF16) { h16[i] = f32_to_bf16(v); v = bf16_to_f32(h16[i]); }
      f32[i] = v;
    }
  }
  const void* data() const { return t == POLAR_F32 ? (const void*)f32.data() : (const void*)h16.data(); }
};

std::vector<float> rand_vec(size_t n) {
  std::vector<float> v(n);
  for (auto& x : v) x = urand();
  return v;
}

// Compares got against ref (both [rows, cols] with their leading dimensions); mag holds sum|terms|.
bool compare(const char* what, const std::string& cfg, int rows, int cols, const float* got, int64_t ldg,
             const std::vector<double>& ref, const std::vector<double>& mag, int k) {
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) {
      const double g = got[i * ldg + j], r = ref[size_t(i) * cols + j];
      const double bound = (k + 8) * 1.1920929e-7 * mag[size_t(i) * cols + j] + 1e-30;
      const double err = std::fabs(g - r);
      if (!(err <= bound)) {  // also catches NaN
        ++g_checks;
        ++g_failures;
        std::printf("FAIL %s [%s] at (%d,%d): got %.9g want %.9g (err %.3g > bound %.3g)\n", what, cfg.c_str(), i, j,
                    g, r, err, bound);
        return false;
      }
      if (err / bound > g_worst) g_worst = err / bound;
    }
  ++g_checks;
  return true;
}

// Untouched padding between rows (ld > width) must stay as it was.
bool padding_intact(const char* what, const std::string& cfg, const std::vector<float>& buf,
                    const std::vector<float>& before, int rows, int cols, int64_t ld) {
  for (int i = 0; i < rows; ++i)
    for (int64_t j = cols; j < ld && i * ld + j < int64_t(buf.size()); ++j)
      if (std::memcmp(&buf[size_t(i * ld + j)], &before[size_t(i * ld + j)], 4) != 0) {
        ++g_failures;
        std::printf("FAIL %s [%s]: wrote padding at (%d,%lld)\n", what, cfg.c_str(), i, (long long)j);
        return false;
      }
  return true;
}

// ---- polar_sgemm --------------------------------------------------------------------------------------
void test_sgemm_case(int ta, int tb, int m, int n, int k, float alpha, float beta, int pad, int batch,
                     bool bcast_a, bool bcast_b, bool nan_c) {
  const int64_t lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
  const int64_t sa_size = (ta ? int64_t(k) : m) * lda, sb_size = (tb ? int64_t(n) : k) * ldb, sc_size = m * ldc;
  const int64_t stride_a = bcast_a ? 0 : sa_size + 5, stride_b = bcast_b ? 0 : sb_size + 3, stride_c = sc_size + 7;
  std::vector<float> A = rand_vec(size_t(stride_a * (batch - 1) + sa_size));
  std::vector<float> B = rand_vec(size_t(stride_b * (batch - 1) + sb_size));
  std::vector<float> C = rand_vec(size_t(stride_c * (batch - 1) + sc_size));
  if (nan_c)
    for (auto& x : C) x = NAN;
  const std::vector<float> C0 = C;
  polar_sgemm_params p{};
  p.trans_a = ta; p.trans_b = tb; p.m = m; p.n = n; p.k = k; p.alpha = alpha; p.beta = beta;
  p.a = A.data(); p.lda = lda; p.b = B.data(); p.ldb = ldb; p.c = C.data(); p.ldc = ldc;
  p.batch = batch; p.stride_a = stride_a; p.stride_b = stride_b; p.stride_c = stride_c;
  char cfg[256];
  std::snprintf(cfg, sizeof cfg, "ta=%d tb=%d m=%d n=%d k=%d alpha=%g beta=%g pad=%d batch=%d bcast=%d%d nanC=%d T=%d",
                ta, tb, m, n, k, alpha, beta, pad, batch, bcast_a, bcast_b, nan_c, polar_cpu_threads());
  const int rc = polar_sgemm(&p);
  CHECK(rc == 0, "polar_sgemm [%s] returned %d: %s", cfg, rc, polar_last_error());
  if (rc) return;
  for (int b = 0; b < batch; ++b) {
    const float* a = A.data() + b * stride_a;
    const float* bb = B.data() + b * stride_b;
    const float* c0 = C0.data() + b * stride_c;
    std::vector<double> ref(size_t(m) * n), mag(size_t(m) * n);
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) {
        double s = 0, sa = 0;
        for (int q = 0; q < k; ++q) {
          const double x = ta ? a[q * lda + i] : a[i * lda + q];
          const double y = tb ? bb[j * ldb + q] : bb[q * ldb + j];
          s += x * y;
          sa += std::fabs(x * y);
        }
        double r = alpha * s, mg = std::fabs(alpha) * sa;
        if (beta != 0) { r += beta * double(c0[i * ldc + j]); mg += std::fabs(beta * c0[i * ldc + j]); }
        ref[size_t(i) * n + j] = r;
        mag[size_t(i) * n + j] = mg;
      }
    if (!compare("polar_sgemm", cfg, m, n, C.data() + b * stride_c, ldc, ref, mag, k)) return;
  }
  std::vector<float> c_only(C.begin(), C.begin() + sc_size), c0_only(C0.begin(), C0.begin() + sc_size);
  padding_intact("polar_sgemm", cfg, c_only, c0_only, m, n, ldc);
}

// batch with stride_c = 0: the products apply one after the other to the same C.
void test_sgemm_shared_c() {
  const int m = 13, n = 21, k = 19, batch = 4;
  std::vector<float> A = rand_vec(size_t(batch * m * k)), B = rand_vec(size_t(batch * k * n)), C = rand_vec(size_t(m * n));
  std::vector<double> ref(C.begin(), C.end()), mag(size_t(m * n));
  for (auto& x : mag) x = 0;
  for (int b = 0; b < batch; ++b)
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) {
        double s = 0;
        for (int q = 0; q < k; ++q) {
          s += double(A[b * m * k + i * k + q]) * B[b * k * n + q * n + j];
          mag[i * n + j] += std::fabs(double(A[b * m * k + i * k + q]) * B[b * k * n + q * n + j]);
        }
        ref[i * n + j] = 0.5 * s + ref[i * n + j];
        mag[i * n + j] += std::fabs(ref[i * n + j]);
      }
  polar_sgemm_params p{};
  p.m = m; p.n = n; p.k = k; p.alpha = 0.5f; p.beta = 1.f;
  p.a = A.data(); p.lda = k; p.b = B.data(); p.ldb = n; p.c = C.data(); p.ldc = n;
  p.batch = batch; p.stride_a = m * k; p.stride_b = k * n; p.stride_c = 0;
  CHECK(polar_sgemm(&p) == 0, "shared-C batch: %s", polar_last_error());
  compare("polar_sgemm", "batch=4 stride_c=0 beta=1", m, n, C.data(), n, ref, mag, k * batch);
}

void test_sgemm() {
  const int dims[] = {1, 3, 17, 65, 129};
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb)
      for (int m : dims)
        for (int n : dims)
          for (int k : dims) {
            const int v = irand(4);
            const float alpha = v == 0 ? 1.f : v == 1 ? -0.75f : v == 2 ? 1.f : 2.f;
            const float beta = v == 0 ? 0.f : v == 1 ? 0.5f : v == 2 ? 1.f : -1.f;
            test_sgemm_case(ta, tb, m, n, k, alpha, beta, irand(2) * 3, 1, false, false, beta == 0.f);
          }
  // Larger products: K split into several blocks, many tiles, all threads, edge tiles in both directions.
  const int big[][3] = {{300, 700, 600}, {129, 1030, 517}, {520, 96, 300}, {64, 1024, 256}, {257, 33, 1000}};
  for (auto& s : big)
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb) test_sgemm_case(ta, tb, s[0], s[1], s[2], 1.f, irand(2) ? 0.f : 0.25f, 5, 1, false, false, false);
  // Few columns, many rows (transposed internally); few rows (unpacked forms).
  for (int n : {1, 2, 3, 4})
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb) test_sgemm_case(ta, tb, 200, n, 77, 1.5f, 0.5f, 2, 1, false, false, false);
  for (int m : {1, 2, 5, 8, 12, 16})
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb) test_sgemm_case(ta, tb, m, 1000, 300, 1.f, 0.f, 1, 1, false, false, true);
  // Batches: strided, broadcast A or B, many small products (run side by side).
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      test_sgemm_case(ta, tb, 17, 33, 65, 1.f, 0.f, 1, 3, false, false, false);
      test_sgemm_case(ta, tb, 17, 33, 65, 1.f, 0.5f, 0, 3, true, false, false);
      test_sgemm_case(ta, tb, 17, 33, 65, -1.f, 1.f, 2, 3, false, true, false);
      test_sgemm_case(ta, tb, 40, 40, 40, 1.f, 0.f, 0, 32, false, false, true);
      test_sgemm_case(ta, tb, 3, 40, 40, 1.f, 0.f, 0, 32, false, false, false);
    }
  test_sgemm_shared_c();
  // k = 0 and alpha = 0: C = beta * C, A and B never read.
  for (float beta : {0.f, 0.5f}) {
    std::vector<float> C = rand_vec(6 * 5), C0 = C;
    polar_sgemm_params p{};
    p.m = 6; p.n = 5; p.k = 0; p.alpha = 1.f; p.beta = beta; p.c = C.data(); p.ldc = 5; p.batch = 1;
    CHECK(polar_sgemm(&p) == 0, "k=0: %s", polar_last_error());
    bool ok = true;
    for (size_t i = 0; i < C.size(); ++i) ok &= C[i] == beta * C0[i];
    CHECK(ok, "k=0 beta=%g: C != beta*C", beta);
    p.k = 4; p.alpha = 0.f; p.lda = 4; p.ldb = 5;
    C = C0;
    CHECK(polar_sgemm(&p) == 0, "alpha=0: %s", polar_last_error());
    ok = true;
    for (size_t i = 0; i < C.size(); ++i) ok &= C[i] == beta * C0[i];
    CHECK(ok, "alpha=0 beta=%g: C != beta*C", beta);
  }
}

// ---- polar_linear -------------------------------------------------------------------------------------
void test_linear_case(int m, int n, int k, polar_dtype wdt, bool gather, int bias_dt, int act, int accumulate,
                      int pad) {
  const int wrows = gather ? n + 37 : n;
  const int64_t ldx = k + pad, ldw = k + pad * 2, ldy = n + pad;
  std::vector<float> X = rand_vec(size_t(m * ldx));
  Typed W;
  W.fill(wdt, size_t(wrows * ldw));
  std::vector<int32_t> rows;
  if (gather)
    for (int j = 0; j < n; ++j) rows.push_back(irand(wrows));  // duplicates allowed
  Typed Bias;
  if (bias_dt >= 0) Bias.fill(polar_dtype(bias_dt), size_t(wrows));
  std::vector<float> Y = rand_vec(size_t(m * ldy));
  if (!accumulate)
    for (auto& x : Y) x = NAN;  // must not be read
  const std::vector<float> Y0 = Y;
  polar_linear_params p{};
  p.m = m; p.n = n; p.k = k; p.x = X.data(); p.ldx = ldx; p.w = W.data(); p.wdt = wdt; p.ldw = ldw;
  p.rows = gather ? rows.data() : nullptr;
  p.bias = bias_dt >= 0 ? Bias.data() : nullptr;
  p.bdt = bias_dt >= 0 ? polar_dtype(bias_dt) : POLAR_F32;
  p.y = Y.data(); p.ldy = ldy; p.accumulate = accumulate; p.act = act;
  char cfg[256];
  std::snprintf(cfg, sizeof cfg, "m=%d n=%d k=%d w=%s gather=%d bias=%s act=%d acc=%d pad=%d T=%d", m, n, k,
                dtname(wdt), gather, bias_dt < 0 ? "none" : dtname(polar_dtype(bias_dt)), act, accumulate, pad,
                polar_cpu_threads());
  const int rc = polar_linear(&p);
  CHECK(rc == 0, "polar_linear [%s] returned %d: %s", cfg, rc, polar_last_error());
  if (rc) return;
  std::vector<double> ref(size_t(m) * n), mag(size_t(m) * n);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      const int r = gather ? rows[j] : j;
      double s = 0, sa = 0;
      for (int q = 0; q < k; ++q) {
        const double t = double(X[i * ldx + q]) * W.f32[size_t(r * ldw + q)];
        s += t;
        sa += std::fabs(t);
      }
      if (bias_dt >= 0) { s += Bias.f32[size_t(r)]; sa += std::fabs(Bias.f32[size_t(r)]); }
      if (act) s = s > 0 ? s : 0;
      if (accumulate) { s += Y0[i * ldy + j]; sa += std::fabs(Y0[i * ldy + j]); }
      ref[size_t(i) * n + j] = s;
      mag[size_t(i) * n + j] = sa;
    }
  if (compare("polar_linear", cfg, m, n, Y.data(), ldy, ref, mag, k)) padding_intact("polar_linear", cfg, Y, Y0, m, n, ldy);
}

// ---- polar_linear_t -----------------------------------------------------------------------------------
void test_linear_t_case(int m, int n, int k, polar_dtype wdt, bool gather, int bias_dt, int accumulate, int pad) {
  const int ktotal = gather ? k + 41 : k;
  const int64_t ldx = k + pad, ldw = n + pad * 2, ldy = n + pad;
  std::vector<float> X = rand_vec(size_t(m * ldx));
  Typed W;
  W.fill(wdt, size_t(ktotal * ldw));
  std::vector<int32_t> rows;
  if (gather)
    for (int q = 0; q < k; ++q) rows.push_back(irand(ktotal));
  Typed Bias;
  if (bias_dt >= 0) Bias.fill(polar_dtype(bias_dt), size_t(n));
  std::vector<float> Y = rand_vec(size_t(m * ldy));
  if (!accumulate)
    for (auto& x : Y) x = NAN;
  const std::vector<float> Y0 = Y;
  polar_linear_t_params p{};
  p.m = m; p.n = n; p.k = k; p.x = X.data(); p.ldx = ldx; p.w = W.data(); p.wdt = wdt; p.ldw = ldw;
  p.rows = gather ? rows.data() : nullptr;
  p.bias = bias_dt >= 0 ? Bias.data() : nullptr;
  p.bdt = bias_dt >= 0 ? polar_dtype(bias_dt) : POLAR_F32;
  p.y = Y.data(); p.ldy = ldy; p.accumulate = accumulate;
  char cfg[256];
  std::snprintf(cfg, sizeof cfg, "m=%d n=%d k=%d w=%s gather=%d bias=%s acc=%d pad=%d T=%d", m, n, k, dtname(wdt),
                gather, bias_dt < 0 ? "none" : dtname(polar_dtype(bias_dt)), accumulate, pad, polar_cpu_threads());
  const int rc = polar_linear_t(&p);
  CHECK(rc == 0, "polar_linear_t [%s] returned %d: %s", cfg, rc, polar_last_error());
  if (rc) return;
  std::vector<double> ref(size_t(m) * n), mag(size_t(m) * n);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      double s = 0, sa = 0;
      for (int q = 0; q < k; ++q) {
        const int r = gather ? rows[q] : q;
        const double t = double(X[i * ldx + q]) * W.f32[size_t(r * ldw + j)];
        s += t;
        sa += std::fabs(t);
      }
      if (bias_dt >= 0) { s += Bias.f32[size_t(j)]; sa += std::fabs(Bias.f32[size_t(j)]); }
      if (accumulate) { s += Y0[i * ldy + j]; sa += std::fabs(Y0[i * ldy + j]); }
      ref[size_t(i) * n + j] = s;
      mag[size_t(i) * n + j] = sa;
    }
  if (compare("polar_linear_t", cfg, m, n, Y.data(), ldy, ref, mag, k))
    padding_intact("polar_linear_t", cfg, Y, Y0, m, n, ldy);
}

void test_linear() {
  const int ms[] = {1, 2, 3, 5, 8, 9, 17, 65};
  const int ns[] = {1, 3, 17, 33, 65, 129};
  const int ks[] = {1, 3, 17, 65, 129, 300};
  const polar_dtype dts[] = {POLAR_F32, POLAR_F16, POLAR_BF16};
  // Every dtype x gather x act x accumulate on a spread of shapes; bias dtype and padding vary.
  for (polar_dtype wdt : dts)
    for (int gather = 0; gather < 2; ++gather)
      for (int act = 0; act < 2; ++act)
        for (int acc = 0; acc < 2; ++acc)
          for (int m : ms) {
            const int n = ns[irand(6)], k = ks[irand(6)];
            const int bias = irand(4) - 1;
            test_linear_case(m, n, k, wdt, gather, bias, act, acc, irand(3) * 2);
            test_linear_t_case(m, n, k, wdt, gather, bias, acc, irand(3) * 2);
          }
  // Full shape grid for one flag set per dtype.
  for (polar_dtype wdt : dts)
    for (int m : ms)
      for (int n : ns)
        for (int k : ks) {
          test_linear_case(m, n, k, wdt, true, int(wdt), 1, 1, 1);
          test_linear_t_case(m, n, k, wdt, true, int(wdt), 1, 1);
        }
  // Model-like sizes: K split into blocks (ReLU + accumulate goes through a temporary), many tiles.
  for (polar_dtype wdt : dts) {
    test_linear_case(64, 520, 700, wdt, true, 0, 1, 1, 0);
    test_linear_case(130, 257, 300, wdt, false, 1, 1, 0, 3);
    test_linear_case(4, 1000, 1030, wdt, true, 2, 1, 1, 0);
    test_linear_t_case(64, 520, 700, wdt, true, 0, 1, 0);
    test_linear_t_case(3, 1000, 2000, wdt, true, 2, 0, 2);
    test_linear_t_case(16, 300, 1030, wdt, true, -1, 1, 0);
  }
  // k = 0: Y = act(bias) (+ Y).
  {
    std::vector<float> Y = rand_vec(3 * 4), Y0 = Y, bias = {-1.f, 2.f, 0.5f, -0.25f};
    polar_linear_params p{};
    p.m = 3; p.n = 4; p.k = 0; p.bias = bias.data(); p.bdt = POLAR_F32; p.y = Y.data(); p.ldy = 4;
    p.accumulate = 1; p.act = 1;
    CHECK(polar_linear(&p) == 0, "linear k=0: %s", polar_last_error());
    bool ok = true;
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 4; ++j) ok &= Y[i * 4 + j] == Y0[i * 4 + j] + (bias[j] > 0 ? bias[j] : 0.f);
    CHECK(ok, "linear k=0: Y != relu(bias) + Y");
  }
}

// ---- thread pool --------------------------------------------------------------------------------------
void test_pool() {
  for (int64_t n : {0, 1, 2, 7, 100, 12345})
    for (int64_t grain : {1, 3, 1000}) {
      std::vector<std::atomic<int>> hits(size_t(n > 0 ? n : 1));
      for (auto& h : hits) h = 0;
      std::atomic<bool> bad{false};
      polar_parallel_for(n, [&](int64_t b, int64_t e) {
        if (b < 0 || e > n || b >= e) bad = true;
        if (e - b < grain && e != n) bad = true;
        for (int64_t i = b; i < e; ++i) hits[size_t(i)]++;
      }, grain);
      bool once = !bad;
      for (int64_t i = 0; i < n; ++i) once &= hits[size_t(i)] == 1;
      CHECK(once, "polar_parallel_for n=%lld grain=%lld: ranges do not cover [0,n) exactly once", (long long)n,
            (long long)grain);
    }
  // Nested calls run inline and still cover everything.
  std::atomic<int64_t> sum{0};
  polar_parallel_for(8, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      polar_parallel_for(100, [&](int64_t b2, int64_t e2) {
        for (int64_t j = b2; j < e2; ++j) sum += j;
      });
  });
  CHECK(sum == 8 * 4950, "nested polar_parallel_for: sum %lld", (long long)sum.load());
  // Concurrent callers (several AsyncWorkers at once).
  std::atomic<int64_t> total{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t)
    callers.emplace_back([&] {
      for (int r = 0; r < 200; ++r)
        polar_parallel_for(64, [&](int64_t b, int64_t e) { total += e - b; });
    });
  for (auto& c : callers) c.join();
  CHECK(total == 4 * 200 * 64, "concurrent polar_parallel_for: covered %lld of %d", (long long)total.load(), 4 * 200 * 64);
  // Exceptions come back to the caller; the pool keeps working.
  bool caught = false;
  try {
    polar_parallel_for(64, [&](int64_t b, int64_t) {
      if (b == 0) throw std::runtime_error("boom");
    });
  } catch (const std::runtime_error&) {
    caught = true;
  }
  CHECK(caught, "exception from polar_parallel_for body was not rethrown");
  std::atomic<int64_t> after{0};
  polar_parallel_for(1000, [&](int64_t b, int64_t e) { after += e - b; });
  CHECK(after == 1000, "pool after exception covered %lld", (long long)after.load());
  // Concurrent GEMMs from several threads give the same results as alone.
  std::vector<std::thread> gemms;
  std::atomic<int> gemm_fail{0};
  const int m = 96, n = 160, k = 200;
  std::vector<float> A = rand_vec(m * k), B = rand_vec(k * n), Cref(m * n);
  polar_sgemm_params p{};
  p.m = m; p.n = n; p.k = k; p.alpha = 1; p.beta = 0; p.a = A.data(); p.lda = k; p.b = B.data(); p.ldb = n;
  p.c = Cref.data(); p.ldc = n; p.batch = 1;
  polar_sgemm(&p);
  for (int t = 0; t < 3; ++t)
    gemms.emplace_back([&, p]() mutable {
      std::vector<float> C(m * n);
      p.c = C.data();
      for (int r = 0; r < 20; ++r) {
        if (polar_sgemm(&p) != 0 || std::memcmp(C.data(), Cref.data(), C.size() * 4) != 0) gemm_fail++;
      }
    });
  for (auto& g : gemms) g.join();
  CHECK(gemm_fail == 0, "concurrent polar_sgemm differed from a lone call %d times", gemm_fail.load());
}

// ---- errors -------------------------------------------------------------------------------------------
void test_errors() {
  CHECK(polar_set_error("x=%d %s", 42, "abc") != 0, "polar_set_error must return non-zero");
  CHECK(std::strcmp(polar_last_error(), "x=42 abc") == 0, "polar_last_error: '%s'", polar_last_error());
  std::string other;
  std::thread([&] { other = polar_last_error(); }).join();
  CHECK(other.empty(), "polar_last_error is not thread-local: '%s'", other.c_str());

  float buf[16] = {};
  polar_sgemm_params s{};
  s.m = -1; s.n = 2; s.k = 2; s.batch = 1; s.a = buf; s.b = buf; s.c = buf; s.lda = s.ldb = s.ldc = 2; s.alpha = 1;
  CHECK(polar_sgemm(&s) != 0 && std::strstr(polar_last_error(), "m=-1"), "sgemm m<0: '%s'", polar_last_error());
  s.m = 2; s.lda = 1;
  CHECK(polar_sgemm(&s) != 0 && std::strstr(polar_last_error(), "lda"), "sgemm small lda: '%s'", polar_last_error());
  s.lda = 2; s.batch = 0;
  CHECK(polar_sgemm(&s) != 0 && std::strstr(polar_last_error(), "batch"), "sgemm batch 0: '%s'", polar_last_error());
  s.batch = 1; s.c = nullptr;
  CHECK(polar_sgemm(&s) != 0, "sgemm c NULL accepted");
  CHECK(polar_sgemm(nullptr) != 0, "sgemm NULL params accepted");

  polar_linear_params l{};
  l.m = 1; l.n = 2; l.k = 2; l.x = buf; l.ldx = 2; l.w = buf; l.ldw = 2; l.y = buf; l.ldy = 2;
  l.wdt = polar_dtype(7);
  CHECK(polar_linear(&l) != 0 && std::strstr(polar_last_error(), "wdt"), "linear bad dtype: '%s'", polar_last_error());
  l.wdt = POLAR_F16; l.act = 3;
  CHECK(polar_linear(&l) != 0 && std::strstr(polar_last_error(), "act"), "linear bad act: '%s'", polar_last_error());
  l.act = 0; l.ldw = 1;
  CHECK(polar_linear(&l) != 0 && std::strstr(polar_last_error(), "ldw"), "linear small ldw: '%s'", polar_last_error());
  polar_linear_t_params t{};
  t.m = 1; t.n = 4; t.k = 2; t.x = buf; t.ldx = 2; t.w = buf; t.wdt = POLAR_F32; t.ldw = 3; t.y = buf; t.ldy = 4;
  CHECK(polar_linear_t(&t) != 0 && std::strstr(polar_last_error(), "ldw"), "linear_t small ldw: '%s'", polar_last_error());
  t.ldw = 4; t.x = nullptr;
  CHECK(polar_linear_t(&t) != 0, "linear_t x NULL accepted");

  std::vector<float> big(3 << 20);
  CHECK(polar_advise_hugepages(big.data(), big.size() * 4) == 0, "polar_advise_hugepages: %s", polar_last_error());
  CHECK(polar_advise_hugepages(nullptr, 0) == 0, "polar_advise_hugepages(NULL, 0) failed");
}

}  // namespace

int main(int argc, char** argv) {
  const int hw = polar_cpu_threads();
  std::printf("cpu_gemm_test: default threads %d\n", hw);
  test_errors();
  for (int threads : {1, 2, 3}) {
    polar_set_cpu_threads(threads);
    CHECK(polar_cpu_threads() == threads, "polar_set_cpu_threads(%d) -> %d", threads, polar_cpu_threads());
    test_pool();
    test_sgemm();
    test_linear();
    std::printf("threads=%d: %d checks, %d failures so far, worst error/bound %.3f\n", threads, g_checks, g_failures,
                g_worst);
  }
  polar_set_cpu_threads(0);
  CHECK(polar_cpu_threads() == hw, "polar_set_cpu_threads(0) did not restore the default (%d)", polar_cpu_threads());
  if (g_failures) {
    std::printf("cpu_gemm_test: %d of %d checks FAILED\n", g_failures, g_checks);
    return 1;
  }
  std::printf("cpu_gemm_test: all %d checks passed\n", g_checks);
  return 0;
}
