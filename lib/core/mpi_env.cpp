#include "mics/core/mpi_env.hpp"

#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <exception>
#include <thread>

#include "mics/core/agree.hpp"
#include "mics/core/check.hpp"
#include "mics/core/error.hpp"
#include "mics/core/watchdog.hpp"

namespace mics {

namespace {

// Open MPI settings the CPU collectives are tuned for, unless the user or the launcher
// set them (setenv without overwrite; read by MPI_Init). Each lane of a ring round is one
// message of up to a few hundred KiB, posted by both sides in the same round: over TCP,
// Open MPI's rendezvous above 64 KiB costs a handshake per message, each end waiting for
// the other's next poll (lib/comm/mpi/progress.cpp); sent eagerly, a message needs no
// answer. Measured on emulated nodes at 200 Mbit/s: ZeRO-3 steps 6-9% and MiCS p=4
// hierarchical 20% shorter (validation/BENCHMARKS.md, issue 10).
void default_mca_settings() {
  ::setenv("OMPI_MCA_btl_tcp_eager_limit", "1048576", 0);
  ::setenv("OMPI_MCA_btl_tcp_rndv_eager_limit", "1048576", 0);
}

}  // namespace

MpiEnvironment::MpiEnvironment(int* argc, char*** argv) {
  default_mca_settings();
  int provided = 0;
  MICS_CHECK_MPI(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided));
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  MPI_Comm_dup(MPI_COMM_WORLD, &failure_);
}

MpiEnvironment::~MpiEnvironment() {
  if (failure_ != MPI_COMM_NULL) MPI_Comm_free(&failure_);
  MPI_Finalize();
}

namespace {

// Whether every rank of the world reached the failure path within `seconds`. Only ranks
// that failed call this, so the reduction completes only if all of them did.
bool every_rank_failed(MPI_Comm failure, double seconds) {
  int size = 1;
  MPI_Comm_size(failure, &size);
  if (size == 1) return true;
  int one = 1, count = 0;
  MPI_Request req = MPI_REQUEST_NULL;
  if (MPI_Iallreduce(&one, &count, 1, MPI_INT, MPI_SUM, failure, &req) != MPI_SUCCESS) return false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  int done = 0;
  while (!done && std::chrono::steady_clock::now() < deadline) {
    if (MPI_Test(&req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) return false;
    if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return done && count == size;
}

// Ends this rank alone: the others may be blocked in a collective it will never join.
[[noreturn]] void leave_alone(const char* program, int rank, const std::string& what) {
  std::fprintf(stderr, "%s: error on rank %d (host %s): %s\n", program, rank, host_name().c_str(),
               what.c_str());
  std::fflush(stderr);
  std::fflush(stdout);
  ::_exit(1);
}

}  // namespace

int run_mpi_program(const char* program, int argc, char** argv,
                    const std::function<int(int, char**)>& body) {
  MpiEnvironment env(&argc, &argv);
  watchdog::set_program(program);
  std::string what;
  bool agreed = false;
  try {
    return body(argc, argv);
  } catch (const AgreedError& e) {
    what = e.what();
    agreed = e.world();
  } catch (const std::bad_alloc&) {
    what = "out of host memory";
  } catch (const std::exception& e) {
    what = e.what();
  }
  // A rank-local error is only "everywhere" once every rank has said so.
  if (!agreed) agreed = every_rank_failed(env.failure_comm(), 3.0);
  if (!agreed) leave_alone(program, env.rank(), what);
  if (env.rank() == 0) std::fprintf(stderr, "%s: error: %s\n", program, what.c_str());
  std::fflush(stderr);
  return 1;
}

}  // namespace mics
