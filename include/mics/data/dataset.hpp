#pragma once
// Datasets and the deterministic sampler.
//
// The contract that makes every layout train on the same data: sequence `index` of
// optimizer step `step` is a pure function of (seed, step, index). The global batch of a
// step is the B sequences index = 0..B-1; a layout (W data-parallel ranks, A micro-steps,
// m sequences per micro-batch, B = W*A*m) only decides who computes which of them
// (BatchLayout::sequence_index). So W=1,A=8 and W=4,A=2 see the same global batch.
//
// A sequence is T input tokens and T targets, targets[j] being the token after tokens[j].
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mics/data/token_file.hpp"

namespace mics::data {

class Dataset {
public:
  virtual ~Dataset() = default;
  // Token ids lie in [0, vocab()).
  virtual int vocab() const = 0;
  // Training sequence `index` of `step`: a pure function of (seed, step, index, T).
  // tokens and targets each point to T int32.
  virtual void sequence(std::uint64_t seed, std::int64_t step, std::int64_t index, int T,
                        std::int32_t* tokens, std::int32_t* targets) const = 0;
  // Evaluation sequences, a fixed list independent of any seed: index in
  // [0, eval_sequences(T)). Throws UsageError when T does not fit the data.
  virtual std::int64_t eval_sequences(int T) const = 0;
  virtual void eval_sequence(std::int64_t index, int T, std::int32_t* tokens,
                             std::int32_t* targets) const = 0;
};

// Windows of a token shard. Training: sequence (seed, step, index) starts at a position
// drawn by a counter-based hash of the triple, uniform over [0, N-T-1]. Evaluation:
// sequence i is the window starting at i*T (consecutive windows, no overlap of inputs),
// so eval_sequences(T) = (N-1)/T.
class TokenFileDataset final : public Dataset {
public:
  // vocab: the model's vocabulary; every token of the file is checked against it.
  TokenFileDataset(const std::string& path, int vocab = 256);
  int vocab() const override { return vocab_; }
  void sequence(std::uint64_t seed, std::int64_t step, std::int64_t index, int T,
                std::int32_t* tokens, std::int32_t* targets) const override;
  std::int64_t eval_sequences(int T) const override;
  void eval_sequence(std::int64_t index, int T, std::int32_t* tokens,
                     std::int32_t* targets) const override;
  const TokenFile& file() const noexcept { return file_; }

private:
  void check_length(int T) const;
  TokenFile file_;
  int vocab_;
};

// A fixed random sparse Markov chain over `vocab` tokens: each token has `branching`
// distinct successors with probabilities proportional to 2^(branching-1), ..., 2, 1.
// The chain itself comes from `chain_seed` (so it is the same task whatever the sampling
// seed); sequences are walks whose first token is uniform and whose draws come from a
// counter-based generator keyed by (seed, step, index). Every target is one transition of
// the chain, so a model that learns it reaches optimal_loss() (about 1.14 nats for
// branching 4) at every position, down from ln(vocab) (5.55 for 256) at initialisation.
class SyntheticDataset final : public Dataset {
public:
  explicit SyntheticDataset(int vocab = 256, int branching = 4,
                            std::uint64_t chain_seed = 0x5eedc4a1);
  int vocab() const override { return vocab_; }
  void sequence(std::uint64_t seed, std::int64_t step, std::int64_t index, int T,
                std::int32_t* tokens, std::int32_t* targets) const override;
  // Unbounded (INT64_MAX): evaluation walks come from a key no training step uses.
  std::int64_t eval_sequences(int T) const override;
  void eval_sequence(std::int64_t index, int T, std::int32_t* tokens,
                     std::int32_t* targets) const override;
  int branching() const noexcept { return branching_; }
  // Successors of token t and their probabilities (for tests and for reading results).
  const std::int32_t* successors(int t) const { return &next_[static_cast<std::size_t>(t) * branching_]; }
  const std::vector<double>& probabilities() const noexcept { return prob_; }
  // Entropy of one transition in nats: the lowest mean loss on positions after the first.
  double optimal_loss() const;

private:
  void walk(std::uint64_t key, int T, std::int32_t* tokens, std::int32_t* targets) const;
  int vocab_;
  int branching_;
  std::vector<std::int32_t> next_;  // [vocab, branching]
  std::vector<double> prob_;        // [branching]
  std::vector<double> cumulative_;  // [branching], last = 1
};

// How a global batch of B sequences is spread over W data-parallel ranks, each running
// A = B/(W*m) micro-steps of m sequences.
struct BatchLayout {
  std::int64_t global_batch = 1;  // B
  int dp_size = 1;                // W
  int micro_batch = 1;            // m

  // Throws UsageError unless B, W, m > 0 and B is a multiple of W*m.
  void validate() const;
  int micro_steps() const { return static_cast<int>(global_batch / (std::int64_t{dp_size} * micro_batch)); }
  // The fixed mapping (rank-major): slot j of micro-step a on rank r is sequence
  //   i = (r*A + a)*m + j,
  // so each rank reads one contiguous block of B/W sequences, and the union over
  // r < W, a < A, j < m is exactly 0..B-1.
  std::int64_t sequence_index(int dp_rank, int micro_step, int slot) const {
    return (std::int64_t{dp_rank} * micro_steps() + micro_step) * micro_batch + slot;
  }
};

// Fills tokens[m, T] and targets[m, T] (row-major) for rank r's micro-step a of `step`.
// Throws UsageError for an invalid layout or rank/micro-step out of range.
void fill_micro_batch(const Dataset& data, std::uint64_t seed, std::int64_t step,
                      const BatchLayout& layout, int dp_rank, int micro_step, int T,
                      std::int32_t* tokens, std::int32_t* targets);

// Evaluation uses the same layout: evaluation batch e is the B eval sequences
// e*B .. e*B+B-1, spread exactly as a training step. Every rank then runs the same number
// of forward passes (A per batch), which a sharded forward needs, since its gathers are
// collectives over the partition group. The mean validation loss is the sum of the
// per-sequence mean losses over all ranks divided by eval_batches*B, for any layout.
std::int64_t max_eval_batches(const Dataset& data, std::int64_t global_batch, int T);
void fill_eval_micro_batch(const Dataset& data, std::int64_t eval_batch,
                           const BatchLayout& layout, int dp_rank, int micro_step, int T,
                           std::int32_t* tokens, std::int32_t* targets);

// What mics-train's --data names, opened for a model with vocabulary `vocab`:
//   "synthetic"        SyntheticDataset(vocab) for training and evaluation;
//   "DIR/name"         DIR/name_train.bin, and DIR/name_val.bin when it exists
//                      (the pair `mics-data convert --output-prefix DIR/name` writes);
//   "FILE.bin"         that shard for training, no validation data.
// val is null when there are no validation data. Faults: UsageError naming the file.
struct DataSource {
  std::unique_ptr<Dataset> train;
  std::unique_ptr<Dataset> val;
};
DataSource open_data(const std::string& spec, int vocab);

// Counter-based mixing (splitmix64 finaliser applied to each word in turn); exposed so
// tests and other concerns can draw per-(seed, step, index) numbers the same way.
std::uint64_t mix3(std::uint64_t a, std::uint64_t b, std::uint64_t c) noexcept;

}  // namespace mics::data
