#pragma once
// Collectives over host memory with MPI's non-blocking collectives
// (MPI_Iallgather in place, MPI_Ireduce_scatter_block, MPI_Iallreduce, MPI_Ibcast).
// bf16 travels as 16-bit words and is summed by a user-defined MPI_Op in f32.
#include <mpi.h>

#include "mics/comm/collectives.hpp"

namespace mics::comm {

class MpiCollectives final : public Collectives {
public:
  MpiCollectives();  // needs MPI initialised
  ~MpiCollectives() override;

  const char* backend() const noexcept override { return "mpi"; }
  Request all_gather(void* buf, std::size_t chunk_count, DType dt, Group& group) override;
  Request reduce_scatter(const void* send, void* recv, std::size_t chunk_count, DType dt,
                         Group& group) override;
  Request all_reduce(void* buf, std::size_t count, DType dt, Group& group) override;
  Request broadcast(void* buf, std::size_t count, DType dt, int root, Group& group) override;
  void barrier(Group& group) override;

protected:
  std::shared_ptr<void> allocate_temp(std::size_t bytes) override;

private:
  MPI_Op bf16_sum_ = MPI_OP_NULL;
};

}  // namespace mics::comm
