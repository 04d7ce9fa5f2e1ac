// Correctness of the CUDA kernels (kernels/cuda) against CPU references, over a grid of shapes and every
// launch path (mma.sync / wgmma, split-K or not), fp16 and bf16.
//
// Error bound (flash-attention tests' style): with ref = the math in double on the same 16-bit inputs and
// naive = a straightforward same-precision implementation (fp32 accumulation, every stored intermediate
// rounded to the dtype), a kernel passes when max|out - ref| <= 2 * max|naive - ref| + atol (atol tiny).
// Outputs are poisoned (NaN) before every launch, inputs are fresh random values for every check.
//
// usage: cuda_kernels_test [--quick]      (--quick: the small part of the grid, for compute-sanitizer)
// Prints one line per check and "N passed, M failed" last; exit status 1 on any failure.
#include <map>
#include <set>
#include <string>

#include "cuda_util.cuh"

using namespace tu;

static int g_pass = 0, g_fail = 0;
static bool g_quick = false;
static bool g_wgmma = false;

static void report(bool ok, const std::string& what, double err, double bound) {
  (ok ? g_pass : g_fail)++;
  std::printf("%s %s err=%.3g bound=%.3g\n", ok ? "PASS" : "FAIL", what.c_str(), err, bound);
  std::fflush(stdout);
}

// Every call leaves its workspace zero-filled (the API's contract): count the nonzero bytes (none when it has none).
static void report_ws_zeroed(const DBuf& ws, const std::string& tag) {
  if (!ws.bytes) return;
  std::vector<unsigned char> wb(ws.bytes);
  CK(cudaMemcpy(wb.data(), ws.d, wb.size(), cudaMemcpyDeviceToHost));
  size_t nz = 0;
  for (unsigned char v : wb) nz += v != 0;
  report(nz == 0, "workspace-zeroed " + tag, (double)nz, 0);
}

struct ErrStat {
  double k = 0, n = 0, refmax = 0;
  bool nan = false;
  void add(double out, double naive, double ref) {
    if (!std::isfinite(out)) nan = true;
    k = std::max(k, std::fabs(out - ref));
    n = std::max(n, std::fabs(naive - ref));
    refmax = std::max(refmax, std::fabs(ref));
  }
  double bound() const { return 2.0 * n + 1e-5 * (refmax + 1e-3); }
  bool ok() const { return !nan && k <= bound(); }
};

static std::vector<int32_t> rand_subset(Rng& r, int n, int k, bool sorted) {
  std::vector<int32_t> p(n);
  for (int i = 0; i < n; ++i) p[i] = i;
  for (int i = 0; i < k; ++i) std::swap(p[i], p[i + r.below(n - i)]);
  p.resize(k);
  if (sorted) std::sort(p.begin(), p.end());
  return p;
}

// ---- selective MLP ----------------------------------------------------------------------------------
struct MlpCase {
  int m, d, ffn, k;
};

