#pragma once
// Text generation from a GPT model held in host fp32 buckets (a checkpoint's weights, or
// a training run's gathered master weights): logits of a token sequence, and sampling
// with temperature and top-k from a seeded generator.
//
// Each new token runs one forward pass over the last `seq` tokens (no key/value cache):
// simple, and exactly the forward pass training uses.
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "mics/device/backend.hpp"
#include "mics/model/config.hpp"
#include "mics/model/transformer.hpp"

namespace mics::model {

// The model a checkpoint's stored `model_config` text describes (the `key = value`
// preset lines mics-train stores: name, variant, layers, hidden, heads, seq, vocab).
// Throws mics::UsageError prefixed by `where` when the text is not such a preset.
ModelConfig model_config_from_text(const std::string& text, const std::string& where);

struct SamplingOptions {
  double temperature = 1.0;  // 0: greedy (argmax, the lowest id on ties)
  int top_k = 0;             // 0: the whole vocabulary
};

// One draw from softmax(logits / temperature) restricted to the top_k largest logits.
// Uses only rng's raw 64-bit output, so a seed gives the same draws on every platform.
std::int32_t sample_token(std::span<const float> logits, const SamplingOptions& o, std::mt19937_64& rng);

class Generator {
public:
  // weights[b]: bucket b of model::make_layout(cfg), unpadded fp32. GPT models only
  // (UsageError otherwise). Computes in f32 on `backend`.
  Generator(const ModelConfig& cfg, device::Backend& backend, const std::vector<std::vector<float>>& weights);
  ~Generator();
  Generator(const Generator&) = delete;
  Generator& operator=(const Generator&) = delete;

  const ModelConfig& config() const { return cfg_; }

  // Logits [n, V] (row-major, host) at every position of `tokens`, 1 <= n <= seq.
  std::vector<float> logits(const std::vector<std::int32_t>& tokens);
  // Logits of the next token after `context` (its last seq tokens are used).
  std::vector<float> next_logits(const std::vector<std::int32_t>& context);

  // Appends `count` tokens to `prompt` (non-empty, ids in [0, V)), calling on_token for
  // each as it is drawn; returns only the new tokens.
  std::vector<std::int32_t> generate(const std::vector<std::int32_t>& prompt, int count,
                                     const SamplingOptions& o, std::uint64_t seed,
                                     const std::function<void(std::int32_t)>& on_token = {});

private:
  ModelConfig cfg_;
  device::Backend& be_;
  std::unique_ptr<Transformer> model_;
  std::vector<device::Buffer> params_;
};

}  // namespace mics::model
