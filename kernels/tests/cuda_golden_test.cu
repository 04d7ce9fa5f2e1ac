// Full-model logits of the CPU and CUDA backends against the Hugging Face goldens of the shared models, without
// Node: each model comes as a "pack" (bench/gpu/pack-goldens.ts writes them: the runtime's model config and
// weight descriptors, and the golden input_ids + logits), so this runs on the GPU machine, which has no Node.
//
// usage: cuda_golden_test [--root DIR] [--require-cuda] [--device N] PACK...
//   --root DIR      repository root: base of the packs' "root" paths (default: the current directory)
//   --require-cuda  count a missing/unusable GPU as a failure instead of skipping the CUDA checks
//   --device N      CUDA device ordinal (default 0)
// Make the packs here:   node bin/run-ts.js bench/gpu/pack-goldens.ts .gpu/packs data/models/tiny-opt ...
// Build:                 cmake --build build-cuda --target cuda_golden_test   (POLAR_CUDA=ON)
// On the GPU machine:    bash bench/gpu/device_goldens.sh .gpu/packs   (runs this binary, log under $OUT)
//
// Per pack (model), with the golden's B sequences of S tokens run as one call of B slots, all logits:
//   cpu.logits_vs_golden    max |CPU - golden| (fp32 compute)                               <= 1e-3
//   cuda.logits_vs_golden   max |CUDA - golden|                           <= 0.05 fp16 / 0.25 bf16 GPU weights
//   cuda.logits_vs_cpu      max |CUDA - CPU|                                           same bound
//   cuda.argmax_vs_golden   fraction of positions whose CUDA argmax equals the golden's      >= 0.98
//   cuda.decode_vs_full     KV-cache decode (prefill 5 tokens, then 1 token per step for every slot)
//                           vs the CUDA full forward, max |diff| over the decoded positions   same bound
// (the H100 measured 0.006 for tiny-opt and 0.06 for tiny-llama against the goldens; the printed values are
// there to tighten the bounds). The CPU checks always run; without a usable GPU the CUDA ones print
// "SKIP cuda: <reason>". Lines: "PASS|FAIL <model> <check> <value> bound=<bound>", last "N passed, M failed";
// exit status 1 on any failure, 2 on bad usage.
//
// Pack format: see the header of bench/gpu/pack-goldens.ts (paths "root <p>" are relative to --root,
// "pack <p>" to the pack's folder).
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "polar/cuda.h"
#include "polar/cuda_model.h"
#include "polar/model.h"

static int g_pass = 0, g_fail = 0;

static void report(bool ok, const std::string& model, const char* check, const char* value_name, double value, double bound,
                   const char* rel = "<=") {
  (ok ? g_pass : g_fail)++;
  std::printf("%s %s %s %s=%.4g bound%s%.4g\n", ok ? "PASS" : "FAIL", model.c_str(), check, value_name, value, rel, bound);
  std::fflush(stdout);
}
static void report_error(const std::string& model, const char* check, const std::string& msg) {
  g_fail++;
  std::printf("FAIL %s %s error: %s\n", model.c_str(), check, msg.c_str());
  std::fflush(stdout);
}

// ---- the pack ----------------------------------------------------------------------------------------
struct PackWeight {
  std::string name, file;
  int64_t offset = 0, nbytes = 0;
  polar_dtype dtype = POLAR_F32;
  int ndim = 0;
  int64_t shape[4] = {0, 0, 0, 0};
};

struct Pack {
  std::string path, name = "?", dtype;
  polar_model_config cfg{};
  std::vector<PackWeight> weights;
  std::string golden;
  int B = 0, S = 0, V = 0;
  std::vector<int32_t> ids;   // [B, S]
  std::vector<float> logits;  // [B, S, V]
};

static std::string dir_of(const std::string& p) {
  const size_t k = p.find_last_of('/');
  return k == std::string::npos ? std::string(".") : p.substr(0, k);
}

