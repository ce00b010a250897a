#pragma once
// The checkpoint side of a run: set-up stages that decide whether the checkpoint folder
// may be used (one run per folder), what is resumed and how the metrics files continue,
// and the save the trainer calls. Stage functions run inside run_stage (setup.hpp).
#include <string>
#include <vector>

#include "mics/train/setup.hpp"

namespace mics::train {

// Resolves --resume (its seed fixes the data order), checks that the checkpoint's model
// is this run's (variant and every size), fixes the run id, and checks that
// --checkpoint-dir is writable and belongs to this run (or --overwrite-checkpoints).
void stage_checkpoints(Job& job);

// Loads the resumed checkpoint into the engine (collective, agreed inside).
void load_resumed_state(Job& job);

// Rank 0 opens --metrics / --metrics-jsonl; a resumed run first drops rows past the
// checkpoint's step and then appends.
void open_metrics(Job& job);

struct Saved {
  std::string path;                  // the checkpoint written
  std::vector<std::string> removed;  // this run's older files --keep-last removed
};
// Saves the engine's state at its current step into --checkpoint-dir (collective).
Saved save_checkpoint(Job& job);

// Keeps the rows of a metrics file (CSV with a header, or JSON lines) whose step is at
// most `step`; a missing file is left missing. Returns the rows dropped.
int truncate_metrics_rows(const std::string& path, std::int64_t step, bool json);

// The keys on which two model configs (key = value text) differ, e.g.
// "variant gpt -> bert, layers 2 -> 4"; "" when they agree ("name" is ignored).
std::string model_difference(const std::string& stored, const std::string& now);

}  // namespace mics::train
