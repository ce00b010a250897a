#include "mics/model/generate.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>

#include "mics/core/error.hpp"
#include "mics/model/layout.hpp"

namespace mics::model {

ModelConfig model_config_from_text(const std::string& text, const std::string& where) {
  namespace po = boost::program_options;
  if (text.empty()) throw UsageError(where + ": no model config is stored");
  try {
    po::options_description desc;
    add_model_options(desc);
    desc.add_options()("name", po::value<std::string>(), "preset name");
    std::istringstream is(text);
    po::variables_map vm;
    po::store(po::parse_config_file(is, desc, /*allow_unregistered=*/true), vm);
    po::notify(vm);
    ModelConfig cfg = model_config_from_variables(vm);
    if (vm.count("name")) cfg.name = vm["name"].as<std::string>();
    return cfg;
  } catch (const std::exception& e) {
    throw UsageError(where + ": the stored model config is not a mics model preset (" + e.what() + ")");
  }
}

namespace {
// A uniform double in [0, 1) from the top 53 bits of one draw: unlike the standard
// distributions, the same on every standard library.
double uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }
}  // namespace

std::int32_t sample_token(std::span<const float> logits, const SamplingOptions& o, std::mt19937_64& rng) {
  const auto n = static_cast<std::int32_t>(logits.size());
  if (n == 0) throw Error("sample_token: empty logits");
  if (o.temperature <= 0)
    return static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  std::vector<std::int32_t> ids(static_cast<std::size_t>(n));
  std::iota(ids.begin(), ids.end(), 0);
  std::size_t keep = ids.size();
  if (o.top_k > 0 && o.top_k < n) {
    keep = static_cast<std::size_t>(o.top_k);
    // Larger logit first, lower id on ties: a fixed order, so the draw is reproducible.
    std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(keep), ids.end(),
                      [&](std::int32_t a, std::int32_t b) {
                        return logits[static_cast<std::size_t>(a)] > logits[static_cast<std::size_t>(b)] ||
                               (logits[static_cast<std::size_t>(a)] == logits[static_cast<std::size_t>(b)] && a < b);
                      });
    ids.resize(keep);
  }
  double mx = -INFINITY;
  for (auto id : ids) mx = std::max(mx, static_cast<double>(logits[static_cast<std::size_t>(id)]));
  std::vector<double> p(keep);
  double z = 0;
  for (std::size_t i = 0; i < keep; ++i) {
    p[i] = std::exp((static_cast<double>(logits[static_cast<std::size_t>(ids[i])]) - mx) / o.temperature);
    z += p[i];
  }
  double u = uniform01(rng) * z;
  for (std::size_t i = 0; i < keep; ++i) {
    u -= p[i];
    if (u < 0) return ids[i];
  }
  return ids[keep - 1];  // u within rounding of z
}

Generator::Generator(const ModelConfig& cfg, device::Backend& backend, const std::vector<std::vector<float>>& weights)
    : cfg_(cfg), be_(backend) {
  if (cfg.variant != Variant::gpt)
    throw UsageError("model '" + cfg.name + "' is a " + variant_name(cfg.variant) +
                     " encoder; text generation needs a GPT (causal) model");
  const BucketLayout layout = make_layout(cfg);
  if (weights.size() != layout.buckets.size())
    throw Error("generator: " + std::to_string(weights.size()) + " weight buckets for a model of " +
                std::to_string(layout.buckets.size()));
  for (std::size_t b = 0; b < weights.size(); ++b) {
    if (weights[b].size() != layout.buckets[b].count)
      throw Error("generator: bucket '" + layout.buckets[b].name + "' has " + std::to_string(weights[b].size()) +
                  " values, the model needs " + std::to_string(layout.buckets[b].count));
    params_.emplace_back(be_, weights[b].size() * sizeof(float));
    be_.copy_to_device(params_.back().get(), weights[b].data(), weights[b].size() * sizeof(float));
  }
  model_ = std::make_unique<Transformer>(cfg, be_, device::DType::f32, 1);
}

Generator::~Generator() = default;

std::vector<float> Generator::logits(const std::vector<std::int32_t>& tokens) {
  const auto T = static_cast<std::size_t>(cfg_.seq);
  if (tokens.empty() || tokens.size() > T)
    throw Error("generator: " + std::to_string(tokens.size()) + " tokens; between 1 and " + std::to_string(T) +
                " fit the model");
  // Positions after the sequence are padding; causal attention keeps them from
  // influencing the positions read back.
  std::vector<std::int32_t> in(T, 0), targets(T, -1);
  std::copy(tokens.begin(), tokens.end(), in.begin());
  model_->set_batch(in.data(), targets.data());
  std::vector<const void*> p;
  for (const auto& b : params_) p.push_back(b.get());
  model_->forward(p);
  const std::size_t V = static_cast<std::size_t>(cfg_.vocab);
  std::vector<float> out(tokens.size() * V);
  be_.copy_to_host(out.data(), model_->logits(), out.size() * sizeof(float));
  return out;
}

std::vector<float> Generator::next_logits(const std::vector<std::int32_t>& context) {
  const auto T = static_cast<std::size_t>(cfg_.seq);
  const std::vector<std::int32_t> window(context.size() > T ? context.end() - static_cast<std::ptrdiff_t>(T)
                                                            : context.begin(),
                                         context.end());
  std::vector<float> all = logits(window);
  const std::size_t V = static_cast<std::size_t>(cfg_.vocab);
  return {all.end() - static_cast<std::ptrdiff_t>(V), all.end()};
}

std::vector<std::int32_t> Generator::generate(const std::vector<std::int32_t>& prompt, int count,
                                              const SamplingOptions& o, std::uint64_t seed,
                                              const std::function<void(std::int32_t)>& on_token) {
  if (prompt.empty()) throw UsageError("the prompt is empty; give at least one token");
  std::mt19937_64 rng(seed);
  std::vector<std::int32_t> context = prompt, fresh;
  for (int i = 0; i < count; ++i) {
    const std::vector<float> l = next_logits(context);
    const std::int32_t t = sample_token(l, o, rng);
    context.push_back(t);
    fresh.push_back(t);
    if (on_token) on_token(t);
  }
  return fresh;
}

}  // namespace mics::model
