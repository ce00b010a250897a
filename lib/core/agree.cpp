#include "mics/core/agree.hpp"

#include <unistd.h>

#include <climits>
#include <vector>

#include "mics/core/check.hpp"
#include "mics/core/error.hpp"
#include "mics/core/watchdog.hpp"

namespace mics {

std::string host_name() {
  char name[256] = {0};
  if (::gethostname(name, sizeof name - 1) != 0) return "?";
  return name;
}

namespace {
void agree_impl(MPI_Comm comm, const std::string& local_error, bool name_rank) {
  const watchdog::Scope scope("an agreement among the ranks (all-reduce)");
  int rank = 0, comm_size = 0;
  MICS_CHECK_MPI(MPI_Comm_rank(comm, &rank));
  MICS_CHECK_MPI(MPI_Comm_size(comm, &comm_size));
  const int mine = local_error.empty() ? INT_MAX : rank;
  int first = INT_MAX;
  MICS_CHECK_MPI(MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm));
  if (first == INT_MAX) return;

  // The slow path: someone failed. How many, and what did the first one say?
  int failed = local_error.empty() ? 0 : 1, failed_all = 0;
  MICS_CHECK_MPI(MPI_Allreduce(&failed, &failed_all, 1, MPI_INT, MPI_SUM, comm));
  std::string text = rank == first ? local_error : std::string();
  // A failure of some ranks only is usually about their node: say where it happened.
  if (name_rank && rank == first && failed_all < comm_size && comm_size > 1)
    text = "rank " + std::to_string(first) + " (host " + host_name() + "): " + text;
  int len = static_cast<int>(text.size());
  MICS_CHECK_MPI(MPI_Bcast(&len, 1, MPI_INT, first, comm));
  text.resize(static_cast<std::size_t>(len));
  MICS_CHECK_MPI(MPI_Bcast(text.data(), len, MPI_CHAR, first, comm));

  int world_size = 0;
  MICS_CHECK_MPI(MPI_Comm_size(MPI_COMM_WORLD, &world_size));
  throw AgreedError(text, comm_size == world_size);
}
}  // namespace

void agree(MPI_Comm comm, const std::string& local_error) { agree_impl(comm, local_error, true); }
void agree_with_root(MPI_Comm comm, const std::string& root_error) { agree_impl(comm, root_error, false); }

unsigned agree_flags(MPI_Comm comm, unsigned local_flags, const char* what) {
  const watchdog::Scope scope(what);
  unsigned all = 0;
  MICS_CHECK_MPI(MPI_Allreduce(&local_flags, &all, 1, MPI_UNSIGNED, MPI_BOR, comm));
  return all;
}

}  // namespace mics
