#pragma once
// The trainer's standard hooks, added by run_training in this order.
#include "mics/train/trainer.hpp"

namespace mics::train {

// Validation loss every --eval-every steps and at the last step (collective; the ranks
// agreed during set-up that all or none have validation data).
Trainer::Hook evaluation_hook(Job& job);
// Rank 0's step line every --log-every steps, the first and the last.
Trainer::Hook log_hook(Job& job);
// One --metrics / --metrics-jsonl row per step (rank 0).
Trainer::Hook metrics_hook(Job& job);
// A checkpoint every --checkpoint-every steps and at the end (collective), never of a
// skipped (non-finite) step's state; logs what --keep-last removed.
Trainer::Hook checkpoint_hook(Job& job);

}  // namespace mics::train
