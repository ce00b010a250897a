#pragma once
// Collectives over host memory: the backend's own ring algorithms over MPI point-to-point
// messages (lib/comm/mpi/schedules.hpp), in node order whatever the communicator's rank
// order, progressed by a communication thread while the caller computes.
//
// Needs MPI initialised; with MPI_THREAD_MULTIPLE (what mics::MpiEnvironment asks for) a
// progress thread makes every MPI call of the collectives, so prefetched gathers and
// pending reduce-scatters move while the compute runs. With a lower thread level there is
// no thread and operations progress inside Request::test() and wait() only.
// Counters (GroupCounters): bytes and sends are counted at each MPI_Isend.
#include <mpi.h>

#include <memory>

#include "mics/comm/collectives.hpp"

namespace mics::comm {

namespace mpi {
class Progress;
}

class MpiCollectives final : public Collectives {
public:
  MpiCollectives();
  ~MpiCollectives() override;  // stops the progress thread; Requests must be complete

  const char* backend() const noexcept override { return "mpi"; }
  // Whether a progress thread runs (MPI_THREAD_MULTIPLE was provided).
  bool progress_thread() const noexcept;
  Request all_gather(void* buf, std::size_t chunk_count, DType dt, Group& group) override;
  Request reduce_scatter(const void* send, void* recv, std::size_t chunk_count, DType dt,
                         Group& group) override;
  Request all_reduce(void* buf, std::size_t count, DType dt, Group& group) override;
  Request broadcast(void* buf, std::size_t count, DType dt, int root, Group& group) override;
  void barrier(Group& group) override;
  void sum_host(double* values, std::size_t n, Group& group) override;
  void all_gather_host(double* buf, std::size_t chunk_count, Group& group) override;

  // The algorithm all_reduce picks for `count` elements of dt on `group`
  // ("none", "ring", "recursive_doubling", "hierarchical_ring"); the other collectives
  // always run rings.
  static const char* all_reduce_algorithm(std::size_t count, DType dt, const Group& group);

protected:
  std::shared_ptr<void> allocate_temp(std::size_t bytes) override;
  Request then(Request step1, std::function<Request()> step2, std::shared_ptr<void> keep) override;

private:
  std::unique_ptr<mpi::Progress> progress_;
};

}  // namespace mics::comm
