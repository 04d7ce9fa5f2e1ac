// Device properties and the error-reporting fallback of the CUDA backend.
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "common.cuh"

// The CPU library (kernels/cpu/common.cc) defines these; the weak copies let the CUDA library and its
// test executables link on their own. When both are linked, the strong definitions win.
namespace {
thread_local char g_cuda_last_error[1024] = "";
}
extern "C" __attribute__((weak)) const char* polar_last_error(void) { return g_cuda_last_error; }
extern "C" __attribute__((weak)) int polar_set_error(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(g_cuda_last_error, sizeof g_cuda_last_error, fmt, ap);
  va_end(ap);
  return -1;
}

namespace polar_cuda {

bool wgmma_kernels_built();  // sel_gemm.cu

namespace {
std::mutex g_mu;
DevProps g_props[64];
bool g_have[64];
int g_wgmma[64];  // 0 unknown, 1 yes, 2 no
}  // namespace

int dev_props(DevProps* out) {
  int dev = 0;
  POLAR_CU(cudaGetDevice(&dev));
  if (dev < 0 || dev >= 64) return polar_set_error("CUDA device %d: expected an ordinal below 64", dev);
  std::lock_guard<std::mutex> lk(g_mu);
  if (!g_have[dev]) {
    cudaDeviceProp dp;  // one query (the name is not an attribute), cached below
    POLAR_CU(cudaGetDeviceProperties(&dp, dev));
    DevProps p{};
    p.device = dev;
    p.sms = dp.multiProcessorCount;
    p.major = dp.major;
    p.minor = dp.minor;
    p.l2 = dp.l2CacheSize;
    p.smem_optin = (int)dp.sharedMemPerBlockOptin;
    p.h200 = std::strstr(dp.name, "H200") != nullptr;
    if (p.major < 8)
      return polar_set_error("CUDA device %d has compute capability %d.%d: the CUDA kernels need 8.0 or newer",
                             dev, p.major, p.minor);
    g_props[dev] = p;
    g_have[dev] = true;
  }
  *out = g_props[dev];
  return 0;
}

namespace {
std::mutex g_occ_mu;
struct OccEntry {
  int dev;
  const void* fn;
  int threads, smem, cluster, occ;  // cluster 0: CTAs per SM; > 0: clusters of (1, cluster, 1) on the GPU
};
OccEntry g_occ[256];
int g_nocc = 0;

int occupancy_of(const void* fn, int threads, int smem, int cluster, int* occ) {
  DevProps p;
  if (dev_props(&p)) return -1;
  std::lock_guard<std::mutex> lk(g_occ_mu);
  for (int i = 0; i < g_nocc; ++i) {
    const OccEntry& e = g_occ[i];
    if (e.dev == p.device && e.fn == fn && e.threads == threads && e.smem == smem && e.cluster == cluster) {
      *occ = e.occ;
      return 0;
    }
  }
  int o = 0;
  if (smem > 48 * 1024) {  // the largest dynamic size this kernel can take next to its static shared memory
    cudaFuncAttributes fa;
    POLAR_CU(cudaFuncGetAttributes(&fa, fn));
    const int most = p.smem_optin - (int)fa.sharedSizeBytes;
    if (smem > most) {
      if (g_nocc < 256) g_occ[g_nocc++] = {p.device, fn, threads, smem, cluster, 0};
      *occ = 0;
      return 0;
    }
    POLAR_CU(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, most));
  }
  if (cluster > 0) {  // GPC sizes limit how many clusters fit at once (fewer CTAs than SMs x occupancy)
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(1, cluster, 1);
    cfg.blockDim = dim3(threads);
    cfg.dynamicSmemBytes = (size_t)smem;
    cudaLaunchAttribute at;
    at.id = cudaLaunchAttributeClusterDimension;
    at.val.clusterDim.x = 1;
    at.val.clusterDim.y = cluster;
    at.val.clusterDim.z = 1;
    cfg.attrs = &at;
    cfg.numAttrs = 1;
    POLAR_CU(cudaOccupancyMaxActiveClusters(&o, fn, &cfg));
  } else {
    POLAR_CU(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&o, fn, threads, smem));
  }
  if (g_nocc < 256) g_occ[g_nocc++] = {p.device, fn, threads, smem, cluster, o};
  *occ = o;
  return 0;
}
}  // namespace

int kernel_occupancy(const void* fn, int threads, int smem, int* occ) { return occupancy_of(fn, threads, smem, 0, occ); }
int cluster_occupancy(const void* fn, int threads, int smem, int cluster, int* n) {
  return occupancy_of(fn, threads, smem, cluster, n);
}

bool wgmma_usable() {
  DevProps p;
  if (dev_props(&p)) return false;
  {
    std::lock_guard<std::mutex> lk(g_mu);
    if (g_wgmma[p.device]) return g_wgmma[p.device] == 1;
  }
  const bool ok = p.major == 9 && p.minor == 0 && wgmma_kernels_built();
  std::lock_guard<std::mutex> lk(g_mu);
  g_wgmma[p.device] = ok ? 1 : 2;
  return ok;
}

}  // namespace polar_cuda

extern "C" int polar_cuda_get_device_info(int device, polar_cuda_device_info* out) {
  using namespace polar_cuda;
  POLAR_REQ(out != nullptr, "polar_cuda_get_device_info: expected an output struct, received NULL");
  int n = 0;
  POLAR_CU(cudaGetDeviceCount(&n));
  POLAR_REQ(device >= 0 && device < n, "polar_cuda_get_device_info: expected a device below %d, received %d", n,
            device);
  POLAR_CU(cudaSetDevice(device));
  cudaDeviceProp prop;
  POLAR_CU(cudaGetDeviceProperties(&prop, device));
  std::memset(out, 0, sizeof *out);
  std::snprintf(out->name, sizeof out->name, "%s", prop.name);
  out->major = prop.major;
  out->minor = prop.minor;
  out->sms = prop.multiProcessorCount;
  out->l2_bytes = prop.l2CacheSize;
  out->wgmma = wgmma_usable() ? 1 : 0;
  return 0;
}
