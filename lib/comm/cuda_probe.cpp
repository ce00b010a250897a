#include "mics/comm/cuda_probe.hpp"

#if MICS_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace mics::comm {

bool cuda_device_available() noexcept {
#if MICS_HAVE_CUDA
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later CUDA calls are not confused
    return false;
  }
  return count > 0;
#else
  return false;
#endif
}

}  // namespace mics::comm
