#include "mics/comm/staged_collectives.hpp"

#include <string>

#include "../nccl/device_comm.hpp"
#include "mics/core/check_cuda.hpp"
#include "mics/core/error.hpp"

namespace mics::comm {
namespace {

// The MPI step first, then the host-to-device copy of its result on the staging stream.
// test() reports completion once that copy has finished. wait() blocks the host for the
// MPI step only: the compute stream (when there is one) then waits for the copy on the
// device. Reusing the pinned buffers early is safe: their next user queues its copies on
// the same staging stream and synchronises it before MPI touches them.
class StagedOp final : public detail::PendingOp {
public:
  StagedOp(Request inner, cudaStream_t stream, cudaStream_t compute, void* dev,
           std::shared_ptr<void> host, std::size_t bytes, std::shared_ptr<void> keep)
      : inner_(std::move(inner)), stream_(stream), compute_(compute), dev_(dev),
        host_(std::move(host)), bytes_(bytes), keep_(std::move(keep)) {
    MICS_CHECK_CUDA(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
  }
  ~StagedOp() override { cudaEventDestroy(done_); }
  StagedOp(const StagedOp&) = delete;
  StagedOp& operator=(const StagedOp&) = delete;

  bool test() override {
    if (!copying_) {
      if (!inner_.test()) return false;
      copy_back();
    }
    const cudaError_t rc = cudaEventQuery(done_);
    if (rc == cudaErrorNotReady) return false;
    MICS_CHECK_CUDA(rc);
    release();
    return true;
  }
  void wait() override {
    if (!copying_) {
      inner_.wait();
      copy_back();
    }
    if (compute_ != nullptr)
      MICS_CHECK_CUDA(cudaStreamWaitEvent(compute_, done_, 0));
    else
      MICS_CHECK_CUDA(cudaEventSynchronize(done_));
    release();
  }

private:
  void copy_back() {
    if (bytes_ > 0 && dev_ != nullptr)
      MICS_CHECK_CUDA(cudaMemcpyAsync(dev_, host_.get(), bytes_, cudaMemcpyHostToDevice, stream_));
    MICS_CHECK_CUDA(cudaEventRecord(done_, stream_));
    copying_ = true;
  }
  void release() {
    host_.reset();
    keep_.reset();
  }
  Request inner_;
  cudaStream_t stream_, compute_;
  void* dev_;
  std::shared_ptr<void> host_;
  std::size_t bytes_;
  std::shared_ptr<void> keep_;
  cudaEvent_t done_ = nullptr;
  bool copying_ = false;
};

}  // namespace

StagedCollectives::StagedCollectives()
    : stream_(std::make_unique<detail::CommStream>()),
      temps_(std::make_unique<detail::DeviceTempPool>()) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();
    throw Error("--comm mpi with a GPU backend needs a CUDA device and none is visible "
                "(cudaGetDeviceCount)");
  }
  MICS_CHECK_CUDA(cudaGetDevice(&device_));
  stream_->create(nullptr);
  MICS_CHECK_CUDA(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
}

StagedCollectives::~StagedCollectives() {
  cudaSetDevice(device_);
  stream_->reset();  // waits for its queued copies first
  {
    std::lock_guard<std::mutex> lock(*pool_mu_);
    for (auto& kv : *pool_) cudaFreeHost(kv.second);
    pool_->clear();
  }
  temps_.reset();
  if (ready_ != nullptr) cudaEventDestroy(ready_);
}

void StagedCollectives::set_compute_stream(cudaStream_t s) {
  compute_ = s;
  stream_->create(s);
}

cudaStream_t StagedCollectives::stream() const noexcept { return stream_->get(); }

std::size_t StagedCollectives::temp_allocations() const { return temps_->mallocs(); }

std::shared_ptr<void> StagedCollectives::pinned(std::size_t bytes) {
  if (bytes == 0) bytes = 1;
  void* p = nullptr;
  std::size_t cap = bytes;
  {
    std::lock_guard<std::mutex> lock(*pool_mu_);
    auto it = pool_->lower_bound(bytes);
    if (it != pool_->end() && it->first <= 2 * bytes) {
      cap = it->first;
      p = it->second;
      pool_->erase(it);
    }
  }
  if (p == nullptr) {
    if (cudaMallocHost(&p, cap) != cudaSuccess) {
      cudaGetLastError();
      throw Error("cannot allocate " + std::to_string(cap) +
                  " bytes of page-locked host memory for staged collectives");
    }
  }
  // The pool is shared with the deleter, so a buffer released late still finds it; the
  // object frees whatever is in the pool when it is destroyed.
  auto pool = pool_;
  auto mu = pool_mu_;
  return std::shared_ptr<void>(p, [pool, mu, cap](void* q) {
    std::lock_guard<std::mutex> lock(*mu);
    pool->emplace(cap, q);
  });
}

std::shared_ptr<void> StagedCollectives::allocate_temp(std::size_t bytes) {
  return temps_->get(bytes);
}

void StagedCollectives::stage_out(void* host, const void* dev, std::size_t bytes) {
  if (compute_ != nullptr) {
    MICS_CHECK_CUDA(cudaEventRecord(ready_, compute_));
    MICS_CHECK_CUDA(cudaStreamWaitEvent(stream(), ready_, 0));
  } else {
    // No compute stream given: the device backend's streams do not synchronise with the
    // legacy default stream, so wait for all work on the device (correct, slower).
    MICS_CHECK_CUDA(cudaDeviceSynchronize());
  }
  if (bytes > 0)
    MICS_CHECK_CUDA(cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToHost, stream()));
  MICS_CHECK_CUDA(cudaStreamSynchronize(stream()));
}

