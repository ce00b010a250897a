#pragma once
// BERT's masked-token objective: which positions are predicted and what the model sees.
#include <cstdint>

namespace mics::model {

constexpr double kMaskRate = 0.15;

// The number of positions masked in every sequence of length T: round(0.15*T), at least 1.
// A fixed count (rather than a coin per position) makes every micro-batch count the same
// number of tokens, so averaging over micro-batches and ranks is exact.
std::int64_t masked_per_sequence(std::int64_t T);

// The mask token is the last id of the vocabulary: V-1 (presets reserve it; data
// generators should not emit it).
inline std::int32_t mask_token(std::int64_t vocab) { return static_cast<std::int32_t>(vocab - 1); }

// One sequence of T tokens -> model inputs and targets. masked_per_sequence(T) positions,
// chosen by a seeded shuffle, get target = the original token; of those, 80% show the mask
// token, 10% a random token in [0, V-1), 10% the original. Every other position: input =
// token, target = -1 (ignored). Depends only on (tokens, T, vocab, seed).
void bert_mask_sequence(const std::int32_t* tokens, std::int64_t T, std::int64_t vocab,
                        std::uint64_t seed, std::int32_t* inputs, std::int32_t* targets);

// B sequences [B, T]; sequence b uses seed_b = mix(seed, first_sample + b), so that a
// sample's masking depends on its global index, not on how samples are grouped into
// micro-batches or ranks.
void bert_mask(const std::int32_t* tokens, std::int64_t B, std::int64_t T, std::int64_t vocab,
               std::uint64_t seed, std::int64_t first_sample, std::int32_t* inputs,
               std::int32_t* targets);

}  // namespace mics::model
