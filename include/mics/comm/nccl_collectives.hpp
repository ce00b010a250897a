#pragma once
// Collectives over device memory with NCCL (built only with MICS_HAVE_CUDA).
//
// Each Group gets its own ncclComm_t, bootstrapped on first use by broadcasting an
// ncclUniqueId from the group's rank 0 over the group's MPI communicator (so the first
// operation on a group is collective over it, as every operation is), and its own stream.
// An operation first makes the group's stream wait for the compute stream
// (set_compute_stream), so buffers written by earlier kernels are ready; without a compute
// stream it synchronises the whole device first (the backend's streams do not synchronise
// with the legacy stream). Its Request completes through a cudaEvent. The group streams
// are made through the device backend owning the compute stream, so that its caching
// allocator waits for them too before reusing a freed block. Everything is destroyed with
// the NcclCollectives object, which must happen before MPI_Finalize.
//
// A group of one rank never touches NCCL (no communicator is made for it): all-gather,
// all-reduce and broadcast have nothing to do and return a complete Request, and
// reduce-scatter is a copy on the compute stream (ordered before every later kernel
// there). Each counts as one call that put 0 bytes on the wire.
//
// NCCL refuses two ranks on one GPU: on a one-GPU machine only one rank per node can use
// this backend.
#if MICS_HAVE_CUDA
#include <cuda_runtime.h>
#include <nccl.h>

#include <map>

#include "mics/comm/collectives.hpp"

namespace mics::comm {

namespace detail {
class CommStream;
class DeviceTempPool;
}  // namespace detail

class NcclCollectives final : public Collectives {
public:
  // Selects `device` (default: local rank modulo the visible devices, from
  // MPI_COMM_TYPE_SHARED). Throws mics::Error when no GPU is usable. timeout_s > 0
  // (--comm-timeout): a Request not complete that long after it was issued aborts its
  // communicator and throws; asynchronous NCCL errors do so at any time.
  explicit NcclCollectives(int device = -1, double timeout_s = 0);
  ~NcclCollectives() override;

  const char* backend() const noexcept override { return "nccl"; }
  int device() const noexcept { return device_; }
  // The device backend's compute stream. Set it before the first operation.
  void set_compute_stream(cudaStream_t s) noexcept { compute_ = s; }
  // The stream this backend runs the group's collectives on (creating its communicator);
  // nullptr for a group of one.
  cudaStream_t stream_of(Group& group);
  // Device temporaries cudaMalloc'd so far for allocate_temp (pooled: tests check that
  // repeated hierarchical reduce-scatters do not add to it).
  std::size_t temp_allocations() const;

  Request all_gather(void* buf, std::size_t chunk_count, DType dt, Group& group) override;
  Request reduce_scatter(const void* send, void* recv, std::size_t chunk_count, DType dt,
                         Group& group) override;
  Request all_reduce(void* buf, std::size_t count, DType dt, Group& group) override;
  Request broadcast(void* buf, std::size_t count, DType dt, int root, Group& group) override;
  void barrier(Group& group) override;

protected:
  std::shared_ptr<void> allocate_temp(std::size_t bytes) override;
  void prepare(Group& group) override {
    if (group.size() > 1) channel(group);
  }

private:
  struct Channel {
    ncclComm_t comm = nullptr;
    std::unique_ptr<detail::CommStream> stream;
  };
  Channel& channel(Group& group);
  void order_after_compute(Channel& ch);
  int device_ = 0;
  double timeout_s_ = 0;
  cudaStream_t compute_ = nullptr;
  cudaEvent_t ready_ = nullptr;
  std::map<MPI_Comm, Channel> channels_;
  std::unique_ptr<detail::DeviceTempPool> temps_;
};

}  // namespace mics::comm
#endif
