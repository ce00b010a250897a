#include <cmath>
#include <cstdio>
#include <fstream>

#include "mics/core/agree.hpp"
#include "mics/core/error.hpp"
#include "mics/train/tools.hpp"

namespace mics::train {

int run_eval_only(const RunOptions& o, engine::Engine& e, const data::DataSource& data,
                  const std::string& checkpoint, int world) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const auto& tc = o.train;
  if (!data.val)
    throw UsageError("--eval-only: --data " + o.data + " has no validation split (DIR/name_val.bin); "
                     "give data with one");
  const std::int64_t batches = std::min<std::int64_t>(
      o.eval_batches, data::max_eval_batches(*data.val, tc.global_batch, static_cast<int>(o.model.seq)));
  if (batches <= 0)
    throw UsageError("--eval-only: no evaluation batch fits (--eval-batches " + std::to_string(o.eval_batches) +
                     ", validation split too short for one global batch of " + std::to_string(tc.global_batch) +
                     " x " + std::to_string(o.model.seq) + " tokens)");
  const double loss = e.evaluate(*data.val, batches);
  const double ppl = std::exp(loss);
  const std::int64_t tokens = batches * tc.global_batch * o.model.seq;
  std::string problem;
  if (rank == 0) {
    std::printf("mics-train: eval-only: %s (step %d): val loss %.6f, perplexity %.4f over %lld batches of %d x %lld "
                "tokens (%lld tokens) on %d ranks\n",
                checkpoint.c_str(), e.step(), loss, ppl, static_cast<long long>(batches), tc.global_batch,
                static_cast<long long>(o.model.seq), static_cast<long long>(tokens), world);
    std::fflush(stdout);
    if (!o.eval_output.empty()) {
      std::ofstream out(o.eval_output, std::ios::app);
      out.precision(9);
      out << "{\"checkpoint\": \"" << checkpoint << "\", \"step\": " << e.step() << ", \"val_loss\": " << loss
          << ", \"perplexity\": " << ppl << ", \"batches\": " << batches << ", \"tokens\": " << tokens
          << ", \"world_size\": " << world << "}\n";
      if (!out) problem = "--eval-output " + o.eval_output + ": cannot write it; choose a writable file";
    }
  }
  agree(MPI_COMM_WORLD, problem);
  return 0;
}

int nothing_to_do(const std::string& checkpoint, int step, int steps) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank == 0) {
    std::printf("mics-train: nothing to do: %s is at step %d and --steps is %d; raise --steps to train further\n",
                checkpoint.c_str(), step, steps);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace mics::train
