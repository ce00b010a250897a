#pragma once
// mics-train: the set-up stages (setup.hpp), then the trainer loop (trainer.hpp) with its
// hooks for evaluation, the step line, metrics and checkpoints (hooks.hpp), and stop
// signals at step boundaries (stop_signal.hpp). Collective over MPI_COMM_WORLD.
//
// Exit codes: 0 done; 1 an error (one line on stderr, the same on every rank when they
// agreed); 75 stopped by SIGTERM, SIGUSR1 or SIGINT after saving a checkpoint (or with
// nothing to save when there is no --checkpoint-dir).
#include "mics/train/options.hpp"

namespace mics::train {

// Returns the process exit code.
int run_training(const RunOptions& options);

// The whole program (options, MPI, exit code): mics-train's main, and that of test
// builds that install fault seams first.
int train_main(int argc, char** argv);

}  // namespace mics::train
