#pragma once
// Collectives over device memory through page-locked host buffers and MPI (`--comm mpi`
// with a GPU backend; built only with MICS_HAVE_CUDA). For machines where NCCL cannot be
// used: several ranks sharing one GPU (NCCL refuses that), or clusters without NCCL.
//
// An operation: a staging stream waits for the compute stream (set_compute_stream), copies
// the device input to a pinned buffer, the host waits for that copy, the MPI collective
// runs on the host buffers (MpiCollectives: same algorithms, bf16 summed in f32, the same
// traffic counters), and once it completes, the result is copied back to the device on
// the staging stream; test() reports completion when that copy has. wait() returns once
// the MPI step is over and makes the compute stream wait for the copy back on the device
// (without a compute stream it waits for the copy on the host). So the host blocks for
// the device-to-host copy and for MPI, never for the copy back, and communication
// overlaps compute as far as MPI progresses in the background.
//
// Pinned buffers are pooled (cudaMallocHost is slow) and freed with the object, which must
// outlive its Requests and be destroyed before MPI_Finalize. Device temporaries
// (allocate_temp, the hierarchical reduce-scatter's) are pooled too: cudaFree would
// synchronise the device. The staging stream is made through the device backend owning
// the compute stream (set_compute_stream), so that its caching allocator waits for the
// copies queued there before reusing a freed block.
//
// A group of one rank is not staged at all: all-gather, all-reduce and broadcast have
// nothing to do and return a complete Request, and reduce-scatter is a copy on the
// compute stream. Each counts as one call that put 0 bytes on the wire.
#if MICS_HAVE_CUDA
#include <cuda_runtime.h>

#include <map>
#include <memory>
#include <mutex>

#include "mics/comm/collectives.hpp"
#include "mics/comm/mpi_collectives.hpp"

namespace mics::comm {

namespace detail {
class CommStream;
class DeviceTempPool;
}  // namespace detail

class StagedCollectives final : public Collectives {
public:
  // Uses the current CUDA device (the device backend selects it). Needs MPI initialised.
  StagedCollectives();
  ~StagedCollectives() override;

  const char* backend() const noexcept override { return "mpi-staged"; }
  // The stream kernels producing the inputs run on (the device backend's compute stream).
  // Without it every operation first synchronises the whole device.
  void set_compute_stream(cudaStream_t s);
  cudaStream_t stream() const noexcept;
  // Device temporaries cudaMalloc'd so far for allocate_temp (pooled).
  std::size_t temp_allocations() const;

  Request all_gather(void* buf, std::size_t chunk_count, DType dt, Group& group) override;
  Request reduce_scatter(const void* send, void* recv, std::size_t chunk_count, DType dt,
                         Group& group) override;
  Request all_reduce(void* buf, std::size_t count, DType dt, Group& group) override;
  Request broadcast(void* buf, std::size_t count, DType dt, int root, Group& group) override;
  void barrier(Group& group) override;

  // Pinned host memory from the pool; returned to it when the last owner lets go.
  std::shared_ptr<void> pinned(std::size_t bytes);

protected:
  std::shared_ptr<void> allocate_temp(std::size_t bytes) override;  // device memory

private:
  // Makes the staging stream wait for the compute stream, then copies device -> host and
  // waits for the copy.
  void stage_out(void* host, const void* dev, std::size_t bytes);
  Request finish_with_copy_back(Request inner, void* dev, std::shared_ptr<void> host,
                                std::size_t bytes, std::shared_ptr<void> keep = nullptr);

  MpiCollectives mpi_;
  int device_ = 0;
  cudaStream_t compute_ = nullptr;
  std::unique_ptr<detail::CommStream> stream_;
  std::unique_ptr<detail::DeviceTempPool> temps_;
  cudaEvent_t ready_ = nullptr;
  std::shared_ptr<std::mutex> pool_mu_ = std::make_shared<std::mutex>();
  std::shared_ptr<std::multimap<std::size_t, void*>> pool_ =
      std::make_shared<std::multimap<std::size_t, void*>>();
};

}  // namespace mics::comm
#endif