static void test_mlp(polar_dtype dt, const MlpCase& c, int impl, int splits, bool bias, bool sorted, bool dense_idx, uint64_t seed) {
  Rng r(seed);
  const int m = c.m, d = c.d, ffn = c.ffn, k = c.k;
  T16 x(dt, (size_t)m * d), w1(dt, (size_t)ffn * d), b1(dt, ffn), w2t(dt, (size_t)ffn * d), b2(dt, d);
  T16 h(dt, (size_t)m * k), y(dt, (size_t)m * d), hin(dt, (size_t)m * k), y2(dt, (size_t)m * d);
  x.fill_normal(r, 1.0);
  w1.fill_normal(r, 1.0 / std::sqrt((double)d));
  b1.fill_normal(r, 0.1);
  w2t.fill_normal(r, 1.0 / std::sqrt((double)k));
  b2.fill_normal(r, 0.1);
  hin.fill_normal(r, 1.0);
  y2.fill_normal(r, 1.0);  // accumulate target
  for (T16* t : {&x, &w1, &b1, &w2t, &b2, &hin, &y2}) t->upload();
  std::vector<int32_t> idx = dense_idx ? rand_subset(r, k, k, true) : rand_subset(r, ffn, k, sorted);
  if (dense_idx)
    for (int i = 0; i < k; ++i) idx[i] = i;
  DBuf didx(k * 4);
  CK(cudaMemcpy(didx.d, idx.data(), k * 4, cudaMemcpyHostToDevice));

  polar_cuda_sel_fc1_params p1{};
  p1.dtype = dt; p1.m = m; p1.d = d; p1.k = k;
  p1.x = x.d; p1.ldx = d; p1.w1 = w1.d; p1.ldw1 = d; p1.b1 = bias ? b1.d : nullptr;
  p1.idx = dense_idx ? nullptr : (const int32_t*)didx.d; p1.act = POLAR_ACT_RELU;
  p1.h = h.d; p1.ldh = k; p1.impl = impl; p1.splits = splits;
  polar_cuda_sel_fc2_params p2{};
  p2.dtype = dt; p2.m = m; p2.d = d; p2.k = k;
  p2.h = h.d; p2.ldh = k; p2.w2t = w2t.d; p2.ldw2t = d; p2.b2 = bias ? b2.d : nullptr;
  p2.idx = p1.idx; p2.y = y.d; p2.ldy = d; p2.impl = impl; p2.splits = splits; p2.after_fc1 = 1;
  const size_t ws1 = polar_cuda_sel_fc1_workspace(&p1), ws2 = polar_cuda_sel_fc2_workspace(&p2);
  DBuf ws(std::max(ws1, ws2));
  p1.workspace = p2.workspace = ws.d;
  p1.workspace_bytes = p2.workspace_bytes = ws.bytes;

  char tag[256];
  std::snprintf(tag, sizeof tag, "%s m=%d d=%d ffn=%d k=%d impl=%d splits=%d bias=%d idx=%s", dtname(dt), m, d, ffn, k, impl,
                splits, (int)bias, dense_idx ? "none" : sorted ? "sorted" : "shuffled");

  // fc1 then fc2 chained (the MLP)
  h.poison();
  y.poison();
  PK(polar_cuda_sel_fc1(&p1));
  PK(polar_cuda_sel_fc2(&p2));
  CK(cudaDeviceSynchronize());
  const std::vector<float> hk = h.download(), yk = y.download();

  // references for fc1: ref (double), naive (fp32 sum, rounded)
  std::vector<double> href((size_t)m * k);
  std::vector<float> hnaive((size_t)m * k);
  parallel_for(m, [&](int i) {
    for (int j = 0; j < k; ++j) {
      const float* xr = &x.h[(size_t)i * d];
      const float* wr = &w1.h[(size_t)idx[j] * d];
      double s = bias ? b1.h[idx[j]] : 0.0;
      float sf = 0.f;
      for (int t = 0; t < d; ++t) {
        s += (double)xr[t] * wr[t];
        sf += xr[t] * wr[t];
      }
      if (bias) sf += b1.h[idx[j]];
      href[(size_t)i * k + j] = std::max(s, 0.0);
      hnaive[(size_t)i * k + j] = round_t(std::max(sf, 0.f), dt);
    }
  });
  ErrStat e1;
  for (size_t i = 0; i < href.size(); ++i) e1.add(hk[i], hnaive[i], href[i]);
  report(e1.ok(), std::string("fc1 ") + tag, e1.k, e1.bound());

  // the MLP: ref keeps h in double, naive uses its own rounded h
  std::vector<double> yref((size_t)m * d);
  std::vector<float> ynaive((size_t)m * d);
  parallel_for(m, [&](int i) {
    std::vector<double> acc(d, 0.0);
    std::vector<float> accf(d, 0.f);
    for (int j = 0; j < k; ++j) {
      const double hv = href[(size_t)i * k + j];
      const float hn = hnaive[(size_t)i * k + j];
      const float* wr = &w2t.h[(size_t)idx[j] * d];
      if (hv != 0.0)
        for (int t = 0; t < d; ++t) acc[t] += hv * wr[t];
      if (hn != 0.f)
        for (int t = 0; t < d; ++t) accf[t] += hn * wr[t];
    }
    for (int t = 0; t < d; ++t) {
      yref[(size_t)i * d + t] = acc[t] + (bias ? b2.h[t] : 0.0);
      ynaive[(size_t)i * d + t] = round_t(accf[t] + (bias ? b2.h[t] : 0.f), dt);
    }
  });
  ErrStat e2;
  for (size_t i = 0; i < yref.size(); ++i) e2.add(yk[i], ynaive[i], yref[i]);
  report(e2.ok(), std::string("mlp ") + tag, e2.k, e2.bound());

  // fc2 alone on a random h, accumulating into y2 (fused residual add)
  p2.h = hin.d;
  p2.y = y2.d;
  p2.accumulate = 1;
  p2.after_fc1 = 0;
  PK(polar_cuda_sel_fc2(&p2));
  CK(cudaDeviceSynchronize());
  const std::vector<float> y2k = y2.download();
  ErrStat e3;
  std::vector<double> r3((size_t)m * d);
  std::vector<float> n3((size_t)m * d);
  parallel_for(m, [&](int i) {
    std::vector<double> acc(d, 0.0);
    std::vector<float> accf(d, 0.f);
    for (int j = 0; j < k; ++j) {
      const float hv = hin.h[(size_t)i * k + j];
      const float* wr = &w2t.h[(size_t)idx[j] * d];
      for (int t = 0; t < d; ++t) {
        acc[t] += (double)hv * wr[t];
        accf[t] += hv * wr[t];
      }
    }
    for (int t = 0; t < d; ++t) {
      const float old = y2.h[(size_t)i * d + t];
      r3[(size_t)i * d + t] = acc[t] + (bias ? b2.h[t] : 0.0) + old;
      n3[(size_t)i * d + t] = round_t(accf[t] + (bias ? b2.h[t] : 0.f) + old, dt);
    }
  });
  for (size_t i = 0; i < r3.size(); ++i) e3.add(y2k[i], n3[i], r3[i]);
  report(e3.ok(), std::string("fc2+acc ") + tag, e3.k, e3.bound());

  report_ws_zeroed(ws, tag);  // counters and partial tiles
}

// ---- attention --------------------------------------------------------------------------------------
struct AttnCase {
  int B, hkv, hpg, S, nsel, splits;
  bool dense;
  const char* want_plan = nullptr;  // the start of the planner's plan expected on a GPU of 132 SMs (H100 SXM, H200)
};
static int g_sms = 0;

