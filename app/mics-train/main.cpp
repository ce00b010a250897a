// mics-train: parse the options, run the training job.
#include <cstdio>

#include "mics/core/mpi_env.hpp"
#include "mics/train/options.hpp"
#include "mics/train/training_run.hpp"

int main(int argc, char** argv) {
  return mics::run_mpi_program("mics-train", argc, argv, [](int ac, char** av) {
    mics::train::RunOptions options;
    std::string help;
    if (!mics::train::parse_options(ac, av, options, help)) {
      int rank = 0;
      MPI_Comm_rank(MPI_COMM_WORLD, &rank);
      if (rank == 0) std::printf("%s", help.c_str());
      return 0;
    }
    return mics::train::run_training(options);
  });
}
