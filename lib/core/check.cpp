#include "mics/core/check.hpp"

#include <sstream>

namespace mics::detail {

int world_rank_or_minus_one() noexcept {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) return -1;
  int rank = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(text, static_cast<std::size_t>(len));
}

void throw_call_failure(const char* api, const char* call, const std::string& why, const char* file,
                        int line, const char* hint) {
  std::ostringstream os;
  os << api << " call `" << call << "` failed: " << why << " (" << file << ":" << line << ", rank "
     << world_rank_or_minus_one() << "); hint: " << hint;
  throw Error(os.str());
}

}  // namespace mics::detail
