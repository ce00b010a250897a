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

private:
  int rank_ = 0;
  int size_ = 1;
};

// Runs body(argc, argv) inside an MpiEnvironment. A mics::Error raised on every rank is
// printed once by rank 0 as "<program>: error: <message>" and the program exits with 1
// after a clean MPI_Finalize. An error raised on some ranks only is printed by each of
// them and the job is aborted, since the others may wait in a collective forever.
int run_mpi_program(const char* program, int argc, char** argv,
                    const std::function<int(int, char**)>& body);

}  // namespace mics
