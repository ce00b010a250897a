// Checkpoint bandwidth: saves and loads a synthetic model of about MB megabytes (master +
// Adam m + v together) sharded over all ranks (p = W), and prints one line per phase.
//   checkpoint_bench DIR MB save|load [two-phase|per-rank]
// Run by validation/bench-checkpoint.sh, which drops the page cache between phases and
// measures a plain dd write/read of the same bytes next to it.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "mics/checkpoint/checkpoint.hpp"
#include "mics/core/error.hpp"
#include "mics/core/mpi_env.hpp"
#include "synthetic.hpp"

namespace ck = mics::checkpoint;

int main(int argc, char** argv) {
  return mics::run_mpi_program("checkpoint_bench", argc, argv, [](int ac, char** av) {
    if (ac != 4 && ac != 5) throw mics::UsageError("usage: checkpoint_bench DIR MB save|load [two-phase|per-rank]");
    const std::string io = ac == 5 ? av[4] : "two-phase";
    if (io != "two-phase" && io != "per-rank") throw mics::UsageError("I/O mode must be two-phase or per-rank");
    const std::string dir = av[1], phase = av[3];
    const double mb = std::atof(av[2]);
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    // synthetic_layout(scale) holds 1384*scale + 183 parameters; 12 bytes each.
    const auto scale = static_cast<std::int64_t>(mb * 1e6 / 12.0 / 1384.0) + 1;
    const auto layout = mics::test::synthetic_layout(scale);
    const double bytes = 12.0 * static_cast<double>(layout.parameter_count());
    auto s = mics::test::make_state(layout, size, rank, true, 16, phase == "save");
    s->st.two_phase_io = io == "two-phase";
    MPI_Barrier(MPI_COMM_WORLD);
    const auto t0 = std::chrono::steady_clock::now();
    if (phase == "save") {
      ck::save(dir, s->st, mics::test::synthetic_meta(1), 1);
    } else if (phase == "load") {
      ck::load(dir, s->st);
    } else {
      throw mics::UsageError("phase must be save or load");
    }
    MPI_Barrier(MPI_COMM_WORLD);
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    unsigned long long wrong = phase == "load" ? mics::test::count_wrong(layout, *s) : 0;
    MPI_Allreduce(MPI_IN_PLACE, &wrong, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0)
      std::printf("checkpoint %s io=%s ranks=%d params=%zu bytes=%.0f seconds=%.3f MBps=%.1f wrong=%llu\n", phase.c_str(),
                  io.c_str(), size, layout.parameter_count(), bytes, sec, bytes / sec / 1e6, wrong);
    return wrong == 0 ? 0 : 1;
  });
}
