// Host-only checks of the warp-specialized kernel's stream-K grid (sel_gemm_ws.cuh), runnable without a GPU:
// the partition invariants its shared-tile scheme relies on, and the grid choices the fourteenth session measured.
//
// The kernel gives CTA b of G the steps [b * total / G, (b + 1) * total / G) of all (tile, K chunk) steps and
// walks them tile by tile. A tile that several CTAs share is finished by its first CTA (the one with its chunk
// 0), which waits for a count of the others on a flag indexed by its own CTA number, then adds their partials,
// each stored in the storing CTA's one workspace slot. That is only right if, for every grid the planner can
// choose: a CTA stores at most one partial (one slot each) and it is its first segment; a CTA finishes at most
// one shared tile (one flag each) and it is its last segment; the tile's other CTAs are exactly first + 1 .. last
// of sk_cta_of; and the grid fits the resident CTAs (the first CTA spins on the others).
#include <cstdio>
#include <string>
#include <vector>

#include "../cuda/sel_gemm_ws.cuh"

using namespace polar_cuda;

static int g_pass = 0, g_fail = 0;
static void check(bool ok, const std::string& what) {
  if (ok) {
    ++g_pass;
  } else {
    ++g_fail;
    std::printf("FAIL %s\n", what.c_str());
  }
}

// The segments of CTA b, as the kernel's seg_at walks them.
struct Seg {
  int64_t t, cb, nloc;
};
static std::vector<Seg> segments(int64_t total, int nc, int G, int b) {
  std::vector<Seg> out;
  const int64_t s_begin = (int64_t)b * total / G, s_end = (int64_t)(b + 1) * total / G;
  for (int64_t step = s_begin; step < s_end;) {
    Seg q;
    q.t = step / nc;
    q.cb = step - q.t * nc;
    q.nloc = std::min(s_end, (q.t + 1) * nc) - step;
    out.push_back(q);
    step += q.nloc;
  }
  return out;
}

// Every invariant above for one grid; returns whether some tile is shared.
static bool check_grid(int tiles, int nc, int G) {
  const int64_t total = (int64_t)tiles * nc;
  const std::string at = "tiles=" + std::to_string(tiles) + " nc=" + std::to_string(nc) + " G=" + std::to_string(G);
  std::vector<int> stored_for(tiles, 0);  // partials stored per tile
  std::vector<int> finisher(tiles, -1);   // the CTA that finishes a shared tile
  bool shared = false, ok = true;
  for (int b = 0; b < G; ++b) {
    const std::vector<Seg> segs = segments(total, nc, G, b);
    int partials = 0, owners = 0;
    for (size_t i = 0; i < segs.size(); ++i) {
      const Seg& q = segs[i];
      for (int64_t s = q.t * nc + q.cb; s < q.t * nc + q.cb + q.nloc; ++s) ok &= sk_cta_of(s, total, G) == b;
      if (q.cb > 0) {  // a later part of its tile: stored for the tile's first CTA
        ++partials;
        ok &= i == 0;
        ++stored_for[q.t];
        shared = true;
      } else if (q.nloc < nc) {  // the first part of a tile that continues in later CTAs
        ++owners;
        ok &= i + 1 == segs.size();
        ok &= finisher[q.t] == -1;
        finisher[q.t] = b;
        ok &= sk_cta_of(q.t * nc, total, G) == b;
        shared = true;
      }
    }
    ok &= partials <= 1 && owners <= 1;
  }
  for (int t = 0; t < tiles; ++t) {
    const int first = sk_cta_of((int64_t)t * nc, total, G), last = sk_cta_of((int64_t)t * nc + nc - 1, total, G);
    // the count the first CTA waits for is last - first, and exactly that many partials are stored for the tile
    ok &= stored_for[t] == last - first;
    ok &= (last > first) == (finisher[t] == first);
  }
  bool split = false;
  sk_cost(total, nc, G, SK_READ, &split);
  ok &= split == shared;
  check(ok, "stream-K partition invariants, " + at);
  return shared;
}