static void test_attn(polar_dtype dt, const AttnCase& c, uint64_t seed) {
  Rng r(seed);
  const int B = c.B, hkv = c.hkv, hpg = c.hpg, Hq = hkv * hpg, S = c.S, D = 128;
  T16 q(dt, (size_t)B * Hq * D), kc(dt, (size_t)B * S * hkv * D), vc(dt, (size_t)B * S * hkv * D), out(dt, (size_t)B * Hq * D);
  q.fill_normal(r, 1.0);
  kc.fill_normal(r, 1.0);
  vc.fill_normal(r, 1.0);
  q.upload();
  kc.upload();
  vc.upload();
  std::vector<int32_t> lens(B);
  for (int b = 0; b < B; ++b) lens[b] = 1 + r.below(S);
  if (B > 1) lens[B - 1] = S;
  if (B > 2) lens[0] = 0;  // an empty sequence gives zeros
  const int nsel = c.dense ? hkv : c.nsel;
  const int stride = nsel + 1;
  std::vector<int32_t> idx((size_t)B * stride, -7);
  for (int b = 0; b < B; ++b) {
    std::vector<int32_t> s = rand_subset(r, hkv, nsel, b % 2 == 0);
    for (int j = 0; j < nsel; ++j) idx[(size_t)b * stride + j] = s[j];
    if (nsel > 1 && b % 3 == 1) idx[(size_t)b * stride + r.below(nsel)] = -1;  // padding entry
  }
  DBuf didx(idx.size() * 4), dlen(B * 4);
  CK(cudaMemcpy(didx.d, idx.data(), idx.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dlen.d, lens.data(), B * 4, cudaMemcpyHostToDevice));
  polar_cuda_attn_params p{};
  p.dtype = dt; p.batch = B; p.q_heads = Hq; p.kv_heads = hkv; p.head_dim = D; p.max_seq = S;
  p.q = q.d; p.q_batch_stride = (int64_t)Hq * D; p.q_head_stride = D;
  p.k_cache = kc.d; p.k_batch_stride = (int64_t)S * hkv * D; p.k_seq_stride = (int64_t)hkv * D; p.k_head_stride = D;
  p.v_cache = vc.d; p.v_batch_stride = p.k_batch_stride; p.v_seq_stride = p.k_seq_stride; p.v_head_stride = D;
  p.seqlens = (const int32_t*)dlen.d;
  p.idx = c.dense ? nullptr : (const int32_t*)didx.d; p.n_sel = nsel; p.idx_stride = stride;
  p.scale = 1.f / std::sqrt((float)D);
  p.out = out.d; p.o_batch_stride = (int64_t)Hq * D; p.o_head_stride = D;
  p.splits = c.splits;
  DBuf ws(polar_cuda_attn_workspace(&p));
  p.workspace = ws.d;
  p.workspace_bytes = ws.bytes;
  out.poison();
  PK(polar_cuda_attn_decode(&p));
  CK(cudaDeviceSynchronize());
  const std::vector<float> o = out.download();

  ErrStat e;
  bool zeros_ok = true;
  for (int b = 0; b < B; ++b) {
    std::vector<char> kept(hkv, 0);
    for (int j = 0; j < nsel; ++j) {
      const int g = c.dense ? j : idx[(size_t)b * stride + j];
      if (g >= 0 && g < hkv) kept[g] = 1;
    }
    for (int g = 0; g < hkv; ++g)
      for (int rr = 0; rr < hpg; ++rr) {
        const int hq = g * hpg + rr;
        const float* orow = &o[((size_t)b * Hq + hq) * D];
        if (!kept[g]) {
          for (int t = 0; t < D; ++t) zeros_ok &= orow[t] == 0.f;
          continue;
        }
        const int L = lens[b];
        const float* qr = &q.h[((size_t)b * Hq + hq) * D];
        std::vector<double> sref(L);
        std::vector<float> snaive(L);
        double mx = -1e300;
        float mxn = -INFINITY;
        for (int pos = 0; pos < L; ++pos) {
          const float* kr = &kc.h[(((size_t)b * S + pos) * hkv + g) * D];
          double s = 0;
          float sf = 0;
          for (int t = 0; t < D; ++t) {
            s += (double)qr[t] * kr[t];
            sf += qr[t] * kr[t];
          }
          sref[pos] = s * p.scale;
          snaive[pos] = round_t(round_t(sf, dt) * p.scale, dt);
          mx = std::max(mx, sref[pos]);
          mxn = std::max(mxn, snaive[pos]);
        }
        double den = 0;
        float denf = 0;
        std::vector<float> pn(L);
        for (int pos = 0; pos < L; ++pos) {
          sref[pos] = std::exp(sref[pos] - mx);
          den += sref[pos];
          pn[pos] = std::exp(snaive[pos] - mxn);
          denf += pn[pos];
        }
        for (int pos = 0; pos < L; ++pos) pn[pos] = round_t(pn[pos] / denf, dt);
        for (int t = 0; t < D; ++t) {
          double acc = 0;
          float accf = 0;
          for (int pos = 0; pos < L; ++pos) {
            const float vv = vc.h[(((size_t)b * S + pos) * hkv + g) * D + t];
            acc += sref[pos] * vv;
            accf += pn[pos] * vv;
          }
          const double ref = L ? acc / den : 0.0;
          const float naive = L ? round_t(accf, dt) : 0.f;
          e.add(orow[t], naive, ref);
        }
      }
  }
  char tag[256], plan[128];
  PK(polar_cuda_attn_describe(&p, plan, sizeof plan));
  std::snprintf(tag, sizeof tag, "attn %s B=%d kv=%d hpg=%d S=%d nsel=%d splits=%d %s (%s)", dtname(dt), B, hkv, hpg, S, nsel, c.splits,
                c.dense ? "dense" : "selective", plan);
  report(e.ok(), tag, e.k, e.bound());
  report(zeros_ok, std::string("zeros ") + tag, zeros_ok ? 0 : 1, 0);
  polar_cuda_tuning tu;
  polar_cuda_get_tuning(&tu);
  if (c.want_plan && tu.attn_stages == 0 && g_sms == 132) {
    const bool ok = std::strncmp(plan, c.want_plan, std::strlen(c.want_plan)) == 0;
    report(ok, std::string("plan ") + tag + ": " + c.want_plan + " expected", ok ? 0 : 1, 0);
  }
  report_ws_zeroed(ws, tag);
}

// ---- routers ----------------------------------------------------------------------------------------
static bool topk_valid(const std::vector<double>& score, const std::vector<int32_t>& sel, int k, double tol) {
  if ((int)sel.size() != k) return false;
  std::vector<char> in(score.size(), 0);
  for (size_t i = 0; i < sel.size(); ++i) {
    if (sel[i] < 0 || sel[i] >= (int)score.size()) return false;
    if (i && sel[i] <= sel[i - 1]) return false;  // ascending, distinct
    in[sel[i]] = 1;
  }
  double minin = 1e300, maxout = -1e300;
  for (size_t i = 0; i < score.size(); ++i) (in[i] ? minin = std::min(minin, score[i]) : maxout = std::max(maxout, score[i]));
  return k == 0 || k == (int)score.size() || minin >= maxout - tol;
}

// The exact top-k of score (ties: lower index first), ascending: what the kernels' select must return over
// the scores it computed.
static std::vector<int32_t> topk_exact(const std::vector<double>& score, int k) {
  std::vector<int32_t> o(score.size());
  for (size_t i = 0; i < o.size(); ++i) o[i] = (int32_t)i;
  std::stable_sort(o.begin(), o.end(), [&](int32_t a, int32_t b) { return score[a] > score[b]; });
  o.resize(k);
  std::sort(o.begin(), o.end());
  return o;
}

