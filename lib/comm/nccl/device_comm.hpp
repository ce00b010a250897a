#pragma once
// Private to the device collectives (NCCL and host-staged): the streams they run on, the
// pool of device temporaries behind allocate_temp, and the shortcut for groups of one.
#include <cuda_runtime.h>

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>

#include "mics/comm/collectives.hpp"
#include "mics/device/backend.hpp"

namespace mics::comm::detail {

// A communication stream. Made through the device backend that owns the compute stream
// when there is one: that backend's caching allocator then records an event on it when a
// block is freed, so a block a collective still reads or writes is not handed out early.
// Without such a backend (a caller that gave no compute stream) it is a plain
// non-blocking stream.
class CommStream {
public:
  CommStream() = default;
  ~CommStream() { reset(); }
  CommStream(const CommStream&) = delete;
  CommStream& operator=(const CommStream&) = delete;
  CommStream(CommStream&& o) noexcept : owned_(std::move(o.owned_)), raw_(o.raw_) { o.raw_ = nullptr; }

  // Replaces the stream (after its queued work is done) with one made beside `compute`.
  void create(cudaStream_t compute);
  cudaStream_t get() const noexcept;
  bool through_backend() const noexcept { return owned_ != nullptr; }
  void reset() noexcept;

private:
  std::unique_ptr<device::Stream> owned_;
  cudaStream_t raw_ = nullptr;
};

// Device temporaries for allocate_temp (the hierarchical reduce-scatter's k*c block), kept
// for reuse: cudaMalloc and cudaFree per call would synchronise the device in every step.
// A block returns to the pool when its last owner lets go; the two-step chain lets go only
// after step 2 has completed on the device, so a pooled block is idle. Blocks still owned
// when the pool is destroyed are freed by their last owner.
class DeviceTempPool {
public:
  DeviceTempPool() = default;
  ~DeviceTempPool();
  DeviceTempPool(const DeviceTempPool&) = delete;
  DeviceTempPool& operator=(const DeviceTempPool&) = delete;

  std::shared_ptr<void> get(std::size_t bytes);
  std::size_t mallocs() const;  // blocks cudaMalloc'd so far (tests read it)

private:
  struct State {
    std::mutex mu;
    std::multimap<std::size_t, void*> free;
    bool alive = true;
    std::size_t mallocs = 0;
  };
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

// Orders `compute` (when given) or the whole device (when not) before a device-to-device
// copy of `bytes` from src to dst; the copy runs on `compute`, so later kernels there see
// it. The reduce-scatter over a group of one is exactly this copy.
void ordered_device_copy(void* dst, const void* src, std::size_t bytes, cudaStream_t compute);

// An operation over a group of one rank, done without communication: counted as a call
// of `message` bytes that put nothing on the wire and took no time (as the MPI backend
// counts one), and already complete.
Request one_rank_call(Group& group, std::uint64_t message);

}  // namespace mics::comm::detail
