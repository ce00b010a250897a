#include "mics/core/agree.hpp"

#include <climits>
#include <vector>

#include "mics/core/check.hpp"
#include "mics/core/error.hpp"

namespace mics {

void agree(MPI_Comm comm, const std::string& local_error) {
  int rank = 0;
  MICS_CHECK_MPI(MPI_Comm_rank(comm, &rank));
  const int mine = local_error.empty() ? INT_MAX : rank;
  int first = INT_MAX;
  MICS_CHECK_MPI(MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm));
  if (first == INT_MAX) return;

  int len = rank == first ? static_cast<int>(local_error.size()) : 0;
  MICS_CHECK_MPI(MPI_Bcast(&len, 1, MPI_INT, first, comm));
  std::vector<char> text(static_cast<std::size_t>(len));
  if (rank == first) text.assign(local_error.begin(), local_error.end());
  MICS_CHECK_MPI(MPI_Bcast(text.data(), len, MPI_CHAR, first, comm));

  int comm_size = 0, world_size = 0;
  MICS_CHECK_MPI(MPI_Comm_size(comm, &comm_size));
  MICS_CHECK_MPI(MPI_Comm_size(MPI_COMM_WORLD, &world_size));
  throw Error(std::string(text.begin(), text.end()), comm_size == world_size);
}

}  // namespace mics
