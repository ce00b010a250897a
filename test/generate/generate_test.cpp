// Sampling from a checkpoint: greedy decoding against the argmax of the model's own
// forward pass, the sampler's draws against softmax, and seeds.
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <random>

#include "mics/checkpoint/checkpoint.hpp"
#include "mics/core/error.hpp"
#include "mics/device/backend.hpp"
#include "mics/model/generate.hpp"
#include "mics/model/layout.hpp"
#include "mics/model/transformer.hpp"

namespace ck = mics::checkpoint;
namespace md = mics::model;
using mics::device::DType;

namespace {

md::ModelConfig small_gpt() {
  md::ModelConfig c;
  c.name = "gen-test";
  c.layers = 2;
  c.hidden = 32;
  c.heads = 4;
  c.seq = 24;
  c.vocab = 256;
  return c;
}

std::string preset_text(const md::ModelConfig& c) {
  return "name = " + c.name + "\nvariant = gpt\nlayers = " + std::to_string(c.layers) + "\nhidden = " +
         std::to_string(c.hidden) + "\nheads = " + std::to_string(c.heads) + "\nseq = " + std::to_string(c.seq) +
         "\nvocab = " + std::to_string(c.vocab) + "\n";
}

// The model's initial weights, bucket by bucket, with every value scaled so that the
// logits spread (GPT-2's 0.02 would make every continuation almost equally likely).
std::vector<std::vector<float>> init_weights(const md::ModelConfig& c, std::uint64_t seed) {
  const auto layout = md::make_layout(c);
  std::vector<std::vector<float>> w;
  for (std::size_t b = 0; b < layout.buckets.size(); ++b) {
    w.emplace_back(layout.buckets[b].count);
    md::init_bucket(c, layout, static_cast<int>(b), 0, w.back().size(), DType::f32, w.back().data(), seed);
    for (auto& x : w.back()) x *= 20.0f;
  }
  return w;
}

// Saves `w` as a one-rank checkpoint (p = 1) and returns its path.
std::string save_checkpoint(const std::string& dir, const md::ModelConfig& c, std::vector<std::vector<float>> w) {
  const auto layout = md::make_layout(c);
  std::vector<std::vector<float>> m(w.size()), v(w.size());
  ck::ShardState st;
  st.comm = MPI_COMM_SELF;
  st.layout = &layout;
  for (std::size_t b = 0; b < w.size(); ++b) {
    const auto s = md::shard_bucket(layout.buckets[b].count, 1, st.align);
    w[b].resize(s.chunk, 0.0f);
    m[b].assign(s.chunk, 0.0f);
    v[b].assign(s.chunk, 0.0f);
    st.buckets.push_back({w[b], m[b], v[b]});
  }
  ck::Metadata meta;
  meta.step = 3;
  meta.model_config = preset_text(c);
  meta.layout = {1, 1, 1, "ddp", false};
  meta.rng_state = {7};
  meta.data_position = {3, 1};
  std::filesystem::remove_all(dir);
  return ck::save(dir, st, meta, 0);
}

std::int32_t argmax(const float* row, std::int64_t n) {
  return static_cast<std::int32_t>(std::max_element(row, row + n) - row);
}

}  // namespace

