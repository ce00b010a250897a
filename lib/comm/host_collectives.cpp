#include <climits>

#include "mics/comm/collectives.hpp"
#include "mics/core/check.hpp"
#include "traffic.hpp"

namespace mics::comm {

// The default host path (device backends): blocking MPI on the caller's thread. MPI's own
// algorithms are not visible here, so the counters book the ring volumes (a model, like
// the NCCL counters); the MPI backend overrides both with its own counted collectives.
void Collectives::sum_host(double* values, std::size_t n, Group& group) {
  if (group.size() <= 1 || n == 0) return;
  MICS_ASSERT(n <= static_cast<std::size_t>(INT_MAX), "sum_host: too many values");
  const double t0 = MPI_Wtime();
  MICS_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, values, static_cast<int>(n), MPI_DOUBLE, MPI_SUM, group.comm()));
  const std::uint64_t m = n * sizeof(double);
  detail::record(*group.shared_counters(), detail::ring_bytes(detail::Pattern::all_reduce, group.size(), m), m,
                 MPI_Wtime() - t0);
}

void Collectives::all_gather_host(double* buf, std::size_t chunk_count, Group& group) {
  if (group.size() <= 1 || chunk_count == 0) return;
  MICS_ASSERT(chunk_count <= static_cast<std::size_t>(INT_MAX), "all_gather_host: chunk too large");
  const double t0 = MPI_Wtime();
  MICS_CHECK_MPI(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, static_cast<int>(chunk_count),
                               MPI_DOUBLE, group.comm()));
  const std::uint64_t m = chunk_count * sizeof(double) * static_cast<std::uint64_t>(group.size());
  detail::record(*group.shared_counters(), detail::ring_bytes(detail::Pattern::gather_or_scatter, group.size(), m),
                 m, MPI_Wtime() - t0);
}

}  // namespace mics::comm