static bool resolve_path(const std::string& base, const std::string& rel, const std::string& root, const std::string& packdir,
                         std::string& out) {
  if (base == "root") out = root + "/" + rel;
  else if (base == "pack") out = packdir + "/" + rel;
  else return false;
  return true;
}

static int64_t file_size(const std::string& f) {
  FILE* fp = std::fopen(f.c_str(), "rb");
  if (!fp) return -1;
  std::fseek(fp, 0, SEEK_END);
  const int64_t n = (int64_t)std::ftell(fp);
  std::fclose(fp);
  return n;
}

// Returns "" on success, else the reason.
static std::string load_pack(const std::string& path, const std::string& root, Pack& pk) {
  pk.path = path;
  FILE* fp = std::fopen(path.c_str(), "r");
  if (!fp) return path + ": cannot open (" + std::strerror(errno) + ")";
  const std::string packdir = dir_of(path);
  char line[4096];
  int lineno = 0, version = 0, ncfg = 0;
  bool have_golden = false;
  std::string err;
  auto bad = [&](const std::string& what) {
    if (err.empty()) err = path + ":" + std::to_string(lineno) + ": " + what;
  };
  while (err.empty() && std::fgets(line, sizeof line, fp)) {
    lineno++;
    const size_t len = std::strlen(line);
    if (len == sizeof line - 1 && line[len - 1] != '\n') {
      bad("line longer than 4095 characters");
      break;
    }
    char kw[64] = "";
    if (std::sscanf(line, "%63s", kw) != 1 || kw[0] == '#') continue;
    const std::string k = kw;
    if (k == "polar-golden-pack") {
      if (std::sscanf(line, "%*s %d", &version) != 1 || version != 1) bad("expected format version 1");
    } else if (version != 1) {
      bad("expected the first record to be \"polar-golden-pack 1\" (is this a pack written by bench/gpu/pack-goldens.ts?)");
    } else if (k == "model") {
      char n[256];
      if (std::sscanf(line, "%*s %255s", n) != 1) bad("model: expected a name");
      else pk.name = n;
    } else if (k == "dtype") {
      char d[16];
      if (std::sscanf(line, "%*s %15s", d) != 1) bad("dtype: expected F16, BF16 or F32");
      else pk.dtype = d;
    } else if (k == "config") {
      char key[64];
      char val[64];
      if (std::sscanf(line, "%*s %63s %63s", key, val) != 2) {
        bad("config: expected <key> <value>");
        continue;
      }
      char* end = nullptr;
      const double v = std::strtod(val, &end);
      if (end == val || *end) {
        bad(std::string("config ") + key + ": expected a number, received " + val);
        continue;
      }
      polar_model_config& c = pk.cfg;
      const std::string s = key;
      const int iv = (int)v;
      ncfg++;
      if (s == "family") c.family = (polar_family)iv;
      else if (s == "layers") c.layers = iv;
      else if (s == "hidden") c.hidden = iv;
      else if (s == "heads") c.heads = iv;
      else if (s == "kvHeads") c.kv_heads = iv;
      else if (s == "headDim") c.head_dim = iv;
      else if (s == "ffn") c.ffn = iv;
      else if (s == "vocab") c.vocab = iv;
      else if (s == "maxPositions") c.max_positions = iv;
      else if (s == "embedDim") c.embed_dim = iv;
      else if (s == "positionOffset") c.position_offset = iv;
      else if (s == "normBefore") c.norm_before = iv;
      else if (s == "gated") c.gated = iv;
      else if (s == "normEps") c.norm_eps = (float)v;  // as the glue: (float) of the JS number
      else if (s == "rope") c.rope = (polar_rope_type)iv;
      else if (s == "ropeTheta") c.rope_theta = (float)v;
      else if (s == "ropeFactor") c.rope_factor = (float)v;
      else if (s == "ropeLowFreqFactor") c.rope_low_freq_factor = (float)v;
      else if (s == "ropeHighFreqFactor") c.rope_high_freq_factor = (float)v;
      else if (s == "ropeOriginalMaxPositions") c.rope_original_max_positions = iv;
      else bad("config: unknown key " + s);
    } else if (k == "file") {
      char base[16], rel[1024];
      long long bytes = 0;
      int parts = 0;
      if (std::sscanf(line, "%*s %15s %1023s %lld %d", base, rel, &bytes, &parts) != 4) {
        bad("file: expected <base> <path> <bytes> <parts>");
        continue;
      }
      std::string f;
      if (!resolve_path(base, rel, root, packdir, f)) {
        bad(std::string("file: expected base root or pack, received ") + base);
        continue;
      }
      const int64_t have = file_size(f);
      if (have < 0) {
        if (parts > 0)
          bad("weights file " + f + " is missing: it was packed as " + std::to_string(parts) + " parts " + rel + ".part0.." +
              std::to_string(parts - 1) + " (bench/gpu/device_goldens.sh joins them once all are there)");
        else
          bad("weights file " + f + " is missing" + (std::string(base) == "root" ? " (is --root the repository root?)" : ""));
      } else if (have != bytes) {
        bad("weights file " + f + ": expected " + std::to_string(bytes) + " bytes, found " + std::to_string(have) +
            " (truncated or another version)");
      }
    } else if (k == "weight") {
      char name[256], base[16], rel[1024], dt[16];
      long long off = 0, nb = 0, d[4] = {0, 0, 0, 0};
      int ndim = 0;
      const int got = std::sscanf(line, "%*s %255s %15s %1023s %lld %lld %15s %d %lld %lld %lld %lld", name, base, rel, &off, &nb, dt,
                                  &ndim, &d[0], &d[1], &d[2], &d[3]);
      if (got < 7 || ndim < 0 || ndim > 4 || got != 7 + ndim) {
        bad("weight: expected <name> <base> <path> <offset> <nbytes> <dtype> <ndim> <dims...>");
        continue;
      }
      PackWeight w;
      w.name = name;
      if (!resolve_path(base, rel, root, packdir, w.file)) {
        bad(std::string("weight: expected base root or pack, received ") + base);
        continue;
      }
      w.offset = off;
      w.nbytes = nb;
      const std::string sd = dt;
      if (sd == "F32") w.dtype = POLAR_F32;
      else if (sd == "F16") w.dtype = POLAR_F16;
      else if (sd == "BF16") w.dtype = POLAR_BF16;
      else bad("weight " + w.name + ": dtype expected F32, F16 or BF16, received " + sd);
      w.ndim = ndim;
      for (int i = 0; i < ndim; ++i) w.shape[i] = d[i];
      pk.weights.push_back(w);
    } else if (k == "golden") {
      char base[16], rel[1024];
      if (std::sscanf(line, "%*s %15s %1023s %d %d %d", base, rel, &pk.B, &pk.S, &pk.V) != 5 || pk.B < 1 || pk.S < 1 || pk.V < 1) {
        bad("golden: expected <base> <path> <B> <S> <vocab>");
        continue;
      }
      if (!resolve_path(base, rel, root, packdir, pk.golden)) bad(std::string("golden: expected base root or pack, received ") + base);
      have_golden = true;
    } else {
      bad("unknown record " + k);
    }
  }
  std::fclose(fp);
  if (!err.empty()) return err;
  if (version != 1) return path + ": empty, or not a pack (no \"polar-golden-pack 1\" record)";
  if (ncfg != 20) return path + ": expected the 20 config records of NativeModelConfig, found " + std::to_string(ncfg);
  if (pk.weights.empty()) return path + ": no weight records";
  if (!have_golden) return path + ": no golden record";
  if (pk.V != pk.cfg.vocab) return path + ": golden vocab " + std::to_string(pk.V) + " != config vocab " + std::to_string(pk.cfg.vocab);

  const size_t n_ids = (size_t)pk.B * pk.S, n_logits = n_ids * pk.V;
  const int64_t want = (int64_t)(n_ids * 4 + n_logits * 4);
  const int64_t have = file_size(pk.golden);
  if (have < 0) return pk.golden + ": cannot open the golden (" + std::strerror(errno) + ")";
  if (have != want)
    return pk.golden + ": expected " + std::to_string(want) + " bytes (int32 ids [" + std::to_string(pk.B) + "," + std::to_string(pk.S) +
           "] + fp32 logits [.., " + std::to_string(pk.V) + "]), found " + std::to_string(have);
  pk.ids.resize(n_ids);
  pk.logits.resize(n_logits);
  FILE* g = std::fopen(pk.golden.c_str(), "rb");
  if (!g) return pk.golden + ": cannot open";
  const bool ok = std::fread(pk.ids.data(), 4, n_ids, g) == n_ids && std::fread(pk.logits.data(), 4, n_logits, g) == n_logits;
  std::fclose(g);
  if (!ok) return pk.golden + ": short read";
  for (int32_t t : pk.ids)
    if (t < 0 || t >= pk.V) return pk.golden + ": token id " + std::to_string(t) + " out of the vocabulary";
  return "";
}

