#pragma once
// mics-train's pieces around the training loop: CPU threads per rank, start-up notes,
// periodic samples, evaluation only and the tool options that drive them. Kept apart
// from training_run.cpp, which calls each in one line.
#include <boost/program_options.hpp>
#include <memory>
#include <string>

#include "mics/data/dataset.hpp"
#include "mics/device/backend.hpp"
#include "mics/engine/engine.hpp"
#include "mics/train/options.hpp"

namespace mics::train {

// "Evaluation and samples" options (--eval-only, --eval-output, --sample-*), and their
// values into `o` (after the model options were read). Throws UsageError.
boost::program_options::options_description tool_options();
void read_tool_options(const boost::program_options::variables_map& vm, RunOptions& o);

// CPU backend threads for this rank: `requested` when positive; else 0 (OpenMP's own
// count) when OMP_NUM_THREADS is set; else the CPUs in this process's affinity mask
// (sched_getaffinity: Slurm's binding, taskset) divided among the ranks of this host
// that share the same mask. Collective over MPI_COMM_WORLD (call on every rank).
struct CpuThreads {
  int threads = 0;
  std::string note;  // one line for the log, e.g. "CPU threads per rank: 2 (...)"
};
CpuThreads cpu_threads_per_rank(int requested);
// The affinity arithmetic alone: `cpus` in the mask shared by `sharing` ranks.
int threads_for_mask(int cpus, int sharing);

// "on", or "off (why)" for the start-up line.
std::string hierarchical_note(bool requested, bool active, int partition_size, int ranks_per_node);

// --sample-every N: after every Nth step, rank 0 prints --sample-tokens tokens drawn from
// the current weights (gathered from the partition group). Collective over the world on
// the steps that sample.
class TrainingSampler {
public:
  TrainingSampler(const RunOptions& o, engine::Engine& e, device::Backend& be, bool lead);
  void after_step(int step);

private:
  const RunOptions& o_;
  engine::Engine& eng_;
  device::Backend& be_;
  bool lead_;
};

// --eval-only: the validation loss and perplexity of the loaded checkpoint, printed by
// rank 0 (and appended to --eval-output as one JSON line when given). Collective.
// Returns the exit code.
int run_eval_only(const RunOptions& o, engine::Engine& e, const data::DataSource& data,
                  const std::string& checkpoint, int world);

// A resumed run whose checkpoint is already at --steps: says so (rank 0) and returns 0.
int nothing_to_do(const std::string& checkpoint, int step, int steps);

}  // namespace mics::train