int main() {
  // every grid sk_grid considers (one CTA per tile, s per tile, one per slot) over small and model-sized shapes
  const std::vector<int> tile_counts = {1, 2, 3, 5, 7, 13, 15, 29, 32, 64, 72, 128, 144, 288};
  const std::vector<int> chunk_counts = {1, 2, 3, 4, 5, 8, 14, 26, 30, 58, 64, 128, 144, 256, 288, 576};
  for (int slots : {132, 114, 78, 16}) {
    for (int tiles : tile_counts)
      for (int nc : chunk_counts) {
        const int64_t total = (int64_t)tiles * nc;
        const int maxg = (int)std::max<int64_t>(1, std::min<int64_t>(slots, (total + 3) / 4));
        for (int s = 1; (int64_t)tiles * s <= maxg; ++s) check_grid(tiles, nc, tiles * s);
        if (maxg % tiles) check_grid(tiles, nc, maxg);
        for (int req : {0, 1, 6, 40}) {
          bool split = false;
          int cost = 0;
          const int G = sk_grid(tiles, nc, slots, req, &split, &cost);
          // the first CTAs of shared tiles spin on the others: every CTA must be resident at once
          check(G >= 1 && G <= slots && cost >= (total + G - 1) / G,
                "sk_grid within the slots, tiles=" + std::to_string(tiles) + " nc=" + std::to_string(nc) + " slots=" +
                    std::to_string(slots) + " read=" + std::to_string(req) + " -> G=" + std::to_string(G));
        }
      }
  }
  // The grids the H200 measurements chose (fourteenth session, docs/benchmarks.md; 132 SMs, one CTA each). A change
  // of SK_STORE / SK_READ or of sk_cost that moves one of these wants a new measurement.
  struct Want {
    const char* point;
    int tiles, nc, G;
    bool split;
  };
  const Want wants[] = {
      {"OPT-66B batch 256 / 25%, fc1 and fc2 (132 CTAs: 0.088 ms against 0.102 on 72)", 72, 144, 132, true},
      {"OPT-66B batch 256 / 10%, fc2 (132 CTAs: 0.0447 ms against 0.0517 on 72)", 72, 58, 132, true},
      {"OPT-66B batch 256 / 5%, fc2 (72 CTAs: 0.0319 ms against 0.0337 on 132)", 72, 30, 72, false},
      {"OPT-6.7B batch 256 / 100%, fc1 (one CTA per tile)", 128, 64, 128, false},
      {"OPT-6.7B batch 256 / 100%, fc2 (4 CTAs per tile)", 32, 256, 128, true},
  };
  for (const Want& w : wants) {
    bool split = false;
    int cost = 0;
    const int G = sk_grid(w.tiles, w.nc, 132, 0, &split, &cost);
    check(G == w.G && split == w.split, std::string("sk_grid plan of ") + w.point + ": G=" + std::to_string(G));
  }
  // where clusters of the tile's CTAs measured faster than stream-K's grid, gemm_plan's comparison (cluster steps
  // + WS_CLUSTER_STEPS against sk_grid's cost) must keep them: OPT-66B fc1 at batch 256 / 5% (15 tiles of 144
  // chunks, clusters of 8: 0.028 ms; stream-K on 120 CTAs 0.047) and at 10% (29 tiles, clusters of 4: 0.039 against
  // 0.054); OPT-6.7B at 25% (32 tiles of 64 chunks, clusters of 3: 0.029 against 0.034 on 128 CTAs)
  const int clusters[][3] = {{15, 144, 8}, {29, 144, 4}, {32, 64, 3}};
  for (const auto& c : clusters) {
    bool split = false;
    int cost = 0;
    sk_grid(c[0], c[1], 132, 0, &split, &cost);
    const int cl = (c[1] + c[2] - 1) / c[2] + WS_CLUSTER_STEPS;
    check(cl < cost, "clusters of " + std::to_string(c[2]) + " cheaper than stream-K for " + std::to_string(c[0]) +
                         " tiles of " + std::to_string(c[1]) + " chunks: " + std::to_string(cl) + " vs " + std::to_string(cost));
  }
  std::printf("%d passed, %d failed\n", g_pass, g_fail);
  return g_fail ? 1 : 0;
}