// ---- comparisons -------------------------------------------------------------------------------------
// max |a - b| over n values; NaN/Inf anywhere gives +inf
static double max_abs(const float* a, const float* b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = std::fabs((double)a[i] - (double)b[i]);
    if (!(d <= m)) m = std::isfinite(d) ? d : INFINITY;
  }
  return m;
}

static int argmax(const float* x, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

static double argmax_agreement(const float* a, const float* b, int rows, int V) {
  int agree = 0;
  for (int r = 0; r < rows; ++r) agree += argmax(a + (size_t)r * V, V) == argmax(b + (size_t)r * V, V);
  return (double)agree / rows;
}

static double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// ---- one model ---------------------------------------------------------------------------------------
struct Descs {
  std::vector<polar_weight_desc> d;
  explicit Descs(const Pack& pk) {
    for (const PackWeight& w : pk.weights) {
      polar_weight_desc x{};
      x.name = w.name.c_str();
      x.file = w.file.c_str();
      x.offset = w.offset;
      x.nbytes = w.nbytes;
      x.data = nullptr;
      x.dtype = w.dtype;
      x.ndim = w.ndim;
      for (int i = 0; i < 4; ++i) x.shape[i] = w.shape[i];
      d.push_back(x);
    }
  }
};

// The full-forward request: slot b gets sequence b (all S tokens), logits of every token.
struct FullCall {
  std::vector<int32_t> slots, counts;
  polar_forward_params p{};
  FullCall(const Pack& pk, float* logits) : slots(pk.B), counts(pk.B, pk.S) {
    for (int b = 0; b < pk.B; ++b) slots[b] = b;
    p.n_inputs = pk.B;
    p.slots = slots.data();
    p.n_tokens = counts.data();
    p.tokens = pk.ids.data();
    p.logits_mode = POLAR_LOGITS_ALL;
    p.logits = logits;
  }
};

static bool run_cpu(const Pack& pk, std::vector<float>& out) {
  const size_t n = (size_t)pk.B * pk.S * pk.V;
  Descs ds(pk);
  const auto t0 = std::chrono::steady_clock::now();
  polar_model* m = polar_model_create(&pk.cfg, ds.d.data(), (int)ds.d.size());
  if (!m) {
    report_error(pk.name, "cpu.model_create", polar_last_error());
    return false;
  }
  polar_session* s = polar_session_create(m, pk.B, pk.S);
  if (!s) {
    report_error(pk.name, "cpu.session_create", polar_last_error());
    polar_model_free(m);
    return false;
  }
  out.assign(n, NAN);
  FullCall call(pk, out.data());
  const int rc = polar_forward(s, &call.p);
  if (rc != 0) report_error(pk.name, "cpu.forward", polar_last_error());
  polar_session_free(s);
  polar_model_free(m);
  if (rc != 0) return false;
  const double err = max_abs(out.data(), pk.logits.data(), n);
  std::printf("# %s cpu: forward of %d x %d tokens in %.2f s (model load included); argmax agreement with the golden %.4f\n",
              pk.name.c_str(), pk.B, pk.S, seconds_since(t0), argmax_agreement(out.data(), pk.logits.data(), pk.B * pk.S, pk.V));
  report(err <= 1e-3, pk.name, "cpu.logits_vs_golden", "max_abs", err, 1e-3);
  return true;
}

static void run_cuda(const Pack& pk, const std::vector<float>* cpu, int device) {
  const size_t n = (size_t)pk.B * pk.S * pk.V;
  const int V = pk.V;
  Descs ds(pk);
  polar_cuda_model_options o{};
  o.device = device;
  o.dtype = POLAR_F16;  // fp32 checkpoints only; fp16/bf16 weights stay as stored
  const auto t0 = std::chrono::steady_clock::now();
  polar_cuda_model* m = polar_cuda_model_create(&pk.cfg, ds.d.data(), (int)ds.d.size(), &o);
  if (!m) {
    report_error(pk.name, "cuda.model_create", polar_last_error());
    return;
  }
  const polar_dtype gdt = polar_cuda_model_dtype(m);
  const double bound = gdt == POLAR_BF16 ? 0.25 : 0.05;
  polar_cuda_session* s = polar_cuda_session_create(m, pk.B, pk.S);
  if (!s) {
    report_error(pk.name, "cuda.session_create", polar_last_error());
    polar_cuda_model_free(m);
    return;
  }
  std::vector<float> full(n, NAN);
  FullCall call(pk, full.data());
  if (polar_cuda_forward(s, &call.p) != 0) {
    report_error(pk.name, "cuda.forward", polar_last_error());
    polar_cuda_session_free(s);
    polar_cuda_model_free(m);
    return;
  }
  std::printf("# %s cuda: %s weights on the GPU (%.1f MB), forward of %d x %d tokens in %.2f s (upload included)\n", pk.name.c_str(),
              gdt == POLAR_BF16 ? "bf16" : "fp16", polar_cuda_model_bytes(m) / 1e6, pk.B, pk.S, seconds_since(t0));
  const double eg = max_abs(full.data(), pk.logits.data(), n);
  report(eg <= bound, pk.name, "cuda.logits_vs_golden", "max_abs", eg, bound);
  if (cpu) {
    const double ec = max_abs(full.data(), cpu->data(), n);
    report(ec <= bound, pk.name, "cuda.logits_vs_cpu", "max_abs", ec, bound);
  }
  const double agree = argmax_agreement(full.data(), pk.logits.data(), pk.B * pk.S, V);
  report(agree >= 0.98, pk.name, "cuda.argmax_vs_golden", "agree", agree, 0.98, ">=");

  // KV-cache decode: prefill P tokens of every slot (no logits), then one token per slot per step
  const int P = pk.S > 5 ? 5 : pk.S - 1;
  double ed = 0;
  std::string derr;
  if (polar_cuda_session_reset(s, -1) != 0) derr = std::string("reset: ") + polar_last_error();
  std::vector<int32_t> slots(pk.B), counts(pk.B), toks;
  for (int b = 0; b < pk.B; ++b) slots[b] = b;
  if (derr.empty() && P > 0) {
    toks.clear();
    for (int b = 0; b < pk.B; ++b) {
      counts[b] = P;
      toks.insert(toks.end(), pk.ids.begin() + (size_t)b * pk.S, pk.ids.begin() + (size_t)b * pk.S + P);
    }
    polar_forward_params p{};
    p.n_inputs = pk.B;
    p.slots = slots.data();
    p.n_tokens = counts.data();
    p.tokens = toks.data();
    p.logits_mode = POLAR_LOGITS_NONE;
    if (polar_cuda_forward(s, &p) != 0) derr = std::string("prefill: ") + polar_last_error();
  }
  std::vector<float> step((size_t)pk.B * V);
  for (int j = P; derr.empty() && j < pk.S; ++j) {
    toks.assign(pk.B, 0);
    for (int b = 0; b < pk.B; ++b) {
      counts[b] = 1;
      toks[b] = pk.ids[(size_t)b * pk.S + j];
    }
    std::fill(step.begin(), step.end(), NAN);
    polar_forward_params p{};
    p.n_inputs = pk.B;
    p.slots = slots.data();
    p.n_tokens = counts.data();
    p.tokens = toks.data();
    p.logits_mode = POLAR_LOGITS_LAST;
    p.logits = step.data();
    if (polar_cuda_forward(s, &p) != 0) {
      derr = "decode step at position " + std::to_string(j) + ": " + polar_last_error();
      break;
    }
    for (int b = 0; b < pk.B; ++b) {
      const double e = max_abs(step.data() + (size_t)b * V, full.data() + ((size_t)b * pk.S + j) * V, V);
      if (!(e <= ed)) ed = e;
    }
  }
  if (derr.empty())
    for (int b = 0; b < pk.B; ++b)
      if (polar_cuda_session_length(s, b) != pk.S)
        derr = "slot " + std::to_string(b) + " length " + std::to_string(polar_cuda_session_length(s, b)) + " after decode, expected " +
               std::to_string(pk.S);
  if (derr.empty()) report(ed <= bound, pk.name, "cuda.decode_vs_full", "max_abs", ed, bound);
  else report_error(pk.name, "cuda.decode_vs_full", derr);
  polar_cuda_session_free(s);
  polar_cuda_model_free(m);
}

int main(int argc, char** argv) {
  std::string root = ".";
  bool require_cuda = false;
  int device = 0;
  std::vector<std::string> packs;
  const char* usage = "usage: cuda_golden_test [--root DIR] [--require-cuda] [--device N] PACK...";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--root" && i + 1 < argc) root = argv[++i];
    else if (a == "--device" && i + 1 < argc) device = std::atoi(argv[++i]);
    else if (a == "--require-cuda") require_cuda = true;
    else if (a == "-h" || a == "--help") {
      std::printf("%s\n", usage);
      return 0;
    } else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr, "cuda_golden_test: unknown option %s\n%s\n", a.c_str(), usage);
      return 2;
    } else packs.push_back(a);
  }
  if (packs.empty()) {
    std::fprintf(stderr, "%s\n", usage);
    return 2;
  }
  while (root.size() > 1 && root.back() == '/') root.pop_back();

  std::string no_cuda;
  polar_cuda_device_info info{};
  if (polar_cuda_get_device_info(device, &info) != 0) no_cuda = polar_last_error();
  if (no_cuda.empty()) std::printf("# device %d: %s (sm_%d%d, %d SMs)\n", device, info.name, info.major, info.minor, info.sms);
  else {
    std::printf("SKIP cuda: %s\n", no_cuda.c_str());
    if (require_cuda) {
      g_fail++;
      std::printf("FAIL cuda.device --require-cuda given and no usable CUDA device\n");
    }
  }
  std::printf("# cpu threads: %d, root: %s\n", polar_cpu_threads(), root.c_str());
  std::fflush(stdout);

  for (const std::string& path : packs) {
    Pack pk;
    const std::string err = load_pack(path, root, pk);
    if (!err.empty()) {
      report_error(pk.name == "?" ? path : pk.name, "pack", err);
      continue;
    }
    std::printf("# %s: %s, %d layers, hidden %d, heads %d (kv %d), ffn %d, vocab %d, weights %s; golden [%d, %d]\n", pk.name.c_str(),
                pk.cfg.family == POLAR_FAMILY_OPT ? "OPT" : "LLaMA", pk.cfg.layers, pk.cfg.hidden, pk.cfg.heads, pk.cfg.kv_heads,
                pk.cfg.ffn, pk.cfg.vocab, pk.dtype.c_str(), pk.B, pk.S);
    std::vector<float> cpu;
    const bool have_cpu = run_cpu(pk, cpu);
    if (no_cuda.empty()) run_cuda(pk, have_cpu ? &cpu : nullptr, device);
    else std::printf("SKIP %s cuda: %s\n", pk.name.c_str(), no_cuda.c_str());
  }
  std::printf("%d passed, %d failed\n", g_pass, g_fail);
  return g_fail ? 1 : 0;
}
