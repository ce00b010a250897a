#pragma once
// Is there a usable CUDA device? Asks cudaGetDeviceCount (never NCCL: ncclGetUniqueId
// succeeds on machines without a GPU). Always false in a build without CUDA.
namespace mics::comm {

bool cuda_device_available() noexcept;

}  // namespace mics::comm
