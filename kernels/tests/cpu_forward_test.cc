// Kernel-level checks of the model forward (polar/model.h), without Node: random in-memory OPT and LLaMA
// (GQA, llama3 RoPE) models; prefill vs KV-cache decode, mixed-length batches, sparse with k = ffn and all
// heads vs dense, explicit sets, and failures returned as errors (never aborts).
// Build: cmake -S kernels -B build-kernels && cmake --build build-kernels --target cpu_forward_test
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "polar/model.h"

static int failures = 0;
#define CHECK(cond, ...)                          \
  do {                                            \
    if (!(cond)) {                                \
      std::printf("FAIL %s:%d: ", __FILE__, __LINE__); \
      std::printf(__VA_ARGS__);                   \
      std::printf("\n");                          \
      failures++;                                 \
    }                                             \
  } while (0)

struct Rng {
  uint32_t s;
  float operator()() {
    s = s * 1664525u + 1013904223u;
    return (float)(s / 4294967296.0 - 0.5);
  }
};

struct Model {
  polar_model_config c{};
  std::map<std::string, std::vector<float>> data;
  std::map<std::string, std::vector<int64_t>> shapes;
  std::vector<polar_weight_desc> descs;
  Rng r{123};
  void put(const std::string& n, std::vector<int64_t> shape, float scale = 0.3f, float base = 0.f) {
    int64_t k = 1;
    for (auto d : shape) k *= d;
    auto& v = data[n];
    v.resize(k);
    for (auto& x : v) x = base + r() * scale;
    shapes[n] = shape;
  }
  void finish() {
    for (auto& kv : data) {
      polar_weight_desc d{};
      d.name = kv.first.c_str();
      d.file = nullptr;
      d.data = kv.second.data();
      d.dtype = POLAR_F32;
      d.nbytes = (int64_t)kv.second.size() * 4;
      d.ndim = (int)shapes[kv.first].size();
      for (int i = 0; i < d.ndim; i++) d.shape[i] = shapes[kv.first][i];
      descs.push_back(d);
    }
  }
};

static Model make(bool llama) {
  Model m;
  polar_model_config& c = m.c;
  c.family = llama ? POLAR_FAMILY_LLAMA : POLAR_FAMILY_OPT;
  c.layers = 2;
  c.hidden = 32;
  c.heads = 4;
  c.kv_heads = llama ? 2 : 4;
  c.head_dim = 8;
  c.ffn = 48;
  c.vocab = 40;
  c.max_positions = 64;
  c.embed_dim = 32;
  c.position_offset = llama ? 0 : 2;
  c.norm_before = 1;
  c.gated = llama ? 1 : 0;
  c.norm_eps = 1e-5f;
  if (llama) {
    c.rope = POLAR_ROPE_LLAMA3;
    c.rope_theta = 10000.f;
    c.rope_factor = 8.f;
    c.rope_low_freq_factor = 1.f;
    c.rope_high_freq_factor = 4.f;
    c.rope_original_max_positions = 16;
  }
  const int64_t H = c.hidden, F = c.ffn, Q = c.heads * c.head_dim, KV = c.kv_heads * c.head_dim;
  m.put("tok_emb.weight", {c.vocab, H}, 1.f);
  m.put("lm_head.weight", {c.vocab, H}, 1.f);
  m.put("final_norm.weight", {H}, 0.5f, 1.f);
  if (!llama) {
    m.put("pos_emb.weight", {c.max_positions + 2, H}, 1.f);
    m.put("final_norm.bias", {H}, 0.2f);
  }
  for (int l = 0; l < c.layers; l++) {
    const std::string p = "layers." + std::to_string(l) + ".";
    m.put(p + "q.weight", {Q, H}, 0.5f);
    m.put(p + "k.weight", {KV, H}, 0.5f);
    m.put(p + "v.weight", {KV, H}, 0.5f);
    m.put(p + "o.weight", {H, Q}, 0.5f);
    m.put(p + "attn_norm.weight", {H}, 0.5f, 1.f);
    m.put(p + "mlp_norm.weight", {H}, 0.5f, 1.f);
    m.put(p + "up.weight", {F, H}, 0.5f);
    m.put(p + "down.weight", {H, F}, 0.5f);
    if (llama) {
      m.put(p + "gate.weight", {F, H}, 0.5f);
    } else {
      for (const char* n : {"q", "k", "v"}) m.put(p + n + ".bias", {Q}, 0.2f);
      m.put(p + "o.bias", {H}, 0.2f);
      m.put(p + "attn_norm.bias", {H}, 0.2f);
      m.put(p + "mlp_norm.bias", {H}, 0.2f);
      m.put(p + "up.bias", {F}, 0.2f);
      m.put(p + "down.bias", {H}, 0.2f);
    }
  }
  m.finish();
  return m;
}

