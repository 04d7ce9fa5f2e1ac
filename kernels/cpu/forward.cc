// Model forward of the CPU backend (polar/model.h): weight mapping and checks, sessions with their fp32
// KV cache, and the batched causal forward of OPT and LLaMA, dense or sparse. The products go through
// polar_linear / polar_linear_t (weights widened on the fly), the rest is plain fp32 code threaded with
// polar_parallel_for where it pays.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cmath>
#include <cstring>
#include <new>
#include <stdexcept>
#include <unordered_map>

#include "forward_internal.h"
#include "polar/gemm.h"
#include "threadpool.h"

using namespace polar::fwd;

polar_model::~polar_model() {
  for (auto& mp : maps)
    if (mp.base && mp.size) munmap(mp.base, mp.size);
}

namespace polar {
namespace fwd {

float f16_to_f32(uint16_t h) {
#if defined(__F16C__)
  return _cvtsh_ss(h);
#else
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ffu, u;
  if (exp == 0x1f) {
    u = sign | 0x7f800000u | (man << 13);
  } else if (exp != 0) {
    u = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    u = sign;
  } else {
    int e = -1;
    do {
      ++e;
      man <<= 1;
    } while ((man & 0x400u) == 0);
    u = sign | (uint32_t(112 - e) << 23) | ((man & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

void widen(const void* src, polar_dtype dt, int64_t n, float* dst) {
  const uint8_t* s = (const uint8_t*)src;
  if (dt == POLAR_F32) {
    std::memcpy(dst, s, (size_t)n * 4);
    return;
  }
  for (int64_t i = 0; i < n; i++) {
    uint16_t b;
    std::memcpy(&b, s + 2 * i, 2);
    dst[i] = dt == POLAR_F16 ? f16_to_f32(b) : bf16_to_f32(b);
  }
}

}  // namespace fwd
}  // namespace polar

namespace {

// Failure inside the forward: the message is already in polar_last_error().
struct KernelFailure {};

void check(int rc) {
  if (rc != 0) throw KernelFailure{};
}

[[noreturn]] __attribute__((format(printf, 1, 2))) void fail(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  polar_set_error("%s", buf);
  throw KernelFailure{};
}

const char* dtype_name(polar_dtype d) { return d == POLAR_F32 ? "F32" : d == POLAR_F16 ? "F16" : d == POLAR_BF16 ? "BF16" : "?"; }

std::string shape_str(const int64_t* s, int n) {
  std::string r = "[";
  for (int i = 0; i < n; i++) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

class Builder {
 public:
  Builder(polar_model* m, const polar_weight_desc* w, int n) : m_(m) {
    for (int i = 0; i < n; i++) {
      if (!w[i].name) fail("weight %d: name is NULL", i);
      byname_[w[i].name] = &w[i];
    }
  }

  bool has(const std::string& name) const { return byname_.count(name) != 0; }

  Tensor get(const std::string& name, std::vector<int64_t> shape, bool required = true) {
    auto it = byname_.find(name);
    if (it == byname_.end()) {
      if (!required) return Tensor{};
      polar_set_error("weight \"%s\": expected a tensor of shape %s, received none", name.c_str(),
                      shape_str(shape.data(), (int)shape.size()).c_str());
      throw KernelFailure{};
    }
    const polar_weight_desc& d = *it->second;
    if (d.dtype != POLAR_F32 && d.dtype != POLAR_F16 && d.dtype != POLAR_BF16) {
      polar_set_error("weight \"%s\".dtype: expected F32, F16 or BF16, received %d", name.c_str(), (int)d.dtype);
      throw KernelFailure{};
    }
    bool same = d.ndim == (int)shape.size();
    for (int i = 0; same && i < d.ndim; i++) same = d.shape[i] == shape[i];
    if (!same) {
      polar_set_error("weight \"%s\".shape: expected %s, received %s", name.c_str(), shape_str(shape.data(), (int)shape.size()).c_str(),
                      shape_str(d.shape, std::max(0, std::min(d.ndim, 4))).c_str());
      throw KernelFailure{};
    }
    int64_t numel = 1;
    for (int64_t s : shape) numel *= s;
    const int64_t want = numel * (int64_t)polar_dtype_size(d.dtype);
    if (d.nbytes != want) {
      polar_set_error("weight \"%s\": expected %lld bytes for %s %s, received %lld", name.c_str(), (long long)want, dtype_name(d.dtype),
                      shape_str(shape.data(), (int)shape.size()).c_str(), (long long)d.nbytes);
      throw KernelFailure{};
    }
    Tensor t;
    t.dt = d.dtype;
    t.shape = shape;
    if (d.file) {
      const Mapping& mp = map(d.file);
      if (d.offset < 0 || (uint64_t)(d.offset + d.nbytes) > (uint64_t)mp.size) {
        polar_set_error("%s: weight \"%s\": expected bytes [%lld, %lld) within the file (%lld bytes)", d.file, name.c_str(),
                        (long long)d.offset, (long long)(d.offset + d.nbytes), (long long)mp.size);
        throw KernelFailure{};
      }
      t.p = (const uint8_t*)mp.base + d.offset;
    } else {
      if (!d.data) {
        polar_set_error("weight \"%s\": expected a file or a data pointer, received neither", name.c_str());
        throw KernelFailure{};
      }
      t.p = d.data;
    }
    return t;
  }

  std::vector<float> vec(const std::string& name, int64_t n, bool required = true) {
    Tensor t = get(name, {n}, required);
    std::vector<float> v;
    if (!t.present()) return v;
    v.resize(n);
    widen(t.p, t.dt, n, v.data());
    return v;
  }

 private:
  const Mapping& map(const char* path) {
    for (auto& mp : m_->maps)
      if (mp.path == path) return mp;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      polar_set_error("%s: cannot open weights file: %s", path, std::strerror(errno));
      throw KernelFailure{};
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
      polar_set_error("%s: cannot stat weights file: %s", path, std::strerror(errno));
      close(fd);
      throw KernelFailure{};
    }
    Mapping mp;
    mp.path = path;
    mp.size = (size_t)st.st_size;
    if (mp.size) {
      void* p = mmap(nullptr, mp.size, PROT_READ, MAP_SHARED, fd, 0);
      if (p == MAP_FAILED) {
        polar_set_error("%s: cannot map weights file: %s", path, std::strerror(errno));
        close(fd);
        throw KernelFailure{};
      }
      mp.base = p;
    }
    close(fd);
    m_->maps.push_back(mp);
    return m_->maps.back();
  }

  polar_model* m_;
  std::unordered_map<std::string, const polar_weight_desc*> byname_;
};

void build(polar_model* m, const polar_model_config& c, const polar_weight_desc* w, int n) {
  if (const std::string e = polar::model_config_error(c); !e.empty()) fail("%s", e.c_str());
  m->cfg = c;
  Builder b(m, w, n);
  const int64_t H = c.hidden, F = c.ffn, V = c.vocab, QD = (int64_t)c.heads * c.head_dim, KD = (int64_t)c.kv_heads * c.head_dim;
  if (c.family == POLAR_FAMILY_OPT) {
    const int64_t E = c.embed_dim;
    m->tok_emb = b.get("tok_emb.weight", {V, E});
    m->pos_emb = b.get("pos_emb.weight", {c.max_positions + (int64_t)c.position_offset, H});
    if (E != H) {
      m->proj_in = b.get("proj_in.weight", {H, E});
      m->proj_out = b.get("proj_out.weight", {E, H});
    }
    if (c.norm_before) {
      m->final_norm_w = b.vec("final_norm.weight", H);
      m->final_norm_b = b.vec("final_norm.bias", H);
    }
    m->lm_head = b.get("lm_head.weight", {V, E});
  } else {
    m->tok_emb = b.get("tok_emb.weight", {V, H});
    m->final_norm_w = b.vec("final_norm.weight", H);
    m->lm_head = b.get("lm_head.weight", {V, H});
    rope_inv_freq(c, m->inv_freq);
  }
  const bool opt = c.family == POLAR_FAMILY_OPT;
  for (int l = 0; l < c.layers; l++) {
    auto L = std::make_unique<Layer>();
    const std::string p = "layers." + std::to_string(l) + ".";
    L->q = b.get(p + "q.weight", {QD, H});
    L->k = b.get(p + "k.weight", {KD, H});
    L->v = b.get(p + "v.weight", {KD, H});
    L->o = b.get(p + "o.weight", {H, QD});
    L->qb = b.get(p + "q.bias", {QD}, false);
    L->kb = b.get(p + "k.bias", {KD}, false);
    L->vb = b.get(p + "v.bias", {KD}, false);
    L->ob = b.get(p + "o.bias", {H}, false);
    L->attn_norm_w = b.vec(p + "attn_norm.weight", H);
    L->mlp_norm_w = b.vec(p + "mlp_norm.weight", H);
    if (opt) {
      L->attn_norm_b = b.vec(p + "attn_norm.bias", H);
      L->mlp_norm_b = b.vec(p + "mlp_norm.bias", H);
    }
    if (c.gated) L->gate = b.get(p + "gate.weight", {F, H});
    L->up = b.get(p + "up.weight", {F, H});
    L->down = b.get(p + "down.weight", {H, F});
    if (c.gated) L->gateb = b.get(p + "gate.bias", {F}, false);
    L->upb = b.get(p + "up.bias", {F}, false);
    L->downb = b.get(p + "down.bias", {H}, false);
    m->layers.push_back(std::move(L));
  }
}

// Y[m, n] (+)= act(X[m, k] . W^T + bias), W [n, k] as stored.
void linear(int m, int n, int k, const float* x, int64_t ldx, const Tensor& w, const Tensor& bias, float* y, int64_t ldy,
            int accumulate = 0, int act = 0, const int32_t* rows = nullptr) {
  polar_linear_params p{};
  p.m = m;
  p.n = n;
  p.k = k;
  p.x = x;
  p.ldx = ldx;
  p.w = w.p;
  p.wdt = w.dt;
  p.ldw = k;
  p.rows = rows;
  p.bias = bias.p;
  p.bdt = bias.present() ? bias.dt : POLAR_F32;
  p.y = y;
  p.ldy = ldy;
  p.accumulate = accumulate;
  p.act = act;
  check(polar_linear(&p));
}

template <class F>
void rows_parallel(int rows, F&& f) {
  polar_parallel_for(rows, [&](int64_t b, int64_t e) { f((int)b, (int)(e - b)); }, 8);
}

void norm_in(const polar_model_config& c, const std::vector<float>& w, const std::vector<float>& bias, const float* x, int T,
             float* y) {
  const int H = c.hidden;
  rows_parallel(T, [&](int r0, int nr) {
    if (c.family == POLAR_FAMILY_LLAMA)
      rms_norm_rows(x + (int64_t)r0 * H, H, nr, H, w.data(), c.norm_eps, y + (int64_t)r0 * H, H);
    else
      layer_norm_rows(x + (int64_t)r0 * H, H, nr, H, w.data(), bias.empty() ? nullptr : bias.data(), c.norm_eps,
                      y + (int64_t)r0 * H, H);
  });
}

struct Sel {
  bool mlp_sparse = false;
  std::vector<int32_t> idx;
  bool attn_sparse = false;
  std::vector<uint8_t> mask;
};

void select_layer(const polar_session* s, const polar_sparse_layer& sp, const float* xn, int T, Sel& sel) {
  const polar_model_config& c = s->m->cfg;
  const int H = c.heads;
  sel = Sel{};
  if (sp.mlp_mode == POLAR_SPARSE_ROUTER) {
    if (!sp.mlp_fc1 || !sp.mlp_fc2 || sp.mlp_rank < 1) fail("sparse MLP router: expected fc1, fc2 and rank >= 1");
    if (sp.mlp_k < 0 || sp.mlp_k > c.ffn) fail("sparse MLP k: expected 0..ffn (%d), received %d", c.ffn, sp.mlp_k);
    check(mlp_router_topk(xn, T, c.hidden, c.ffn, sp, sel.idx));
    sel.mlp_sparse = true;
  } else if (sp.mlp_mode == POLAR_SPARSE_EXPLICIT) {
    if (sp.mlp_idx_n < 0 || sp.mlp_idx_n > c.ffn || (sp.mlp_idx_n && !sp.mlp_idx))
      fail("sparse MLP indices: expected 0..ffn (%d) indices, received %d", c.ffn, sp.mlp_idx_n);
    sel.idx.assign(sp.mlp_idx, sp.mlp_idx + sp.mlp_idx_n);
    std::sort(sel.idx.begin(), sel.idx.end());
    for (size_t i = 0; i < sel.idx.size(); i++)
      if (sel.idx[i] < 0 || sel.idx[i] >= c.ffn || (i && sel.idx[i] == sel.idx[i - 1]))
        fail("sparse MLP indices: expected distinct integers in 0..%d, received %d", c.ffn - 1, sel.idx[i]);
    sel.mlp_sparse = true;
  } else if (sp.mlp_mode != POLAR_SPARSE_DENSE) {
    fail("sparse MLP mode: expected DENSE, ROUTER or EXPLICIT, received %d", (int)sp.mlp_mode);
  }
  if (sp.attn_mode == POLAR_SPARSE_ROUTER) {
    if (!sp.attn_w || (sp.attn_units != c.heads && sp.attn_units != c.kv_heads))
      fail("sparse head router: expected weights with heads (%d) or kv_heads (%d) outputs", c.heads, c.kv_heads);
    sel.mask.resize((size_t)T * H);
    check(head_router_select(xn, T, c, sp, sel.mask.data()));
    sel.attn_sparse = true;
  } else if (sp.attn_mode == POLAR_SPARSE_EXPLICIT) {
    if (!sp.attn_mask) fail("sparse heads: expected a [tokens, heads] mask, received NULL");
    sel.mask.resize((size_t)T * H);
    for (size_t i = 0; i < sel.mask.size(); i++) sel.mask[i] = sp.attn_mask[i] ? 1 : 0;
    sel.attn_sparse = true;
  } else if (sp.attn_mode != POLAR_SPARSE_DENSE) {
    fail("sparse attention mode: expected DENSE, ROUTER or EXPLICIT, received %d", (int)sp.attn_mode);
  }
}

void forward_impl(polar_session* s, const polar_forward_params* p) {
  polar_model* m = s->m;
  const polar_model_config& c = m->cfg;
  const int H = c.hidden, hd = c.head_dim, NH = c.heads, KV = c.kv_heads, F = c.ffn, E = c.embed_dim;
  const int QD = NH * hd, KD = KV * hd;
  const bool opt = c.family == POLAR_FAMILY_OPT;

  // ---- argument checks (the TypeScript layer checks first; these keep the C API safe on its own) ----
  if (!p || p->n_inputs < 1 || !p->slots || !p->n_tokens || !p->tokens) fail("forward: expected at least one input");
  std::vector<char> used(s->max_seqs, 0);
  int64_t T64 = 0;
  for (int i = 0; i < p->n_inputs; i++) {
    const int sl = p->slots[i], n = p->n_tokens[i];
    if (sl < 0 || sl >= s->max_seqs) fail("forward: inputs[%d].slot: expected 0..%d, received %d", i, s->max_seqs - 1, sl);
    if (used[sl]) fail("forward: inputs[%d].slot: expected a slot not used by another input, received %d", i, sl);
    used[sl] = 1;
    if (n < 1) fail("forward: inputs[%d].tokens: expected at least one token, received %d", i, n);
    if ((int64_t)s->len[sl] + n > s->max_len)
      fail("forward: inputs[%d]: expected at most max_len (%d) tokens in the slot, received %lld", i, s->max_len,
           (long long)s->len[sl] + n);
    T64 += n;
  }
  const int T = (int)T64;
  std::vector<int32_t> tok_slot(T), tok_pos(T), last_row(p->n_inputs);
  {
    int t = 0;
    for (int i = 0; i < p->n_inputs; i++) {
      for (int j = 0; j < p->n_tokens[i]; j++, t++) {
        tok_slot[t] = p->slots[i];
        tok_pos[t] = s->len[p->slots[i]] + j;
        if (p->tokens[t] < 0 || p->tokens[t] >= c.vocab)
          fail("forward: token %d: expected an id in 0..%d, received %d", t, c.vocab - 1, p->tokens[t]);
      }
      last_row[i] = t - 1;
    }
  }
  if (p->logits_mode != POLAR_LOGITS_NONE && !p->logits) fail("forward: expected a logits buffer");

  // ---- embeddings ----
  std::vector<float> x((size_t)T * H);
  if (opt) {
    std::vector<float> e;
    float* eb = x.data();
    if (m->proj_in.present()) {
      e.resize((size_t)T * E);
      eb = e.data();
    }
    for (int t = 0; t < T; t++)
      widen((const uint8_t*)m->tok_emb.p + (size_t)p->tokens[t] * E * polar_dtype_size(m->tok_emb.dt), m->tok_emb.dt, E,
            eb + (size_t)t * E);
    if (m->proj_in.present()) linear(T, H, E, e.data(), E, m->proj_in, Tensor{}, x.data(), H);
    std::vector<float> pe(H);
    for (int t = 0; t < T; t++) {
      widen((const uint8_t*)m->pos_emb.p + (size_t)(tok_pos[t] + c.position_offset) * H * polar_dtype_size(m->pos_emb.dt),
            m->pos_emb.dt, H, pe.data());
      float* xr = x.data() + (size_t)t * H;
      for (int i = 0; i < H; i++) xr[i] += pe[i];
    }
  } else {
    for (int t = 0; t < T; t++)
      widen((const uint8_t*)m->tok_emb.p + (size_t)p->tokens[t] * H * polar_dtype_size(m->tok_emb.dt), m->tok_emb.dt, H,
            x.data() + (size_t)t * H);
  }

  std::vector<float> xn((size_t)T * H), q((size_t)T * QD), k((size_t)T * KD), v((size_t)T * KD), att((size_t)T * QD);
  std::vector<float> act((size_t)T * F), gate(c.gated ? (size_t)T * F : 0);
  Sel sel;

  for (int l = 0; l < c.layers; l++) {
    Layer& L = *m->layers[l];
    const polar_layer_capture* cap = p->captures ? &p->captures[l] : nullptr;
    const polar_sparse_layer* sp = p->sparse ? &p->sparse[l] : nullptr;

    // ---- attention block ----
    if (opt && !c.norm_before)
      std::copy(x.begin(), x.end(), xn.begin());
    else
      norm_in(c, L.attn_norm_w, L.attn_norm_b, x.data(), T, xn.data());
    if (cap && cap->attn_in) std::copy(xn.begin(), xn.end(), cap->attn_in);

    if (sp)
      select_layer(s, *sp, xn.data(), T, sel);
    else
      sel = Sel{};

    linear(T, QD, H, xn.data(), H, L.q, L.qb, q.data(), QD);
    linear(T, KD, H, xn.data(), H, L.k, L.kb, k.data(), KD);
    linear(T, KD, H, xn.data(), H, L.v, L.vb, v.data(), KD);
    if (!opt) {
      const int half = hd / 2;
      rows_parallel(T, [&](int r0, int nr) {
        for (int t = r0; t < r0 + nr; t++) {
          const float* cs = s->rope_cos.data() + (size_t)tok_pos[t] * half;
          const float* sn = s->rope_sin.data() + (size_t)tok_pos[t] * half;
          rope_apply(q.data() + (size_t)t * QD, NH, hd, cs, sn);
          rope_apply(k.data() + (size_t)t * KD, KV, hd, cs, sn);
        }
      });
    }
    for (int t = 0; t < T; t++)
      for (int g = 0; g < KV; g++) {
        const size_t off = s->kv_index(tok_slot[t], l, g) + (size_t)tok_pos[t] * hd;
        std::memcpy(s->kcache.data() + off, k.data() + (size_t)t * KD + (size_t)g * hd, hd * 4);
        std::memcpy(s->vcache.data() + off, v.data() + (size_t)t * KD + (size_t)g * hd, hd * 4);
      }
    AttnArgs aa{};
    aa.s = s;
    aa.layer = l;
    aa.T = T;
    aa.tok_slot = tok_slot.data();
    aa.tok_pos = tok_pos.data();
    aa.q = q.data();
    aa.out = att.data();
    aa.mask = sel.attn_sparse ? sel.mask.data() : nullptr;
    aa.head_norm = cap ? cap->head_norm : nullptr;
    attention(aa);
    if (sp && sp->out_heads) {
      if (sel.attn_sparse)
        std::copy(sel.mask.begin(), sel.mask.end(), sp->out_heads);
      else
        std::fill(sp->out_heads, sp->out_heads + (size_t)T * NH, 1);
    }
    // x += att . Wo^T + bo
    linear(T, H, QD, att.data(), QD, L.o, L.ob, x.data(), H, 1);
    if (opt && !c.norm_before) norm_in(c, L.attn_norm_w, L.attn_norm_b, x.data(), T, x.data());

    // ---- MLP block ----
    if (opt && !c.norm_before)
      std::copy(x.begin(), x.end(), xn.begin());
    else
      norm_in(c, L.mlp_norm_w, L.mlp_norm_b, x.data(), T, xn.data());
    if (cap && cap->mlp_in) std::copy(xn.begin(), xn.end(), cap->mlp_in);

    if (!sel.mlp_sparse) {
      if (c.gated) {
        linear(T, F, H, xn.data(), H, L.gate, L.gateb, gate.data(), F);
        linear(T, F, H, xn.data(), H, L.up, L.upb, act.data(), F);
        const size_t n = (size_t)T * F;
        for (size_t i = 0; i < n; i++) {
          const float g = gate[i];
          act[i] = g / (1.0f + std::exp(-g)) * act[i];
        }
      } else {
        linear(T, F, H, xn.data(), H, L.up, L.upb, act.data(), F, 0, 1);
      }
      if (cap && cap->mlp_act) std::copy(act.begin(), act.end(), cap->mlp_act);
      linear(T, H, F, act.data(), F, L.down, L.downb, x.data(), H, 1);
      if (sp && sp->out_mlp_idx) {
        for (int i = 0; i < F; i++) sp->out_mlp_idx[i] = i;
        if (sp->out_mlp_n) *sp->out_mlp_n = F;
      }
    } else {
      const int K = (int)sel.idx.size();
      if (K > 0) {
        if (c.gated) {
          linear(T, K, H, xn.data(), H, L.gate, L.gateb, gate.data(), K, 0, 0, sel.idx.data());
          linear(T, K, H, xn.data(), H, L.up, L.upb, act.data(), K, 0, 0, sel.idx.data());
          const size_t n = (size_t)T * K;
          for (size_t i = 0; i < n; i++) {
            const float g = gate[i];
            act[i] = g / (1.0f + std::exp(-g)) * act[i];
          }
        } else {
          linear(T, K, H, xn.data(), H, L.up, L.upb, act.data(), K, 0, 1, sel.idx.data());
        }
        ensure_down_t(c, L);
        polar_linear_t_params pt{};
        pt.m = T;
        pt.n = H;
        pt.k = K;
        pt.x = act.data();
        pt.ldx = K;
        pt.w = L.down_t();
        pt.wdt = L.down.dt;
        pt.ldw = H;
        pt.rows = sel.idx.data();
        pt.bias = L.downb.p;
        pt.bdt = L.downb.present() ? L.downb.dt : POLAR_F32;
        pt.y = x.data();
        pt.ldy = H;
        pt.accumulate = 1;
        check(polar_linear_t(&pt));
      } else if (L.downb.present()) {
        std::vector<float> bd(H);
        widen(L.downb.p, L.downb.dt, H, bd.data());
        for (int t = 0; t < T; t++)
          for (int i = 0; i < H; i++) x[(size_t)t * H + i] += bd[i];
      }
      if (cap && cap->mlp_act) {
        std::fill(cap->mlp_act, cap->mlp_act + (size_t)T * F, 0.f);
        for (int t = 0; t < T; t++)
          for (int j = 0; j < K; j++) cap->mlp_act[(size_t)t * F + sel.idx[j]] = act[(size_t)t * K + j];
      }
      if (sp->out_mlp_idx) {
        std::copy(sel.idx.begin(), sel.idx.end(), sp->out_mlp_idx);
        if (sp->out_mlp_n) *sp->out_mlp_n = K;
      }
    }
    if (opt && !c.norm_before) norm_in(c, L.mlp_norm_w, L.mlp_norm_b, x.data(), T, x.data());
  }

  // ---- head ----
  if (p->logits_mode != POLAR_LOGITS_NONE) {
    int R = T;
    const float* hrows = x.data();
    std::vector<float> gathered;
    if (p->logits_mode == POLAR_LOGITS_LAST) {
      R = p->n_inputs;
      gathered.resize((size_t)R * H);
      for (int i = 0; i < R; i++) std::copy_n(x.data() + (size_t)last_row[i] * H, H, gathered.data() + (size_t)i * H);
      hrows = gathered.data();
    }
    std::vector<float> hn((size_t)R * H);
    if (!m->final_norm_w.empty())
      norm_in(c, m->final_norm_w, m->final_norm_b, hrows, R, hn.data());
    else
      std::copy_n(hrows, (size_t)R * H, hn.data());
    const float* top = hn.data();
    std::vector<float> po;
    int D = H;
    if (m->proj_out.present()) {
      po.resize((size_t)R * E);
      linear(R, E, H, hn.data(), H, m->proj_out, Tensor{}, po.data(), E);
      top = po.data();
      D = E;
    }
    linear(R, c.vocab, D, top, D, m->lm_head, Tensor{}, p->logits, c.vocab);
  }
  for (int i = 0; i < p->n_inputs; i++) s->len[p->slots[i]] += p->n_tokens[i];
}

}  // namespace

extern "C" {

polar_model* polar_model_create(const polar_model_config* cfg, const polar_weight_desc* weights, int n_weights) {
  polar_model* m = nullptr;
  try {
    if (!cfg || (n_weights > 0 && !weights)) {
      polar_set_error("polar_model_create: expected a config and weights, received NULL");
      return nullptr;
    }
    m = new polar_model();
    build(m, *cfg, weights, n_weights);
    return m;
  } catch (const KernelFailure&) {
  } catch (const std::bad_alloc&) {
    polar_set_error("polar_model_create: out of memory");
  } catch (const std::exception& e) {
    polar_set_error("polar_model_create: %s", e.what());
  }
  delete m;
  return nullptr;
}

void polar_model_free(polar_model* m) { delete m; }

const polar_model_config* polar_model_get_config(const polar_model* m) { return m ? &m->cfg : nullptr; }

polar_session* polar_session_create(polar_model* m, int max_seqs, int max_len) {
  polar_session* s = nullptr;
  try {
    if (!m) {
      polar_set_error("polar_session_create: expected a model, received NULL");
      return nullptr;
    }
    const polar_model_config& c = m->cfg;
    if (max_seqs < 1) fail("session maxSeqs: expected an integer >= 1, received %d", max_seqs);
    if (max_len < 1) fail("session maxLen: expected an integer >= 1, received %d", max_len);
    if (c.family == POLAR_FAMILY_OPT && max_len > c.max_positions)
      fail("session maxLen: expected at most %d (the model's learned positions), received %d", c.max_positions, max_len);
    s = new polar_session();
    s->m = m;
    s->max_seqs = max_seqs;
    s->max_len = max_len;
    s->len.assign(max_seqs, 0);
    const size_t n = (size_t)max_seqs * c.layers * c.kv_heads * (size_t)max_len * c.head_dim;
    s->kcache.resize(n);
    s->vcache.resize(n);
    if (c.family == POLAR_FAMILY_LLAMA) rope_tables(m->inv_freq, max_len, s->rope_cos, s->rope_sin);
    return s;
  } catch (const KernelFailure&) {
  } catch (const std::bad_alloc&) {
    polar_set_error("polar_session_create: out of memory for the KV cache (maxSeqs %d x maxLen %d)", max_seqs, max_len);
  } catch (const std::exception& e) {
    polar_set_error("polar_session_create: %s", e.what());
  }
  delete s;
  return nullptr;
}

void polar_session_free(polar_session* s) { delete s; }

int polar_session_length(const polar_session* s, int slot) {
  if (!s || slot < 0 || slot >= s->max_seqs) return -1;
  return s->len[slot];
}

int polar_session_reset(polar_session* s, int slot) {
  if (!s) return polar_set_error("polar_session_reset: expected a session, received NULL");
  if (slot >= s->max_seqs) return polar_set_error("session reset: slot: expected 0..%d, received %d", s->max_seqs - 1, slot);
  if (slot < 0)
    std::fill(s->len.begin(), s->len.end(), 0);
  else
    s->len[slot] = 0;
  return 0;
}

int polar_forward(polar_session* s, const polar_forward_params* p) {
  try {
    if (!s) return polar_set_error("polar_forward: expected a session, received NULL");
    forward_impl(s, p);
    return 0;
  } catch (const KernelFailure&) {
    return -1;
  } catch (const std::bad_alloc&) {
    return polar_set_error("forward: out of memory");
  } catch (const std::exception& e) {
    return polar_set_error("forward: %s", e.what());
  }
}

}  // extern "C"