// Router inputs: RANDOM; TIES: fc2 = 0, every score is 0 and the selection must be the k lowest indices;
// CLUSTER: the scores are exactly fc2[:, 0] (x and fc1 pick one coordinate), 30% of them 20 values in [1, 1.15)
// (one top-11-bit bin of the select, each value repeated: ties at the k-th), the rest negative
enum RouterInputs { RANDOM, TIES, CLUSTER };
static void test_mlp_router(polar_dtype dt, int m, int d, int rank, int ffn, int k, int score, uint64_t seed,
                            RouterInputs mode = RANDOM) {
  Rng r(seed);
  const bool ties = mode == TIES;
  T16 x(dt, (size_t)m * d), f1(dt, (size_t)rank * d), f2(dt, (size_t)ffn * rank);
  x.fill_normal(r, 1.0);
  f1.fill_normal(r, 1.0 / std::sqrt((double)d));
  f2.fill_normal(r, ties ? 0.0 : 1.0 / std::sqrt((double)rank));
  if (mode == CLUSTER) {
    std::fill(x.h.begin(), x.h.end(), 0.f);
    std::fill(f1.h.begin(), f1.h.end(), 0.f);
    std::fill(f2.h.begin(), f2.h.end(), 0.f);
    x.h[0] = f1.h[0] = 1.f;
    const int ncl = ffn * 3 / 10;
    for (int f = 0; f < ffn; ++f) f2.h[(size_t)f * rank] = f < ncl ? 1.f + (f % 20) / 128.f : -1.f - (f % 97) / 128.f;
  }
  x.upload();
  f1.upload();
  f2.upload();
  DBuf didx(std::max(k, 1) * 4), dsc((size_t)ffn * 4);
  polar_cuda_mlp_router_params p{};
  p.dtype = dt; p.m = m; p.d = d; p.rank = rank; p.ffn = ffn; p.k = k;
  p.x = x.d; p.ldx = d; p.fc1 = f1.d; p.fc2 = f2.d; p.score = score;
  p.out_idx = (int32_t*)didx.d; p.out_scores = nullptr;  // the workspace of the second call below (scores inside)
  DBuf ws(polar_cuda_mlp_router_workspace(&p));
  p.out_scores = (float*)dsc.d;
  p.workspace = ws.d;
  p.workspace_bytes = ws.bytes;
  PK(polar_cuda_mlp_router(&p));
  CK(cudaDeviceSynchronize());
  std::vector<int32_t> sel(k);
  std::vector<float> sc(ffn);
  if (k) CK(cudaMemcpy(sel.data(), didx.d, k * 4, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(sc.data(), dsc.d, ffn * 4, cudaMemcpyDeviceToHost));
  // reference, SIGMOID: h rounded to the dtype per token (the kernel's documented precision), scores in
  // double; LOGIT: the kernel sums the tokens first (the router is linear), everything in fp32, so the
  // reference is fc2 . (fc1 . sum_t x[t]) in double
  std::vector<double> ref(ffn, 0.0);
  std::vector<float> hh((size_t)m * rank);
  if (score == POLAR_CUDA_SCORE_LOGIT) {
    std::vector<double> xs(d, 0.0), hs(rank, 0.0);
    for (int t = 0; t < m; ++t)
      for (int i = 0; i < d; ++i) xs[i] += x.h[(size_t)t * d + i];
    for (int q = 0; q < rank; ++q)
      for (int i = 0; i < d; ++i) hs[q] += xs[i] * f1.h[(size_t)q * d + i];
    parallel_for(ffn, [&](int f) {
      double a = 0;
      for (int q = 0; q < rank; ++q) a += hs[q] * f2.h[(size_t)f * rank + q];
      ref[f] = a;
    });
  } else {
  for (int t = 0; t < m; ++t)
    for (int q = 0; q < rank; ++q) {
      double s = 0;
      for (int i = 0; i < d; ++i) s += (double)x.h[(size_t)t * d + i] * f1.h[(size_t)q * d + i];
      hh[(size_t)t * rank + q] = round_t((float)s, dt);
    }
  parallel_for(ffn, [&](int f) {
    double a = 0;
    for (int t = 0; t < m; ++t) {
      double s = 0;
      for (int q = 0; q < rank; ++q) s += (double)hh[(size_t)t * rank + q] * f2.h[(size_t)f * rank + q];
      a += score ? 1.0 / (1.0 + std::exp(-s)) : s;
    }
    ref[f] = a;
  });
  }
  double err = 0, mx = 0;
  for (int f = 0; f < ffn; ++f) {
    err = std::max(err, std::fabs(sc[f] - ref[f]));
    mx = std::max(mx, std::fabs(ref[f]));
  }
  // h is rounded to the dtype on both sides, but an fp32-vs-double difference can flip one rounding
  const double tol = (dt == POLAR_F16 ? 4e-3 : 3e-2) * (mx + 1.0);
  char tag[200];
  std::snprintf(tag, sizeof tag, "mlp_router %s m=%d d=%d rank=%d ffn=%d k=%d %s (%s)", dtname(dt), m, d, rank, ffn, k,
                score ? "sigmoid" : "logit", std::strncmp(polar_cuda_mlp_router_path(), "fused", 5) ? "separate kernels" : "fused");
  report(err <= tol, std::string("scores ") + tag, err, tol);
  // top-k over the kernel's own scores must be exact; over the reference within tolerance
  std::vector<double> scd(sc.begin(), sc.end());
  report(topk_valid(scd, sel, k, 0.0), std::string("topk ") + tag, 0, 0);
  report(sel == topk_exact(scd, k), std::string("topk exact over its scores, ties to the lower index ") + tag, 0, 0);
  if (ties) {
    bool low = true;
    for (int i = 0; i < k; ++i) low &= sel[i] == i;
    report(low, std::string("topk ties take the lowest indices ") + tag, 0, 0);
  }
  // again with the scores in the workspace (the kernels zero them as they read them), on the workspace the
  // first call left: the same selection up to the fp32 summation order of the first call's scores
  p.out_scores = nullptr;
  CK(cudaMemset(didx.d, 0xff, didx.bytes));
  PK(polar_cuda_mlp_router(&p));
  CK(cudaDeviceSynchronize());
  std::vector<int32_t> sel2(k);
  if (k) CK(cudaMemcpy(sel2.data(), didx.d, k * 4, cudaMemcpyDeviceToHost));
  report(topk_valid(scd, sel2, k, 1e-5 * (mx + 1.0)), std::string("topk, scores in the workspace ") + tag, 0, 0);
  report_ws_zeroed(ws, tag);
}

static void test_head_router(polar_dtype dt, int m, int d, int hq, int hkv, bool per_head, int k, uint64_t seed) {
  Rng r(seed);
  const int units = per_head ? hq : hkv;
  T16 x(dt, (size_t)m * d), w(dt, (size_t)units * d), b(dt, units);
  x.fill_normal(r, 1.0);
  w.fill_normal(r, 1.0 / std::sqrt((double)d));
  b.fill_normal(r, 0.5);
  x.upload();
  w.upload();
  b.upload();
  const int ld = k + 3;
  DBuf didx((size_t)m * ld * 4), dlog((size_t)m * units * 4);
  polar_cuda_head_router_params p{};
  p.dtype = dt; p.m = m; p.d = d; p.units = units; p.q_heads = hq; p.kv_heads = hkv; p.k = k;
  p.x = x.d; p.ldx = d; p.w = w.d; p.b = b.d; p.out_idx = (int32_t*)didx.d; p.ld_idx = ld; p.out_logits = (float*)dlog.d;
  DBuf ws(polar_cuda_head_router_workspace(&p));
  p.workspace = ws.d;
  p.workspace_bytes = ws.bytes;
  PK(polar_cuda_head_router(&p));
  CK(cudaDeviceSynchronize());
  std::vector<int32_t> sel((size_t)m * ld);
  std::vector<float> lg((size_t)m * units);
  CK(cudaMemcpy(sel.data(), didx.d, sel.size() * 4, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(lg.data(), dlog.d, lg.size() * 4, cudaMemcpyDeviceToHost));
  double err = 0, mx = 0;
  bool topk_ok = true;
  const int per = units / hkv;
  std::vector<std::vector<double>> gks(m);  // per token, the kernel's logits summed per group
  for (int t = 0; t < m; ++t) {
    std::vector<double> gs(hkv, 0.0), &gk = gks[t];
    gk.assign(hkv, 0.0);
    for (int u = 0; u < units; ++u) {
      double s = b.h[u];
      for (int i = 0; i < d; ++i) s += (double)x.h[(size_t)t * d + i] * w.h[(size_t)u * d + i];
      err = std::max(err, std::fabs(lg[(size_t)t * units + u] - s));
      mx = std::max(mx, std::fabs(s));
      gs[u / per] += s;
      gk[u / per] += lg[(size_t)t * units + u];
    }
    std::vector<int32_t> st(sel.begin() + (size_t)t * ld, sel.begin() + (size_t)t * ld + k);
    topk_ok &= topk_valid(gk, st, k, 1e-4 * (mx + 1));
    topk_ok &= topk_valid(gs, st, k, 1e-3 * (mx + 1));
  }
  char tag[200];
  std::snprintf(tag, sizeof tag, "head_router %s m=%d d=%d hq=%d hkv=%d units=%d k=%d", dtname(dt), m, d, hq, hkv, units, k);
  const double tol = 1e-4 * (mx + 1.0);
  report(err <= tol, std::string("logits ") + tag, err, tol);
  report(topk_ok, std::string("topk ") + tag, 0, 0);
  // again with the logits in the workspace (the select zeroes them as it reads them), twice on the same
  // workspace with idx reset in between: each a valid selection over the first call's logits, nothing written
  // past k, and the workspace back to zero (the second call finds it as the first left it)
  p.out_logits = nullptr;
  DBuf ws2(polar_cuda_head_router_workspace(&p));  // zero-filled
  p.workspace = ws2.d;
  p.workspace_bytes = ws2.bytes;
  for (int call = 0; call < 2; ++call) {
    CK(cudaMemset(didx.d, 0xff, didx.bytes));
    PK(polar_cuda_head_router(&p));
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(sel.data(), didx.d, sel.size() * 4, cudaMemcpyDeviceToHost));
    bool ok2 = true;
    for (int t = 0; t < m; ++t) {
      std::vector<int32_t> st(sel.begin() + (size_t)t * ld, sel.begin() + (size_t)t * ld + k);
      ok2 &= topk_valid(gks[t], st, k, 1e-4 * (mx + 1));
      for (int j = k; j < ld; ++j) ok2 &= sel[(size_t)t * ld + j] == -1;  // nothing past k written
    }
    report(ok2, std::string(call ? "topk, second call on that workspace " : "topk, logits in the workspace ") + tag, 0, 0);
  }
  report_ws_zeroed(ws2, tag);
}

// ---- dense baseline (cuBLASLt) ---------------------------------------------------------------------
static void test_dense(polar_dtype dt, int m, int n, int k, int w_kn, bool bias, int act, uint64_t seed) {
  Rng r(seed);
  T16 x(dt, (size_t)m * k), w(dt, (size_t)n * k), b(dt, n), y(dt, (size_t)m * n);
  x.fill_normal(r, 1.0);
  w.fill_normal(r, 1.0 / std::sqrt((double)k));
  b.fill_normal(r, 0.2);
  x.upload();
  w.upload();
  b.upload();
  polar_cuda_dense_linear_params p{};
  p.dtype = dt; p.m = m; p.n = n; p.k = k; p.x = x.d; p.ldx = k; p.w = w.d; p.ldw = w_kn ? n : k; p.w_kn = w_kn;
  p.bias = bias ? b.d : nullptr; p.act = act; p.y = y.d; p.ldy = n;
  y.poison();
  char tag[200];
  std::snprintf(tag, sizeof tag, "dense %s m=%d n=%d k=%d w_kn=%d bias=%d act=%d", dtname(dt), m, n, k, w_kn, (int)bias, act);
  if (polar_cuda_dense_linear(&p) != 0) {
    report(false, std::string(tag) + " (" + polar_last_error() + ")", 1, 0);
    return;
  }
  CK(cudaDeviceSynchronize());
  const std::vector<float> yk = y.download();
  ErrStat e;
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      double s = bias ? b.h[j] : 0.0;
      float sf = bias ? b.h[j] : 0.f;
      for (int t = 0; t < k; ++t) {
        const float wv = w_kn ? w.h[(size_t)t * n + j] : w.h[(size_t)j * k + t];
        s += (double)x.h[(size_t)i * k + t] * wv;
        sf += x.h[(size_t)i * k + t] * wv;
      }
      if (act) {
        s = std::max(s, 0.0);
        sf = std::max(sf, 0.f);
      }
      e.add(yk[(size_t)i * n + j], round_t(sf, dt), s);
    }
  report(e.ok(), tag, e.k, e.bound());
}