BOOST_AUTO_TEST_CASE(greedy_decoding_is_the_argmax_of_the_forward_pass) {
  const md::ModelConfig cfg = small_gpt();
  const auto weights = init_weights(cfg, 7);
  const std::string path = save_checkpoint("gen_test_ckpt", cfg, weights);

  // Through the checkpoint: read back, rebuild the model from the stored config, decode.
  const ck::Weights read = ck::read_weights(MPI_COMM_SELF, path);
  const md::ModelConfig stored = md::model_config_from_text(read.info.meta.model_config, path);
  BOOST_REQUIRE_EQUAL(stored.hidden, cfg.hidden);
  BOOST_REQUIRE_EQUAL(read.buckets.size(), weights.size());
  for (std::size_t b = 0; b < weights.size(); ++b) BOOST_CHECK(read.buckets[b] == weights[b]);
  auto be = mics::device::make_cpu_backend(1);
  md::Generator gen(stored, *be, read.buckets);
  const std::vector<std::int32_t> prompt = {0, 'T', 'h', 'e', ' '};
  const int count = static_cast<int>(cfg.seq) - static_cast<int>(prompt.size());
  const auto fresh = gen.generate(prompt, count, {0.0, 0}, 1);
  BOOST_REQUIRE_EQUAL(fresh.size(), static_cast<std::size_t>(count));

  // Independently: one forward pass of a model built from the in-memory weights over the
  // whole decoded sequence; each new token must be the argmax at the position before it.
  std::vector<std::int32_t> seq = prompt;
  seq.insert(seq.end(), fresh.begin(), fresh.end());
  md::Transformer model(cfg, *be, DType::f32, 1);
  std::vector<std::int32_t> targets(seq.size(), -1);
  model.set_batch(seq.data(), targets.data());
  std::vector<const void*> params;
  for (const auto& b : weights) params.push_back(b.data());
  model.forward(params);
  const auto V = cfg.vocab;
  std::vector<float> logits(seq.size() * static_cast<std::size_t>(V));
  be->copy_to_host(logits.data(), model.logits(), logits.size() * sizeof(float));
  std::size_t distinct = 0;
  std::map<std::int32_t, int> seen;
  for (std::size_t t = prompt.size(); t < seq.size(); ++t) {
    BOOST_CHECK_EQUAL(seq[t], argmax(&logits[(t - 1) * static_cast<std::size_t>(V)], V));
    if (seen[seq[t]]++ == 0) ++distinct;
  }
  BOOST_CHECK_GT(distinct, 1u);  // not a degenerate constant model
  // The generator's own logits of the whole sequence are the same pass.
  const auto again = gen.logits(seq);
  BOOST_CHECK(again == logits);
}

BOOST_AUTO_TEST_CASE(sampler_draws_follow_softmax_and_top_k) {
  const std::vector<float> logits = {1.0f, 2.0f, 0.5f, 2.0f, -1.0f};
  std::mt19937_64 rng(42);
  BOOST_CHECK_EQUAL(md::sample_token(logits, {0.0, 0}, rng), 1);  // greedy: lowest id on ties
  for (int i = 0; i < 50; ++i) {
    const auto t = md::sample_token(logits, {1.0, 2}, rng);
    BOOST_CHECK(t == 1 || t == 3);  // top-2
  }
  // Empirical frequencies at temperature 2 against softmax(logits / 2).
  const int n = 40000;
  std::vector<int> hits(logits.size(), 0);
  for (int i = 0; i < n; ++i) ++hits[static_cast<std::size_t>(md::sample_token(logits, {2.0, 0}, rng))];
  double z = 0;
  for (float l : logits) z += std::exp(static_cast<double>(l) / 2.0);
  for (std::size_t k = 0; k < logits.size(); ++k) {
    const double p = std::exp(static_cast<double>(logits[k]) / 2.0) / z;
    const double sd = std::sqrt(p * (1 - p) / n);
    BOOST_CHECK_SMALL(hits[k] / static_cast<double>(n) - p, 5 * sd);
  }
}

BOOST_AUTO_TEST_CASE(same_seed_same_tokens_other_seed_other_tokens) {
  const md::ModelConfig cfg = small_gpt();
  auto be = mics::device::make_cpu_backend(1);
  md::Generator gen(cfg, *be, init_weights(cfg, 11));
  const std::vector<std::int32_t> prompt = {0};
  const auto a = gen.generate(prompt, 40, {1.0, 0}, 5);
  const auto b = gen.generate(prompt, 40, {1.0, 0}, 5);
  const auto c = gen.generate(prompt, 40, {1.0, 0}, 6);
  BOOST_CHECK(a == b);
  BOOST_CHECK(a != c);
  // Longer than the model's 24 positions: the window slides.
  BOOST_CHECK_EQUAL(gen.generate(prompt, 60, {0.8, 20}, 5).size(), 60u);
}

BOOST_AUTO_TEST_CASE(stored_config_and_model_checks) {
  BOOST_CHECK_THROW(md::model_config_from_text("", "x.h5"), mics::UsageError);
  BOOST_CHECK_THROW(md::model_config_from_text("n_layer = 2\n", "x.h5"), mics::UsageError);
  md::ModelConfig bert = small_gpt();
  bert.variant = md::Variant::bert;
  auto be = mics::device::make_cpu_backend(1);
  BOOST_CHECK_THROW(md::Generator(bert, *be, init_weights(small_gpt(), 1)), mics::UsageError);
}
