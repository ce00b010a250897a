#include "mics/data/dataset.hpp"

#include <cmath>
#include <filesystem>
#include <limits>
#include <string>

#include "mics/core/check.hpp"
#include "mics/core/error.hpp"

namespace mics::data {
namespace {

constexpr std::uint64_t kGolden = 0x9e3779b97f4a7c15ULL;
// Evaluation walks of the synthetic data are keyed in their own domain, so no training
// step (whatever its seed) draws the same sequence except by a 2^-64 accident.
constexpr std::uint64_t kEvalDomain = 0xe7a1d0c5e11a7e5dULL;

std::uint64_t finalize(std::uint64_t z) noexcept {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// splitmix64: a counter-based stream, so a sequence's draws depend only on its key.
struct SplitMix {
  std::uint64_t state;
  std::uint64_t next() noexcept { return finalize(state += kGolden); }
  double uniform() noexcept { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
};

}  // namespace

std::uint64_t mix3(std::uint64_t a, std::uint64_t b, std::uint64_t c) noexcept {
  return finalize(finalize(finalize(a + kGolden) ^ b) ^ c);
}

// ---------------------------------------------------------------- TokenFileDataset

TokenFileDataset::TokenFileDataset(const std::string& path, int vocab)
    : file_(path, vocab), vocab_(vocab) {
  if (vocab < 1 || vocab > 65536)
    throw UsageError("vocabulary " + std::to_string(vocab) + " must lie in [1, 65536] for uint16 shards");
}

void TokenFileDataset::check_length(int T) const {
  if (T < 1) throw UsageError("sequence length " + std::to_string(T) + " must be at least 1");
  if (static_cast<std::int64_t>(file_.size()) < std::int64_t{T} + 1)
    throw UsageError("token file " + file_.path() + " holds " + std::to_string(file_.size()) +
                     " tokens, fewer than sequence length + 1 = " + std::to_string(T + 1));
}

void TokenFileDataset::sequence(std::uint64_t seed, std::int64_t step, std::int64_t index, int T,
                                std::int32_t* tokens, std::int32_t* targets) const {
  check_length(T);
  const auto n_starts = static_cast<std::uint64_t>(file_.size()) - static_cast<std::uint64_t>(T);
  // Modulo bias is at most n_starts / 2^64: irrelevant at any shard size.
  const std::uint64_t start =
      mix3(seed, static_cast<std::uint64_t>(step), static_cast<std::uint64_t>(index)) % n_starts;
  const std::uint16_t* s = file_.tokens().data() + start;
  for (int j = 0; j < T; ++j) {
    tokens[j] = s[j];
    targets[j] = s[j + 1];
  }
}

std::int64_t TokenFileDataset::eval_sequences(int T) const {
  check_length(T);
  return (static_cast<std::int64_t>(file_.size()) - 1) / T;
}

void TokenFileDataset::eval_sequence(std::int64_t index, int T, std::int32_t* tokens,
                                     std::int32_t* targets) const {
  const std::int64_t n = eval_sequences(T);
  MICS_ASSERT(index >= 0 && index < n,
              "eval sequence " + std::to_string(index) + " of " + std::to_string(n));
  const std::uint16_t* s = file_.tokens().data() + index * T;
  for (int j = 0; j < T; ++j) {
    tokens[j] = s[j];
    targets[j] = s[j + 1];
  }
}

// ---------------------------------------------------------------- SyntheticDataset

SyntheticDataset::SyntheticDataset(int vocab, int branching, std::uint64_t chain_seed)
    : vocab_(vocab), branching_(branching) {
  if (vocab < 2 || vocab > 65536)
    throw UsageError("synthetic vocabulary " + std::to_string(vocab) + " must lie in [2, 65536]");
  if (branching < 1 || branching > 16 || branching > vocab)
    throw UsageError("synthetic branching " + std::to_string(branching) +
                     " must lie in [1, min(16, vocabulary)]");
  const auto b = static_cast<std::size_t>(branching);
  next_.resize(static_cast<std::size_t>(vocab) * b);
  SplitMix rng{chain_seed};
  for (int t = 0; t < vocab; ++t) {
    std::int32_t* succ = &next_[static_cast<std::size_t>(t) * b];
    for (std::size_t k = 0; k < b; ++k) {
      // Distinct successors by rejection: at most 16 of them, so this is cheap.
      for (;;) {
        const auto cand = static_cast<std::int32_t>(rng.next() % static_cast<std::uint64_t>(vocab));
        bool seen = false;
        for (std::size_t q = 0; q < k; ++q) seen = seen || succ[q] == cand;
        if (!seen) {
          succ[k] = cand;
          break;
        }
      }
    }
  }
  double total = 0.0;
  for (std::size_t k = 0; k < b; ++k) {
    prob_.push_back(std::ldexp(1.0, branching - 1 - static_cast<int>(k)));
    total += prob_.back();
  }
  double c = 0.0;
  for (auto& p : prob_) {
    p /= total;
    c += p;
    cumulative_.push_back(c);
  }
  cumulative_.back() = 1.0;
}

double SyntheticDataset::optimal_loss() const {
  double h = 0.0;
  for (const double p : prob_) h -= p * std::log(p);
  return h;
}

void SyntheticDataset::walk(std::uint64_t key, int T, std::int32_t* tokens,
                            std::int32_t* targets) const {
  if (T < 1) throw UsageError("sequence length " + std::to_string(T) + " must be at least 1");
  SplitMix rng{key};
  auto cur = static_cast<std::int32_t>(rng.next() % static_cast<std::uint64_t>(vocab_));
  for (int j = 0; j < T; ++j) {
    tokens[j] = cur;
    const double u = rng.uniform();
    int k = 0;
    while (k + 1 < branching_ && u >= cumulative_[static_cast<std::size_t>(k)]) ++k;
    cur = successors(cur)[k];
    targets[j] = cur;
  }
}

void SyntheticDataset::sequence(std::uint64_t seed, std::int64_t step, std::int64_t index, int T,
                                std::int32_t* tokens, std::int32_t* targets) const {
  walk(mix3(seed, static_cast<std::uint64_t>(step), static_cast<std::uint64_t>(index)), T, tokens,
       targets);
}

std::int64_t SyntheticDataset::eval_sequences(int T) const {
  if (T < 1) throw UsageError("sequence length " + std::to_string(T) + " must be at least 1");
  return std::numeric_limits<std::int64_t>::max();
}

void SyntheticDataset::eval_sequence(std::int64_t index, int T, std::int32_t* tokens,
                                     std::int32_t* targets) const {
  MICS_ASSERT(index >= 0, "eval sequence index " + std::to_string(index));
  walk(mix3(kEvalDomain, ~0ULL, static_cast<std::uint64_t>(index)), T, tokens, targets);
}

// ---------------------------------------------------------------- sampler

void BatchLayout::validate() const {
  if (global_batch < 1 || dp_size < 1 || micro_batch < 1)
    throw UsageError("global batch " + std::to_string(global_batch) + ", data-parallel size " +
                     std::to_string(dp_size) + " and micro-batch " + std::to_string(micro_batch) +
                     " must all be positive");
  const std::int64_t per_micro_step = std::int64_t{dp_size} * micro_batch;
  if (global_batch % per_micro_step != 0)
    throw UsageError("global batch " + std::to_string(global_batch) +
                     " must be a multiple of data-parallel ranks x micro-batch = " +
                     std::to_string(dp_size) + " x " + std::to_string(micro_batch) + " = " +
                     std::to_string(per_micro_step));
}

namespace {

void check_slot(const BatchLayout& layout, int dp_rank, int micro_step) {
  layout.validate();
  MICS_ASSERT(dp_rank >= 0 && dp_rank < layout.dp_size,
              "data-parallel rank " + std::to_string(dp_rank) + " of " + std::to_string(layout.dp_size));
  MICS_ASSERT(micro_step >= 0 && micro_step < layout.micro_steps(),
              "micro-step " + std::to_string(micro_step) + " of " + std::to_string(layout.micro_steps()));
}

}  // namespace

void fill_micro_batch(const Dataset& data, std::uint64_t seed, std::int64_t step,
                      const BatchLayout& layout, int dp_rank, int micro_step, int T,
                      std::int32_t* tokens, std::int32_t* targets) {
  check_slot(layout, dp_rank, micro_step);
  for (int j = 0; j < layout.micro_batch; ++j) {
    const auto row = static_cast<std::size_t>(j) * static_cast<std::size_t>(T);
    data.sequence(seed, step, layout.sequence_index(dp_rank, micro_step, j), T, tokens + row,
                  targets + row);
  }
}

std::int64_t max_eval_batches(const Dataset& data, std::int64_t global_batch, int T) {
  if (global_batch < 1) throw UsageError("global batch " + std::to_string(global_batch) + " must be positive");
  return data.eval_sequences(T) / global_batch;
}

void fill_eval_micro_batch(const Dataset& data, std::int64_t eval_batch,
                           const BatchLayout& layout, int dp_rank, int micro_step, int T,
                           std::int32_t* tokens, std::int32_t* targets) {
  check_slot(layout, dp_rank, micro_step);
  const std::int64_t batches = max_eval_batches(data, layout.global_batch, T);
  if (eval_batch < 0 || eval_batch >= batches)
    throw UsageError("validation batch " + std::to_string(eval_batch) + " is out of range: the " +
                     "validation data hold " + std::to_string(batches) + " batches of " +
                     std::to_string(layout.global_batch) + " sequences of length " +
                     std::to_string(T));
  for (int j = 0; j < layout.micro_batch; ++j) {
    const auto row = static_cast<std::size_t>(j) * static_cast<std::size_t>(T);
    data.eval_sequence(eval_batch * layout.global_batch + layout.sequence_index(dp_rank, micro_step, j),
                       T, tokens + row, targets + row);
  }
}

// ---------------------------------------------------------------- open_data

DataSource open_data(const std::string& spec, int vocab) {
  DataSource d;
  if (spec == "synthetic") {
    d.train = std::make_unique<SyntheticDataset>(vocab);
    d.val = std::make_unique<SyntheticDataset>(vocab);
    return d;
  }
  if (spec.empty()) throw UsageError("--data must name 'synthetic', a shard FILE.bin or a PREFIX");
  const std::string bin = ".bin";
  if (spec.size() > bin.size() && spec.compare(spec.size() - bin.size(), bin.size(), bin) == 0) {
    d.train = std::make_unique<TokenFileDataset>(spec, vocab);
    return d;
  }
  const std::string train = spec + "_train.bin", val = spec + "_val.bin";
  std::error_code ec;
  if (!std::filesystem::exists(train, ec))
    throw UsageError("--data " + spec + ": no " + train +
                     " (make it with mics-data convert --output-prefix " + spec +
                     ", or scripts/make-corpus.sh for the default corpus)");
  d.train = std::make_unique<TokenFileDataset>(train, vocab);
  if (std::filesystem::exists(val, ec)) d.val = std::make_unique<TokenFileDataset>(val, vocab);
  return d;
}

}  // namespace mics::data
