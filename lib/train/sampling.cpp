#include <cstdio>

#include "mics/core/error.hpp"
#include "mics/data/tokenizer.hpp"
#include "mics/model/generate.hpp"
#include "mics/train/tools.hpp"

namespace mics::train {

namespace {
std::vector<std::int32_t> sample_prompt(const RunOptions& o) {
  std::vector<std::int32_t> ids;
  for (auto t : data::encode_bytes(o.sample_prompt)) ids.push_back(t);
  if (ids.empty()) ids.push_back(data::kEndOfText);
  for (auto t : ids)
    if (t >= o.model.vocab)
      throw UsageError("--sample-prompt: byte " + std::to_string(t) + " is outside the model's vocabulary [0, " +
                       std::to_string(o.model.vocab) + ")");
  return ids;
}

std::string decode(const std::vector<std::int32_t>& ids, std::int64_t vocab) {
  if (vocab > data::kByteVocab) {
    // Not a byte model: show the ids.
    std::string s;
    for (auto t : ids) {
      if (!s.empty()) s += ' ';
      s += std::to_string(t);
    }
    return s;
  }
  return data::decode_bytes(std::vector<std::uint16_t>(ids.begin(), ids.end()));
}
}  // namespace

TrainingSampler::TrainingSampler(const RunOptions& o, engine::Engine& e, device::Backend& be, bool lead)
    : o_(o), eng_(e), be_(be), lead_(lead) {
  if (o.sample_every > 0) (void)sample_prompt(o);  // a bad prompt fails before step 1
}

void TrainingSampler::after_step(int step) {
  if (o_.sample_every <= 0 || step % o_.sample_every != 0) return;
  // Every rank takes part in the gathers; only rank 0 keeps the weights and samples.
  std::vector<std::vector<float>> weights;
  const int buckets = static_cast<int>(eng_.layout().buckets.size());
  for (int b = 0; b < buckets; ++b) {
    std::vector<double> all = eng_.gather_bucket(b);
    if (lead_) weights.emplace_back(all.begin(), all.end());
  }
  if (!lead_) return;
  const std::vector<std::int32_t> prompt = sample_prompt(o_);
  model::Generator gen(o_.model, be_, weights);
  const auto fresh = gen.generate(prompt, o_.sample_tokens, {o_.sample_temperature, 0},
                                  o_.train.seed + static_cast<std::uint64_t>(step));
  std::vector<std::int32_t> all = prompt;
  all.insert(all.end(), fresh.begin(), fresh.end());
  std::printf("mics-train: sample after step %d (%d tokens, temperature %g):\n---\n%s\n---\n", step,
              o_.sample_tokens, o_.sample_temperature, decode(all, o_.model.vocab).c_str());
  std::fflush(stdout);
}

}  // namespace mics::train
