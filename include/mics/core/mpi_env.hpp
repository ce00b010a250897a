#pragma once
// RAII for MPI itself, and the one place a program turns a mics::Error into an exit code.
#include <mpi.h>

#include <functional>
#include <string>

namespace mics {

// Initialises MPI (thread level FUNNELED) on construction and finalises it on
// destruction; objects owning communicators must be destroyed before it is.
class MpiEnvironment {
public:
  MpiEnvironment(int* argc, char*** argv);
  ~MpiEnvironment();
  MpiEnvironment(const MpiEnvironment&) = delete;
  MpiEnvironment& operator=(const MpiEnvironment&) = delete;
  int rank() const noexcept { return rank_; }
  int size() const noexcept { return size_; }
  // A private duplicate of the world, used only to find out whether every rank failed.
  MPI_Comm failure_comm() const noexcept { return failure_; }

private:
  int rank_ = 0;
  int size_ = 1;
  MPI_Comm failure_ = MPI_COMM_NULL;
};

// Runs body(argc, argv) inside an MpiEnvironment and maps what it throws to an exit code:
// - mics::AgreedError over the world: rank 0 prints "<program>: error: <message>" and
//   every rank exits 1 after a clean MPI_Finalize.
// - any other error: the failing ranks check, for a few seconds, whether every rank
//   failed (a bad option fails everywhere; that is found out here, not assumed). If so,
//   the same as above. If not, each failing rank prints
//   "<program>: error on rank R (host H): <message>" and exits 1 at once without
//   finalising; mpirun then ends the ranks that are still waiting for it.
// Exit codes: 0 success, 1 error, 75 stopped by a signal (see mics-train).
int run_mpi_program(const char* program, int argc, char** argv,
                    const std::function<int(int, char**)>& body);

}  // namespace mics
