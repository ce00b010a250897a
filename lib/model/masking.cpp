// BERT masking: a fixed number of positions per sequence, chosen by a seeded shuffle.
#include "mics/model/masking.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace mics::model {

namespace {
std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
}  // namespace

std::int64_t masked_per_sequence(std::int64_t T) {
  const auto k = static_cast<std::int64_t>(std::llround(kMaskRate * static_cast<double>(T)));
  return std::clamp<std::int64_t>(k, 1, T);
}

void bert_mask_sequence(const std::int32_t* tokens, std::int64_t T, std::int64_t vocab,
                        std::uint64_t seed, std::int32_t* inputs, std::int32_t* targets) {
  std::vector<std::int64_t> pos(static_cast<std::size_t>(T));
  std::iota(pos.begin(), pos.end(), 0);
  const std::int64_t k = masked_per_sequence(T);
  std::uint64_t state = mix(seed);
  // Partial Fisher-Yates: the first k entries become a uniform random k-subset. The
  // modulo bias is below 2^-40 for any realistic T and does not matter here.
  for (std::int64_t i = 0; i < k; ++i) {
    state = mix(state);
    const std::int64_t j = i + static_cast<std::int64_t>(state % static_cast<std::uint64_t>(T - i));
    std::swap(pos[static_cast<std::size_t>(i)], pos[static_cast<std::size_t>(j)]);
  }
  for (std::int64_t t = 0; t < T; ++t) {
    inputs[t] = tokens[t];
    targets[t] = -1;
  }
  for (std::int64_t i = 0; i < k; ++i) {
    const std::int64_t p = pos[static_cast<std::size_t>(i)];
    targets[p] = tokens[p];
    state = mix(state);
    const std::uint64_t r = state % 10;
    if (r < 8) {
      inputs[p] = mask_token(vocab);
    } else if (r == 8) {
      state = mix(state);
      inputs[p] = static_cast<std::int32_t>(state % static_cast<std::uint64_t>(vocab - 1));
    }  // else: the original token stays
  }
}

void bert_mask(const std::int32_t* tokens, std::int64_t B, std::int64_t T, std::int64_t vocab,
               std::uint64_t seed, std::int64_t first_sample, std::int32_t* inputs,
               std::int32_t* targets) {
  for (std::int64_t b = 0; b < B; ++b)
    bert_mask_sequence(tokens + b * T, T, vocab,
                       mix(seed ^ mix(static_cast<std::uint64_t>(first_sample + b))),
                       inputs + b * T, targets + b * T);
}

}  // namespace mics::model
