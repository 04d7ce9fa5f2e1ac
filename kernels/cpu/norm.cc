// LayerNorm (OPT) and RMSNorm (LLaMA) over rows, fp32 with double accumulation (rows are short; the
// accumulation order then hardly matters and the result tracks torch's fp32 reference closely).
#include <cmath>

#include "forward_internal.h"

namespace polar {
namespace fwd {

void layer_norm_rows(const float* x, int64_t ldx, int rows, int n, const float* w, const float* b, float eps,
                     float* y, int64_t ldy) {
  for (int r = 0; r < rows; r++) {
    const float* xr = x + r * ldx;
    float* yr = y + r * ldy;
    double s = 0;
    for (int i = 0; i < n; i++) s += xr[i];
    const double mean = s / n;
    double v = 0;
    for (int i = 0; i < n; i++) {
      const double d = xr[i] - mean;
      v += d * d;
    }
    const float rstd = (float)(1.0 / std::sqrt(v / n + (double)eps));
    const float fm = (float)mean;
    for (int i = 0; i < n; i++) yr[i] = (xr[i] - fm) * rstd * w[i] + (b ? b[i] : 0.f);
  }
}

void rms_norm_rows(const float* x, int64_t ldx, int rows, int n, const float* w, float eps, float* y, int64_t ldy) {
  for (int r = 0; r < rows; r++) {
    const float* xr = x + r * ldx;
    float* yr = y + r * ldy;
    double s = 0;
    for (int i = 0; i < n; i++) s += (double)xr[i] * xr[i];
    const float rs = (float)(1.0 / std::sqrt(s / n + (double)eps));
    for (int i = 0; i < n; i++) yr[i] = w[i] * (xr[i] * rs);
  }
}

}  // namespace fwd
}  // namespace polar
