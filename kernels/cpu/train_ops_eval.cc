// Router-training kernels (polar/train_ops.h), part 2: evaluation counts of a router on held-out rows:
// confusion counts at a logit threshold and recall of the top-k units per row for a list of k.
// Each row is ordered once by a stable LSD radix sort on order-preserving integer keys (4 passes of 8
// bits: ~5 us for 1024 units, against ~90 us for 64 nth_element partitions), descending by logit with
// ties in ascending unit index; the hits of every k then come from one prefix walk.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "polar/train_ops.h"
#include "threadpool.h"

namespace {
constexpr int64_t kRowChunk = 32;  // rows per fixed reduction chunk

// Ascending key order = descending logit order; NaN sorts last, -0 equals +0.
inline uint32_t desc_key(float v) {
  if (std::isnan(v)) return 0xffffffffu;
  v += 0.0f;  // -0 -> +0
  uint32_t u;
  std::memcpy(&u, &v, 4);
  u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);  // ascending float order
  return ~u;
}

// Stable LSD radix sort of idx by key (both permuted; tmp arrays of the same length).
void radix_sort(uint32_t* key, int32_t* idx, uint32_t* key_tmp, int32_t* idx_tmp, int64_t n) {
  uint32_t* k0 = key;
  int32_t* i0 = idx;
  uint32_t* k1 = key_tmp;
  int32_t* i1 = idx_tmp;
  for (int shift = 0; shift < 32; shift += 8) {
    uint32_t count[257] = {0};
    for (int64_t j = 0; j < n; ++j) ++count[((k0[j] >> shift) & 0xffu) + 1];
    bool same = false;  // every key has the same digit here: the pass would move nothing
    for (int b = 1; b <= 256 && !same; ++b) same = count[b] == uint32_t(n);
    if (same) continue;
    for (int b = 0; b < 256; ++b) count[b + 1] += count[b];
    for (int64_t j = 0; j < n; ++j) {
      const uint32_t d = (k0[j] >> shift) & 0xffu;
      const uint32_t at = count[d]++;
      k1[at] = k0[j];
      i1[at] = i0[j];
    }
    std::swap(k0, k1);
    std::swap(i0, i1);
  }
  if (i0 != idx) {
    std::memcpy(idx, i0, size_t(n) * sizeof(int32_t));
    std::memcpy(key, k0, size_t(n) * sizeof(uint32_t));
  }
}
}  // namespace

extern "C" int polar_router_eval(const polar_router_eval_params* p) {
  if (!p || p->rows < 0 || p->cols <= 0 || p->cols > INT32_MAX || !p->logits || p->ld < p->cols ||
      (!p->labels && !p->bits) || (p->bits && p->bit_stride * 8 < p->cols) || p->nk < 0 ||
      (p->nk > 0 && (!p->ks || !p->hits || !p->recall_sum)) || !p->tp || !p->fp || !p->fn || !p->positives ||
      !p->rows_with_pos)
    return polar_set_error("polar_router_eval: bad parameters");
  for (int j = 0; j < p->nk; ++j) {
    if (p->ks[j] < 1 || p->ks[j] > p->cols || (j > 0 && p->ks[j] < p->ks[j - 1]))
      return polar_set_error("polar_router_eval: ks[%d] = %d: expected ascending values in 1..%lld", j, p->ks[j],
                             (long long)p->cols);
  }
  const int64_t rows = p->rows, cols = p->cols;
  const int nk = p->nk;
  const int64_t nchunks = (rows + kRowChunk - 1) / kRowChunk;
  // Per chunk: tp, fp, fn, positives, rows_with_pos, hits[nk] (int64) and recall_sum[nk] (double).
  const int64_t ni = 5 + nk;
  std::vector<int64_t> icnt(size_t(nchunks * ni), 0);
  std::vector<double> rsum(size_t(nchunks * (nk > 0 ? nk : 1)), 0.0);

  polar_parallel_for(nchunks, [&](int64_t cb, int64_t ce) {
    std::vector<uint32_t> key(static_cast<size_t>(cols)), key_tmp(static_cast<size_t>(cols));
    std::vector<int32_t> idx(static_cast<size_t>(cols)), idx_tmp(static_cast<size_t>(cols));
    std::vector<uint8_t> lab(static_cast<size_t>(cols));
    for (int64_t c = cb; c < ce; ++c) {
      int64_t* ic = icnt.data() + c * ni;
      double* rs = rsum.data() + c * (nk > 0 ? nk : 1);
      const int64_t r0 = c * kRowChunk, r1 = std::min(rows, r0 + kRowChunk);
      for (int64_t r = r0; r < r1; ++r) {
        const float* z = p->logits + r * p->ld;
        int64_t npos = 0;
        if (p->bits) {
          const uint8_t* b = p->bits + r * p->bit_stride;
          for (int64_t j = 0; j < cols; ++j) lab[size_t(j)] = (b[j >> 3] >> (j & 7)) & 1u;
        } else {
          const float* y = p->labels + r * cols;
          for (int64_t j = 0; j < cols; ++j) lab[size_t(j)] = y[j] > 0.5f ? 1 : 0;
        }
        int64_t tp = 0, fp = 0;
        for (int64_t j = 0; j < cols; ++j) {
          const bool on = z[j] > p->threshold;
          const uint8_t y = lab[size_t(j)];
          npos += y;
          tp += on & y;
          fp += on & !y;
        }
        ic[0] += tp;
        ic[1] += fp;
        ic[2] += npos - tp;
        ic[3] += npos;
        if (npos > 0) ic[4] += 1;
        if (nk == 0) continue;
        for (int64_t j = 0; j < cols; ++j) {
          key[size_t(j)] = desc_key(z[j]);
          idx[size_t(j)] = int32_t(j);
        }
        radix_sort(key.data(), idx.data(), key_tmp.data(), idx_tmp.data(), cols);
        int64_t t = 0, hits = 0;
        for (int q = 0; q < nk; ++q) {
          const int64_t k = p->ks[q];
          for (; t < k; ++t) hits += lab[size_t(idx[size_t(t)])];
          ic[5 + q] += hits;
          if (npos > 0) rs[q] += double(hits) / double(npos);
        }
      }
    }
  }, 1);

  for (int64_t c = 0; c < nchunks; ++c) {
    const int64_t* ic = icnt.data() + c * ni;
    *p->tp += ic[0];
    *p->fp += ic[1];
    *p->fn += ic[2];
    *p->positives += ic[3];
    *p->rows_with_pos += ic[4];
    for (int q = 0; q < nk; ++q) {
      p->hits[q] += ic[5 + q];
      p->recall_sum[q] += rsum[size_t(c * nk + q)];
    }
  }
  return 0;
}