Request StagedCollectives::finish_with_copy_back(Request inner, void* dev,
                                                 std::shared_ptr<void> host, std::size_t bytes,
                                                 std::shared_ptr<void> keep) {
  return Request(std::make_unique<StagedOp>(std::move(inner), stream(), compute_, dev,
                                            std::move(host), bytes, std::move(keep)));
}

Request StagedCollectives::all_gather(void* buf, std::size_t chunk_count, DType dt,
                                      Group& group) {
  // One rank: the buffer already holds the one chunk.
  if (group.size() == 1) return detail::one_rank_call(group, chunk_count * dtype_size(dt));
  const std::size_t chunk = chunk_count * dtype_size(dt);
  const std::size_t total = chunk * static_cast<std::size_t>(group.size());
  auto host = pinned(total);
  const std::size_t mine = chunk * static_cast<std::size_t>(group.rank());
  stage_out(static_cast<char*>(host.get()) + mine, static_cast<const char*>(buf) + mine, chunk);
  Request inner = mpi_.all_gather(host.get(), chunk_count, dt, group);
  return finish_with_copy_back(std::move(inner), buf, std::move(host), total);
}

Request StagedCollectives::reduce_scatter(const void* send, void* recv, std::size_t chunk_count,
                                          DType dt, Group& group) {
  if (group.size() == 1) {
    detail::ordered_device_copy(recv, send, chunk_count * dtype_size(dt), compute_);
    return detail::one_rank_call(group, chunk_count * dtype_size(dt));
  }
  const std::size_t chunk = chunk_count * dtype_size(dt);
  const std::size_t total = chunk * static_cast<std::size_t>(group.size());
  auto hsend = pinned(total);
  auto hrecv = pinned(chunk);
  stage_out(hsend.get(), send, total);
  Request inner = mpi_.reduce_scatter(hsend.get(), hrecv.get(), chunk_count, dt, group);
  return finish_with_copy_back(std::move(inner), recv, std::move(hrecv), chunk, std::move(hsend));
}

Request StagedCollectives::all_reduce(void* buf, std::size_t count, DType dt, Group& group) {
  if (group.size() == 1) return detail::one_rank_call(group, count * dtype_size(dt));
  const std::size_t bytes = count * dtype_size(dt);
  auto host = pinned(bytes);
  stage_out(host.get(), buf, bytes);
  Request inner = mpi_.all_reduce(host.get(), count, dt, group);
  return finish_with_copy_back(std::move(inner), buf, std::move(host), bytes);
}

Request StagedCollectives::broadcast(void* buf, std::size_t count, DType dt, int root,
                                     Group& group) {
  if (group.size() == 1) return detail::one_rank_call(group, count * dtype_size(dt));
  const std::size_t bytes = count * dtype_size(dt);
  auto host = pinned(bytes);
  // Only the root's data matters; the others still order after the compute stream so
  // that the copy back cannot overtake kernels that read the old contents.
  stage_out(host.get(), buf, group.rank() == root ? bytes : 0);
  Request inner = mpi_.broadcast(host.get(), count, dt, root, group);
  return finish_with_copy_back(std::move(inner), buf, std::move(host), bytes);
}

void StagedCollectives::barrier(Group& group) { mpi_.barrier(group); }

}  // namespace mics::comm