static float maxdiff(const float* a, const float* b, size_t n) {
  float m = 0;
  for (size_t i = 0; i < n; i++) m = std::fmax(m, std::fabs(a[i] - b[i]));
  return m;
}

static int fwd(polar_session* s, std::vector<int32_t> slots, std::vector<int32_t> counts, std::vector<int32_t> toks, float* logits,
               const polar_sparse_layer* sp = nullptr) {
  polar_forward_params p{};
  p.n_inputs = (int)slots.size();
  p.slots = slots.data();
  p.n_tokens = counts.data();
  p.tokens = toks.data();
  p.logits_mode = logits ? POLAR_LOGITS_ALL : POLAR_LOGITS_NONE;
  p.logits = logits;
  p.sparse = sp;
  return polar_forward(s, &p);
}

static void run(bool llama) {
  const char* name = llama ? "llama" : "opt";
  Model m = make(llama);
  polar_model* pm = polar_model_create(&m.c, m.descs.data(), (int)m.descs.size());
  CHECK(pm, "%s: create: %s", name, polar_last_error());
  if (!pm) return;
  const int V = m.c.vocab, N = 20;
  std::vector<int32_t> ids(N);
  for (int i = 0; i < N; i++) ids[i] = (i * 7 + 3) % V;

  polar_session* s = polar_session_create(pm, 2, 32);
  std::vector<float> full((size_t)N * V), step(V);
  CHECK(fwd(s, {0}, {N}, ids, full.data()) == 0, "%s: full: %s", name, polar_last_error());
  // decode in slot 1: prefill 6 then one by one
  std::vector<float> pre(6 * (size_t)V);
  CHECK(fwd(s, {1}, {6}, std::vector<int32_t>(ids.begin(), ids.begin() + 6), pre.data()) == 0, "%s", polar_last_error());
  CHECK(maxdiff(pre.data(), full.data(), pre.size()) < 1e-4f, "%s: prefill rows differ", name);
  for (int t = 6; t < N; t++) {
    CHECK(fwd(s, {1}, {1}, {ids[t]}, step.data()) == 0, "%s", polar_last_error());
    CHECK(maxdiff(step.data(), full.data() + (size_t)t * V, V) < 1e-4f, "%s: decode at %d differs", name, t);
  }
  CHECK(polar_session_length(s, 1) == N, "%s: length", name);

  // mixed-length batch
  polar_session_reset(s, -1);
  std::vector<int32_t> both(ids.begin(), ids.begin() + 5);
  both.insert(both.end(), ids.begin(), ids.begin() + 12);
  std::vector<float> bl(17 * (size_t)V);
  CHECK(fwd(s, {1, 0}, {5, 12}, both, bl.data()) == 0, "%s", polar_last_error());
  CHECK(maxdiff(bl.data(), full.data(), 5 * (size_t)V) < 1e-4f, "%s: batch row 0", name);
  CHECK(maxdiff(bl.data() + 5 * (size_t)V, full.data(), 12 * (size_t)V) < 1e-4f, "%s: batch row 1", name);

  // sparse: k = ffn, all groups (router), and explicit full sets == dense
  Rng r{9};
  const int rank = 4, U = m.c.heads;
  std::vector<float> fc1((size_t)rank * m.c.hidden), fc2((size_t)m.c.ffn * rank), aw((size_t)U * m.c.hidden), ab(U);
  for (auto* v : {&fc1, &fc2, &aw, &ab})
    for (auto& x : *v) x = r();
  std::vector<polar_sparse_layer> sp(m.c.layers);
  std::vector<int32_t> out_idx(m.c.ffn);
  int out_n = -1;
  std::vector<uint8_t> out_heads((size_t)N * m.c.heads);
  sp[1].mlp_mode = POLAR_SPARSE_ROUTER;
  sp[1].mlp_fc1 = fc1.data();
  sp[1].mlp_fc2 = fc2.data();
  sp[1].mlp_rank = rank;
  sp[1].mlp_k = m.c.ffn;
  sp[1].attn_mode = POLAR_SPARSE_ROUTER;
  sp[1].attn_w = aw.data();
  sp[1].attn_b = ab.data();
  sp[1].attn_units = U;
  sp[1].attn_k = m.c.kv_heads;
  sp[1].out_mlp_idx = out_idx.data();
  sp[1].out_mlp_n = &out_n;
  sp[1].out_heads = out_heads.data();
  polar_session_reset(s, -1);
  std::vector<float> sl((size_t)N * V);
  CHECK(fwd(s, {0}, {N}, ids, sl.data(), sp.data()) == 0, "%s: sparse: %s", name, polar_last_error());
  CHECK(maxdiff(sl.data(), full.data(), sl.size()) < 1e-4f, "%s: sparse k=ffn differs from dense", name);
  CHECK(out_n == m.c.ffn, "%s: out_n %d", name, out_n);
  bool all = true;
  for (auto h : out_heads) all = all && h == 1;
  CHECK(all, "%s: not all heads kept", name);
  // k smaller: the output changes and the realised set has k entries, ascending
  sp[1].mlp_k = 10;
  sp[1].attn_k = 1;
  polar_session_reset(s, -1);
  CHECK(fwd(s, {0}, {N}, ids, sl.data(), sp.data()) == 0, "%s: sparse: %s", name, polar_last_error());
  CHECK(maxdiff(sl.data(), full.data(), sl.size()) > 1e-3f, "%s: sparse k=10 equals dense", name);
  CHECK(out_n == 10, "%s: out_n %d", name, out_n);
  for (int i = 1; i < out_n; i++) CHECK(out_idx[i] > out_idx[i - 1], "%s: indices not ascending", name);

  // errors come back as -1 with a message
  polar_session_reset(s, -1);
  CHECK(fwd(s, {2}, {1}, {1}, step.data()) != 0 && std::strstr(polar_last_error(), "slot"), "%s: bad slot accepted", name);
  CHECK(fwd(s, {0}, {1}, {V}, step.data()) != 0 && std::strstr(polar_last_error(), "token"), "%s: bad token accepted", name);
  CHECK(fwd(s, {0}, {33}, std::vector<int32_t>(33, 1), nullptr) != 0 && std::strstr(polar_last_error(), "max_len"), "%s: too long", name);
  CHECK(fwd(s, {0, 0}, {1, 1}, {1, 1}, nullptr) != 0, "%s: duplicate slot accepted", name);
  sp[1].mlp_mode = POLAR_SPARSE_EXPLICIT;
  int32_t dup[2] = {3, 3};
  sp[1].mlp_idx = dup;
  sp[1].mlp_idx_n = 2;
  CHECK(fwd(s, {0}, {1}, {1}, step.data(), sp.data()) != 0 && std::strstr(polar_last_error(), "distinct"), "%s: duplicate index", name);
  CHECK(polar_session_length(s, 0) == 0, "%s: failed calls advanced the cache", name);
  polar_session_free(s);

  // a missing weight and a wrong shape
  std::vector<polar_weight_desc> bad(m.descs.begin() + 1, m.descs.end());
  CHECK(!polar_model_create(&m.c, bad.data(), (int)bad.size()) && std::strstr(polar_last_error(), "received none"), "%s: missing weight", name);
  bad = m.descs;
  bad[0].shape[0] += 1;
  CHECK(!polar_model_create(&m.c, bad.data(), (int)bad.size()) && std::strstr(polar_last_error(), ".shape"), "%s: bad shape", name);
  polar_model_free(pm);
  std::printf("%s: done\n", name);
}

int main() {
  run(false);
  run(true);
  if (failures) {
    std::printf("%d failure(s)\n", failures);
    return 1;
  }
  std::printf("cpu_forward_test: all passed\n");
  return 0;
}
