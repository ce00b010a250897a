#include "mics/core/mpi_env.hpp"

#include <cstdio>
#include <exception>

#include "mics/core/check.hpp"
#include "mics/core/error.hpp"

namespace mics {

MpiEnvironment::MpiEnvironment(int* argc, char*** argv) {
  int provided = 0;
  MICS_CHECK_MPI(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided));
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
}

MpiEnvironment::~MpiEnvironment() { MPI_Finalize(); }

int run_mpi_program(const char* program, int argc, char** argv,
                    const std::function<int(int, char**)>& body) {
  MpiEnvironment env(&argc, &argv);
  try {
    return body(argc, argv);
  } catch (const Error& e) {
    if (e.everywhere()) {
      if (env.rank() == 0) std::fprintf(stderr, "%s: error: %s\n", program, e.what());
      return 1;
    }
    std::fprintf(stderr, "%s: error on rank %d: %s\n", program, env.rank(), e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: internal error on rank %d: %s\n", program, env.rank(), e.what());
  }
  std::fflush(stderr);
  // Only some ranks may have failed; the others could be blocked in a collective.
  MPI_Abort(MPI_COMM_WORLD, 1);
  return 1;
}

}  // namespace mics