// The plan of fc1 or fc2 (fp16, dense leading dimensions) at batch m into buf; describe() only plans: the pointers
// are checked, never read.
static int describe_plan(int fc, int m, int d, int k, char* buf, size_t n) {
  DBuf any(256);
  if (fc == 1) {
    polar_cuda_sel_fc1_params p{};
    p.dtype = POLAR_F16; p.m = m; p.d = d; p.k = k; p.ldx = d; p.ldw1 = d; p.ldh = k;
    p.x = p.w1 = p.h = any.d;
    p.act = POLAR_ACT_RELU;
    return polar_cuda_sel_fc1_describe(&p, buf, n);
  }
  polar_cuda_sel_fc2_params p{};
  p.dtype = POLAR_F16; p.m = m; p.d = d; p.k = k; p.ldh = k; p.ldw2t = d; p.ldy = d;
  p.h = p.w2t = p.y = any.d;
  return polar_cuda_sel_fc2_describe(&p, buf, n);
}

// The planner's per-GPU profile by default: the H200's on a device whose name has "H200" in it, else the H100's
// (every plan description names it). A first version keyed it on the memory bus width, which an H200 did not
// report as its datasheet's 6144 bits, and planned with the H100's choices there unnoticed.
static void test_default_plan_profile(const polar_cuda_device_info& info) {
  char buf[256] = "";
  const int rc = describe_plan(1, 64, 4096, 1024, buf, sizeof buf);
  const bool h200 = std::strstr(info.name, "H200") != nullptr;
  const std::string want = h200 ? "plan=h200" : "plan=h100";
  report(rc == 0 && std::string(buf).find(want) != std::string::npos,
         "default planner profile on " + std::string(info.name) + " is " + want + " (" + buf + ")", rc, 0);
}

