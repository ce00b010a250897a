#pragma once
// The training loop of mics-train: builds the process groups, the backend, the
// collectives, the engine and the data from RunOptions, and runs the steps with logging,
// metrics, evaluation and checkpoints. Collective over MPI_COMM_WORLD.
#include "mics/train/options.hpp"

namespace mics::train {

// Returns the process exit code.
int run_training(const RunOptions& options);

}  // namespace mics::train
