// Shared parsing of the model and forward requests of the CPU and CUDA glues (see model_request.h).
#include "model_request.h"

namespace polar_native {

void type_error(Napi::Env env, const std::string& msg) { throw Napi::TypeError::New(env, msg); }

double num(const Napi::Object& o, const char* k) {
  Napi::Value v = o.Get(k);
  if (!v.IsNumber()) type_error(o.Env(), std::string("config.") + k + ": expected a number");
  return v.As<Napi::Number>().DoubleValue();
}

void parse_model_description(Napi::Env env, const Napi::Value& config, const Napi::Value& weights, const char* call, ModelDescription& out) {
  if (!config.IsObject() || !weights.IsArray()) type_error(env, std::string(call) + "(config, weights): expected an object and an array");
  Napi::Object o = config.As<Napi::Object>();
  polar_model_config& c = out.config;
  c.family = (polar_family)inum(o, "family");
  c.layers = inum(o, "layers");
  c.hidden = inum(o, "hidden");
  c.heads = inum(o, "heads");
  c.kv_heads = inum(o, "kvHeads");
  c.head_dim = inum(o, "headDim");
  c.ffn = inum(o, "ffn");
  c.vocab = inum(o, "vocab");
  c.max_positions = inum(o, "maxPositions");
  c.embed_dim = inum(o, "embedDim");
  c.position_offset = inum(o, "positionOffset");
  c.norm_before = inum(o, "normBefore");
  c.gated = inum(o, "gated");
  c.norm_eps = (float)num(o, "normEps");
  c.rope = (polar_rope_type)inum(o, "rope");
  c.rope_theta = (float)num(o, "ropeTheta");
  c.rope_factor = (float)num(o, "ropeFactor");
  c.rope_low_freq_factor = (float)num(o, "ropeLowFreqFactor");
  c.rope_high_freq_factor = (float)num(o, "ropeHighFreqFactor");
  c.rope_original_max_positions = inum(o, "ropeOriginalMaxPositions");

  Napi::Array arr = weights.As<Napi::Array>();
  const uint32_t n = arr.Length();
  std::vector<std::string>& names = out.names;
  std::vector<std::string>& files = out.files;
  std::vector<polar_weight_desc>& w = out.weights;
  names.assign(n, std::string());
  files.assign(n, std::string());
  w.assign(n, polar_weight_desc{});
  for (uint32_t i = 0; i < n; i++) {
    Napi::Value e = arr.Get(i);
    if (!e.IsObject()) type_error(env, "weights[" + std::to_string(i) + "]: expected an object");
    Napi::Object d = e.As<Napi::Object>();
    if (!d.Get("name").IsString() || !d.Get("file").IsString() || !d.Get("dtype").IsString() || !d.Get("shape").IsArray())
      type_error(env, "weights[" + std::to_string(i) + "]: expected {name, file, offset, nbytes, dtype, shape}");
    names[i] = d.Get("name").As<Napi::String>().Utf8Value();
    files[i] = d.Get("file").As<Napi::String>().Utf8Value();
    const std::string dt = d.Get("dtype").As<Napi::String>().Utf8Value();
    polar_weight_desc& x = w[i];
    x.name = names[i].c_str();
    x.file = files[i].c_str();
    x.offset = (int64_t)num(d, "offset");
    x.nbytes = (int64_t)num(d, "nbytes");
    x.data = nullptr;
    x.dtype = dt == "F32" ? POLAR_F32 : dt == "F16" ? POLAR_F16 : dt == "BF16" ? POLAR_BF16 : (polar_dtype)-1;
    Napi::Array sh = d.Get("shape").As<Napi::Array>();
    x.ndim = (int)sh.Length();
    if (x.ndim > 4) type_error(env, "weights[" + std::to_string(i) + "].shape: expected at most 4 dimensions");
    for (int j = 0; j < x.ndim; j++) x.shape[j] = (int64_t)sh.Get(j).As<Napi::Number>().DoubleValue();
  }
}

void parse_forward_request(Napi::Env env, const Napi::Object& r, const ForwardDims& d, ForwardRequest& out) {
  Keep& k = out.keep;
  polar_forward_params& p = out.p;
  Napi::Value slotsV = r.Get("slots");
  if (!slotsV.IsTypedArray()) type_error(env, "req.slots: expected an Int32Array");
  const size_t n_in = slotsV.As<Napi::TypedArray>().ElementLength();
  p.n_inputs = (int)n_in;
  p.slots = k.view<int32_t>(env, slotsV, napi_int32_array, n_in, "req.slots", false);
  p.n_tokens = k.view<int32_t>(env, r.Get("counts"), napi_int32_array, n_in, "req.counts", false);
  size_t T = 0;
  for (size_t i = 0; i < n_in; i++) {
    if (p.n_tokens[i] < 1) type_error(env, "req.counts: expected positive counts");
    T += (size_t)p.n_tokens[i];
  }
  p.tokens = k.view<int32_t>(env, r.Get("tokens"), napi_int32_array, T, "req.tokens", false);
  const int mode = r.Get("logitsMode").As<Napi::Number>().Int32Value();
  if (mode < 0 || mode > 2) type_error(env, "req.logitsMode: expected 0, 1 or 2");
  p.logits_mode = (polar_logits_mode)mode;
  const size_t rows = mode == POLAR_LOGITS_ALL ? T : n_in;
  p.logits = mode == POLAR_LOGITS_NONE ? nullptr
                                       : k.view<float>(env, r.Get("logits"), napi_float32_array, rows * (size_t)d.vocab, "req.logits", false);
  Napi::Value capsV = r.Get("captures");
  if (capsV.IsArray()) {
    Napi::Array ca = capsV.As<Napi::Array>();
    if (ca.Length() != (uint32_t)d.layers) type_error(env, "req.captures: expected one entry per layer");
    out.caps.assign(d.layers, polar_layer_capture{});
    for (int l = 0; l < d.layers; l++) {
      Napi::Value e = ca.Get(l);
      if (!e.IsObject()) continue;
      Napi::Object o = e.As<Napi::Object>();
      polar_layer_capture& c = out.caps[l];
      c.attn_in = k.view<float>(env, o.Get("attnIn"), napi_float32_array, T * d.hidden, "capture.attnIn");
      c.mlp_in = k.view<float>(env, o.Get("mlpIn"), napi_float32_array, T * d.hidden, "capture.mlpIn");
      c.mlp_act = k.view<float>(env, o.Get("mlpAct"), napi_float32_array, T * d.ffn, "capture.mlpAct");
      c.head_norm = k.view<float>(env, o.Get("headNorm"), napi_float32_array, T * d.heads, "capture.headNorm");
    }
    p.captures = out.caps.data();
  }
  Napi::Value spV = r.Get("sparse");
  if (spV.IsArray()) {
    Napi::Array sa = spV.As<Napi::Array>();
    if (sa.Length() != (uint32_t)d.layers) type_error(env, "req.sparse: expected one entry per layer");
    out.sparse.assign(d.layers, polar_sparse_layer{});
    for (int l = 0; l < d.layers; l++) {
      Napi::Value e = sa.Get(l);
      if (!e.IsObject()) continue;
      Napi::Object o = e.As<Napi::Object>();
      polar_sparse_layer& s = out.sparse[l];
      auto geti = [&](const char* key) { Napi::Value v = o.Get(key); return v.IsNumber() ? v.As<Napi::Number>().Int32Value() : 0; };
      s.mlp_mode = (polar_sparse_mode)geti("mlpMode");
      s.mlp_rank = geti("mlpRank");
      s.mlp_score = (polar_mlp_score)geti("mlpScore");
      s.mlp_k = geti("mlpK");
      if (s.mlp_mode == POLAR_SPARSE_ROUTER) {
        if (s.mlp_rank < 1) type_error(env, "sparse.mlpRank: expected >= 1");
        s.mlp_fc1 = k.view<float>(env, o.Get("mlpFc1"), napi_float32_array, (size_t)s.mlp_rank * d.hidden, "sparse.mlpFc1", false);
        s.mlp_fc2 = k.view<float>(env, o.Get("mlpFc2"), napi_float32_array, (size_t)s.mlp_rank * d.ffn, "sparse.mlpFc2", false);
      } else if (s.mlp_mode == POLAR_SPARSE_EXPLICIT) {
        Napi::Value iv = o.Get("mlpIdx");
        if (!iv.IsTypedArray()) type_error(env, "sparse.mlpIdx: expected an Int32Array");
        s.mlp_idx_n = (int)iv.As<Napi::TypedArray>().ElementLength();
        s.mlp_idx = k.view<int32_t>(env, iv, napi_int32_array, 0, "sparse.mlpIdx", false);
      }
      s.attn_mode = (polar_sparse_mode)geti("attnMode");
      s.attn_units = geti("attnUnits");
      s.attn_k = geti("attnK");
      if (s.attn_mode == POLAR_SPARSE_ROUTER) {
        if (s.attn_units < 1) type_error(env, "sparse.attnUnits: expected >= 1");
        s.attn_w = k.view<float>(env, o.Get("attnW"), napi_float32_array, (size_t)s.attn_units * d.hidden, "sparse.attnW", false);
        s.attn_b = k.view<float>(env, o.Get("attnB"), napi_float32_array, (size_t)s.attn_units, "sparse.attnB");
      } else if (s.attn_mode == POLAR_SPARSE_EXPLICIT) {
        s.attn_mask = k.view<uint8_t>(env, o.Get("attnMask"), napi_uint8_array, T * d.heads, "sparse.attnMask", false);
      }
      s.out_mlp_idx = k.view<int32_t>(env, o.Get("outMlpIdx"), napi_int32_array, (size_t)d.ffn, "sparse.outMlpIdx");
      s.out_mlp_n = k.view<int32_t>(env, o.Get("outMlpN"), napi_int32_array, 1, "sparse.outMlpN");
      s.out_heads = k.view<uint8_t>(env, o.Get("outHeads"), napi_uint8_array, T * d.heads, "sparse.outHeads");
    }
    p.sparse = out.sparse.data();
  }
}

}  // namespace polar_native