// Batch 256 (describe() only plans; PlanProfile in sel_gemm.cu): on the H200 profile the warp-specialized kernel
// at every size, its tiles split in clusters where all clusters fit at once (OPT-6.7B's 7 fc1 tiles at 5%, 32
// fc2 tiles), one CTA per tile where two per tile would not fit (OPT-66B's 72 fc2 tiles); on the H100 profile
// only from 100 MB of gathered weights.
static void test_batch256_plan(const polar_cuda_device_info& info) {
  if (!g_wgmma || info.sms < 64) return;
  polar_cuda_tuning defaults;
  polar_cuda_get_tuning(&defaults);
  struct Want {
    int prof, fc, d, k;
    const char* has;
  };
  const bool two = 2 * 72 <= info.sms;  // 72 tiles with two CTAs each at once
  for (const Want& w : {Want{2, 2, 9216, 1920, two ? "cluster-k" : "stream-k ctas=72 "}, Want{2, 2, 4096, 896, "cluster-k"},
                        Want{2, 1, 4096, 896, "cluster-k"}, Want{1, 2, 4096, 4096, "reduce="}, Want{1, 2, 9216, 9216, "wgmma-ws"}}) {
    set_tuning([&w](polar_cuda_tuning& t) { t.plan_profile = w.prof; });
    char buf[256] = "";
    const int rc = describe_plan(w.fc, 256, w.d, w.k, buf, sizeof buf);
    report(rc == 0 && std::string(buf).find(w.has) != std::string::npos,
           std::string(w.prof == 1 ? "h100" : "h200") + " plan of fc" + std::to_string(w.fc) + " at batch 256, d " +
               std::to_string(w.d) + ", k " + std::to_string(w.k) + " has '" + w.has + "' (" + buf + ")", rc, 0);
  }
  polar_cuda_set_tuning(&defaults);
}

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--quick") g_quick = true;
  polar_cuda_device_info info;
  if (polar_cuda_get_device_info(0, &info) != 0) {
    std::printf("SKIP: no usable CUDA device: %s\n0 passed, 0 failed\n", polar_last_error());
    return 0;
  }
  g_wgmma = info.wgmma;
  g_sms = info.sms;
  std::printf("device: %s (sm_%d%d, %d SMs), wgmma path: %s, mode: %s\n", info.name, info.major, info.minor, info.sms,
              g_wgmma ? "yes" : "no", g_quick ? "quick" : "full");
  test_default_plan_profile(info);
  test_batch256_plan(info);
  uint64_t seed = 1;
  const polar_dtype dts[] = {POLAR_F16, POLAR_BF16};
  std::vector<int> impls = {POLAR_IMPL_MMA};
  if (g_wgmma) impls.push_back(POLAR_IMPL_WGMMA);

  // MLP grid
  std::vector<MlpCase> mlp = {{1, 64, 256, 64}, {5, 136, 512, 200}, {16, 256, 300, 128}, {33, 512, 1024, 384},
                              {64, 1024, 2048, 520}, {100, 256, 512, 256}, {256, 512, 1024, 640}};
  if (g_quick) mlp = {{3, 136, 256, 72}, {70, 128, 256, 136}, {200, 128, 256, 136}};
  for (polar_dtype dt : dts)
    for (const MlpCase& c : mlp)
      for (int impl : impls)
        for (int splits : {0, 1, 3}) {
          if (g_quick && splits == 1) continue;
          test_mlp(dt, c, impl, splits, (seed & 1) == 0, (seed & 2) == 0, false, seed);
          ++seed;
        }
  polar_cuda_tuning defaults;
  polar_cuda_get_tuning(&defaults);
  set_tuning([](polar_cuda_tuning& t) { t.mma_stages = 4; });  // the 4-stage mma.sync pipeline variant
  for (polar_dtype dt : dts)
    for (const MlpCase& c : mlp)
      for (int splits : {0, 3}) test_mlp(dt, c, POLAR_IMPL_MMA, splits, true, false, false, seed++);
  set_tuning([](polar_cuda_tuning& t) { t.cluster_reduce = 0; });  // split-K through the fp32 workspace (atomics)
  for (polar_dtype dt : dts)
    for (const MlpCase& c : mlp)
      for (int impl : impls) test_mlp(dt, c, impl, 3, true, (seed & 1) == 0, false, seed++);
  set_tuning([](polar_cuda_tuning& t) {  // the plain-store split-K reduction variant
    t.reduce_atomic = 0;
    t.cluster_reduce = 0;
  });
  for (polar_dtype dt : dts)
    for (const MlpCase& c : mlp)
      for (int impl : impls) test_mlp(dt, c, impl, 3, true, true, false, seed++);
  polar_cuda_set_tuning(&defaults);
  for (int w : {4, 8}) {  // both mma.sync CTA shapes at every batch tile (the default picks by tile)
    set_tuning([w](polar_cuda_tuning& t) { t.mma_warps = w; });
    for (polar_dtype dt : dts)
      for (const MlpCase& c : mlp)
        for (int splits : {0, 3}) test_mlp(dt, c, POLAR_IMPL_MMA, splits, true, (seed & 1) == 0, false, seed++);
  }
  polar_cuda_set_tuning(&defaults);
  if (g_wgmma) {  // wgmma pairs at every batch > 64 (1), and never (0: one nb = 128 CTA per SM at 65-128)
    // 3, 4, 5: no pairs, and two / four warpgroups / the warp-specialized stream-K kernel at nb = 256 (the
    // default picks by size and plan; these shapes are small)
    // 0-5 with split-K through the workspace, 6, 7, 8: pairs / four warpgroups / the warp-specialized kernel with
    // the split-K tiles summed over a thread-block cluster (the default elsewhere in this test)
    // 9: the warp-specialized kernel's stream-K grid at its widest (a charge of one step per added partial, so that
    // most tiles are shared, some by three or more CTAs)
    for (int pr : {1, 0, 3, 4, 5, 6, 7, 8, 9}) {
      set_tuning([pr](polar_cuda_tuning& t) {
        t.wgmma_pair = pr == 6 ? 1 : pr >= 3 ? 0 : pr;
        t.nb256 = pr == 3 ? 0 : pr == 4 || pr == 7 ? 1 : pr == 5 || pr >= 8 ? 3 : 2;
        t.cluster_reduce = pr >= 6 && pr <= 8;
        t.sk_partial = pr == 9 ? 1 : 0;
      });
      for (polar_dtype dt : dts)
        for (const MlpCase& c : mlp)
          for (int splits : {0, 3}) test_mlp(dt, c, POLAR_IMPL_WGMMA, splits, true, (seed & 1) == 0, false, seed++);
      for (polar_dtype dt : dts) test_mlp(dt, {300, 1024, 2048, 520}, POLAR_IMPL_AUTO, 0, true, true, false, seed++);
      // several batch tiles with forced split-K: each tile's splits (and, at 6/7, each tile's cluster) must sum
      // into its own rows only
      for (polar_dtype dt : dts)
        for (int m : {130, 300, 520}) test_mlp(dt, {m, 512, 1024, 384}, POLAR_IMPL_WGMMA, 3, true, (seed & 1) == 0, false, seed++);
    }
    polar_cuda_set_tuning(&defaults);
  }
  for (polar_dtype dt : dts) {
    test_mlp(dt, {7, 256, 128, 128}, POLAR_IMPL_AUTO, 0, true, true, true, seed++);       // idx NULL (dense fc1/fc2)
    if (!g_quick) test_mlp(dt, {130, 4096, 8192, 1024}, POLAR_IMPL_AUTO, 0, true, true, false, seed++);  // model-sized d
  }
  // the planner's two per-GPU profiles (PlanProfile in sel_gemm.cu), each forced on this GPU over the grid; and
  // fc1 at batch 33-64 with 262 MB of gathered weights, where the H200 profile takes the warp-specialized
  // stream-K kernel at nb = 64 (the H100 profile mma.sync with 8 warps), and on the H200 profile fc2 at batch 256
  // on that kernel
  for (int prof : {1, 2}) {
    std::printf("# planner profile forced: %s\n", prof == 1 ? "h100" : "h200");
    set_tuning([prof](polar_cuda_tuning& t) { t.plan_profile = prof; });
    for (polar_dtype dt : dts)
      for (const MlpCase& c : mlp) test_mlp(dt, c, POLAR_IMPL_AUTO, 0, true, (seed & 1) == 0, false, seed++);
    if (!g_quick) test_mlp(POLAR_F16, {40, 8192, 20000, 16000}, POLAR_IMPL_AUTO, 0, true, true, false, seed++);
    // batch 256 at OPT-66B's d on the H200 profile: fc1 in clusters of the warp-specialized kernel, fc2 one
    // CTA per tile
    if (!g_quick && prof == 2) test_mlp(POLAR_BF16, {256, 9216, 4096, 1920}, POLAR_IMPL_AUTO, 0, true, false, false, seed++);
  }
  polar_cuda_set_tuning(&defaults);

  // attention grid
  std::vector<AttnCase> at = {{3, 8, 1, 200, 3, 0, false},   {2, 4, 4, 1030, 2, 0, false}, {3, 8, 8, 777, 5, 3, false},
                              {4, 2, 16, 130, 1, 0, false},  {5, 6, 1, 64, 6, 1, false},   {2, 4, 2, 300, 0, 0, true},
                              {3, 8, 4, 2500, 3, 7, false},  {6, 16, 1, 1920, 5, 0, false}, {1, 8, 8, 4096, 4, 0, false}};
  if (g_quick) at = {{3, 4, 1, 150, 2, 3, false}, {3, 2, 4, 70, 1, 1, false}, {2, 2, 2, 100, 0, 2, true}};
  // Cases the planner's rules decide (their plans checked on 132-SM GPUs): 320 items (batch x kept groups) fill 0.81
  // of a wave of 396 three-per-SM CTAs against 1.21 waves of 264, so 2 stages and one CTA per item; 512 items fill
  // their second wave of 264 better, so 3 stages; 160 items fit one wave of 3-stage CTAs, so one CTA each (the split
  // model alone would take 3 at 30 tiles).
  const std::vector<AttnCase> at2 = {{40, 8, 1, 200, 8, 0, false, "stages=2 splits=1 "},
                                     {64, 8, 4, 333, 5, 0, false, "stages=2 splits=1 "},
                                     {64, 8, 2, 150, 8, 0, false, "stages=3 "},
                                     {16, 16, 1, 1920, 10, 0, false, "stages=3 splits=1 "}};
  for (polar_dtype dt : dts) {
    for (int st : {0, 2, 3}) {  // the planner's pipeline depth, then each forced
      set_tuning([st](polar_cuda_tuning& t) { t.attn_stages = st; });
      if (st) std::printf("# decode attention with %d pipeline stages forced\n", st);
      for (const AttnCase& c : at) test_attn(dt, c, seed++);
      if (!g_quick || st == 0)
        for (const AttnCase& c : at2) test_attn(dt, c, seed++);
    }
    polar_cuda_set_tuning(&defaults);
  }

  // routers
  for (polar_dtype dt : dts) {
    // LOGIT scores: the fused cooperative kernel (router_fused = 1), then the separate kernels (the default) with the
    // token sum folded into the first GEMV and the select's first histogram made by the second GEMV (router_fold_sum
    // and router_hist_in_gemv = 1, the defaults), then with the token sum's own kernel and the select's own first
    // pass (a few cases)
    for (int variant : {0, 1, 2}) {
      const int fused = variant == 0, fold = variant != 2;
      set_tuning([fused, fold](polar_cuda_tuning& t) { t.router_fused = fused; t.router_fold_sum = fold; t.router_hist_in_gemv = fold; });
      test_mlp_router(dt, 1, 256, 64, 1000, 100, POLAR_CUDA_SCORE_LOGIT, seed++);
      test_mlp_router(dt, 33, 2056, 1040, 777, 50, POLAR_CUDA_SCORE_LOGIT, seed++);  // split GEMV segments, partial token block
      if (variant == 2) {
        test_mlp_router(dt, 5, 256, 64, 36864, 18432, POLAR_CUDA_SCORE_LOGIT, seed++);
        if (!g_quick) test_mlp_router(dt, 64, 9216, 1024, 36864, 18432, POLAR_CUDA_SCORE_LOGIT, seed++);  // OPT-66B's router at batch 64
        std::printf("# MLP router path: %s\n", polar_cuda_mlp_router_path());
        continue;
      }
      // multi-CTA select: the two-barrier path where the k-th key's bin is small (select_cap 8192, the default),
      // the three-pass path (cap 0, and past the cap)
      for (int cap : {8192, 0}) {
        set_tuning([cap](polar_cuda_tuning& t) { t.select_cap = cap; });
        std::printf("# select_cap %d\n", cap);
        test_mlp_router(dt, 5, 256, 64, 36864, 18432, POLAR_CUDA_SCORE_LOGIT, seed++);  // 36 CTAs
        test_mlp_router(dt, 3, 128, 32, 20000, 777, POLAR_CUDA_SCORE_LOGIT, seed++, TIES);  // all ties
        test_mlp_router(dt, 3, 128, 32, 20000, 1001, POLAR_CUDA_SCORE_LOGIT, seed++, CLUSTER);  // 6000 in the bin
        test_mlp_router(dt, 2, 64, 16, 36864, 5000, POLAR_CUDA_SCORE_LOGIT, seed++, CLUSTER);   // 11059: past the cap
        if (!g_quick) test_mlp_router(dt, 64, 9216, 1024, 36864, 18432, POLAR_CUDA_SCORE_LOGIT, seed++);  // OPT-66B's router at batch 64
      }
      set_tuning([&defaults](polar_cuda_tuning& t) { t.select_cap = defaults.select_cap; });
      test_mlp_router(dt, 2, 256, 64, 5000, 5000, POLAR_CUDA_SCORE_LOGIT, seed++);  // k = ffn: every row
      test_mlp_router(dt, 2, 256, 64, 5000, 0, POLAR_CUDA_SCORE_LOGIT, seed++);     // k = 0: scores only
      if (!g_quick) {
        test_mlp_router(dt, 64, 512, 128, 4096, 2048, POLAR_CUDA_SCORE_LOGIT, seed++);
      }
      std::printf("# MLP router path: %s; cooperative launch: %s\n", polar_cuda_mlp_router_path(), polar_cuda_topk_launch_mode());
    }
    polar_cuda_set_tuning(&defaults);
    test_mlp_router(dt, 7, 128, 32, 520, 1, POLAR_CUDA_SCORE_SIGMOID, seed++);
    test_mlp_router(dt, 3, 128, 32, 300, 7, POLAR_CUDA_SCORE_SIGMOID, seed++, TIES);     // all ties, one CTA
    if (!g_quick) test_mlp_router(dt, 100, 256, 64, 3000, 3000, POLAR_CUDA_SCORE_SIGMOID, seed++);
    // head router: the one kernel (head_router_fused = 1, the default), then the split-K GEMM + top-k kernel
    for (int fused : {1, 0}) {
      set_tuning([fused](polar_cuda_tuning& t) { t.head_router_fused = fused; });
      test_head_router(dt, 5, 256, 32, 32, false, 10, seed++);
      test_head_router(dt, 37, 128, 32, 8, true, 4, seed++);
      test_head_router(dt, 130, 520, 40, 40, false, 12, seed++);  // 9 token groups, the last partial; clusters of 2
      test_head_router(dt, 9, 136, 24, 24, false, 0, seed++);     // k = 0: logits only
      test_head_router(dt, 20, 4096, 64, 8, true, 5, seed++);     // clusters of 16, one token per CTA; GQA, query heads scored
      if (!g_quick) {
        test_head_router(dt, 64, 1024, 72, 72, false, 22, seed++);
        test_head_router(dt, 3, 256, 64, 8, false, 8, seed++);
        test_head_router(dt, 64, 9216, 72, 72, false, 22, seed++);  // OPT-66B's at batch 64
        test_head_router(dt, 4, 256, 160, 160, false, 50, seed++);  // > 128 units: the GEMM path either way
      }
      std::printf("# head router path: %s\n", polar_cuda_head_router_path());
    }
    polar_cuda_set_tuning(&defaults);
  }

  // dense baseline
  if (polar_cuda_cublaslt_available()) {
    for (polar_dtype dt : dts) {
      test_dense(dt, 5, 256, 128, 0, true, POLAR_ACT_RELU, seed++);
      test_dense(dt, 64, 136, 512, 1, true, POLAR_ACT_NONE, seed++);
      if (!g_quick) test_dense(dt, 33, 512, 1024, 0, false, POLAR_ACT_NONE, seed++);
    }
  } else {
    std::printf("SKIP dense (cuBLASLt): %s\n", polar_last_error());
  }

  polar_cuda_release();
  std::printf("%d passed, %d failed\n", g_pass, g_fail);
  return g_fail ? 1 : 0;
}
