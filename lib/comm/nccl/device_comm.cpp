#include "device_comm.hpp"

#include "../traffic.hpp"

#include <string>

#include "mics/core/check_cuda.hpp"
#include "mics/core/error.hpp"

namespace mics::comm::detail {

void CommStream::create(cudaStream_t compute) {
  reset();
  device::Backend* be =
      compute != nullptr ? device::cuda_backend_with_compute_stream(compute) : nullptr;
  if (be != nullptr) {
    owned_ = be->create_stream();
    return;
  }
  MICS_CHECK_CUDA(cudaStreamCreateWithFlags(&raw_, cudaStreamNonBlocking));
}

cudaStream_t CommStream::get() const noexcept {
  return owned_ ? static_cast<cudaStream_t>(owned_->native()) : raw_;
}

void CommStream::reset() noexcept {
  cudaStream_t s = get();
  if (s != nullptr) cudaStreamSynchronize(s);
  owned_.reset();
  if (raw_ != nullptr) cudaStreamDestroy(raw_);
  raw_ = nullptr;
}

DeviceTempPool::~DeviceTempPool() {
  std::lock_guard<std::mutex> lock(state_->mu);
  for (auto& kv : state_->free) cudaFree(kv.second);
  state_->free.clear();
  state_->alive = false;
}

std::shared_ptr<void> DeviceTempPool::get(std::size_t bytes) {
  if (bytes == 0) bytes = 1;
  void* p = nullptr;
  std::size_t cap = bytes;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    // At most twice the size asked for, so that a small request does not pin a big block.
    auto it = state_->free.lower_bound(bytes);
    if (it != state_->free.end() && it->first <= 2 * bytes) {
      cap = it->first;
      p = it->second;
      state_->free.erase(it);
    }
  }
  if (p == nullptr) {
    if (cudaMalloc(&p, cap) != cudaSuccess) {
      cudaGetLastError();
      throw Error("device collectives: out of device memory for a " + std::to_string(cap) +
                  "-byte temporary (hierarchical reduce-scatter)");
    }
    std::lock_guard<std::mutex> lock(state_->mu);
    ++state_->mallocs;
  }
  auto st = state_;
  return std::shared_ptr<void>(p, [st, cap](void* q) {
    std::lock_guard<std::mutex> lock(st->mu);
    if (st->alive)
      st->free.emplace(cap, q);
    else
      cudaFree(q);
  });
}

std::size_t DeviceTempPool::mallocs() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->mallocs;
}

void ordered_device_copy(void* dst, const void* src, std::size_t bytes, cudaStream_t compute) {
  if (bytes == 0 || dst == src) return;
  if (compute == nullptr) {
    // No compute stream: the backend's streams do not synchronise with the legacy stream.
    MICS_CHECK_CUDA(cudaDeviceSynchronize());
    MICS_CHECK_CUDA(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice));
    MICS_CHECK_CUDA(cudaDeviceSynchronize());
    return;
  }
  MICS_CHECK_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, compute));
}

Request one_rank_call(Group& group, std::uint64_t message) {
  record(*group.shared_counters(), 0, message, 0.0);
  return Request();
}

}  // namespace mics::comm::detail
