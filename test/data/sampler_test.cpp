#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "data_test_util.hpp"
#include "mics/core/error.hpp"
#include "mics/data/dataset.hpp"
#include "mics/data/token_file.hpp"

using namespace mics::data;
using mics::test::TempDir;

namespace {

using Seq = std::vector<std::int32_t>;  // T tokens then T targets

// The global batch assembled from every (rank, micro-step) of a layout, keyed by the
// sequence index each slot claims, checking no index is produced twice.
std::map<std::int64_t, Seq> assemble(const Dataset& d, std::uint64_t seed, std::int64_t step,
                                     const BatchLayout& L, int T) {
  std::map<std::int64_t, Seq> out;
  const auto m = static_cast<std::size_t>(L.micro_batch);
  const auto t = static_cast<std::size_t>(T);
  std::vector<std::int32_t> tok(m * t), tgt(m * t);
  for (int r = 0; r < L.dp_size; ++r)
    for (int a = 0; a < L.micro_steps(); ++a) {
      fill_micro_batch(d, seed, step, L, r, a, T, tok.data(), tgt.data());
      for (std::size_t j = 0; j < m; ++j) {
        Seq s(tok.begin() + static_cast<std::ptrdiff_t>(j * t), tok.begin() + static_cast<std::ptrdiff_t>((j + 1) * t));
        s.insert(s.end(), tgt.begin() + static_cast<std::ptrdiff_t>(j * t), tgt.begin() + static_cast<std::ptrdiff_t>((j + 1) * t));
        const auto i = L.sequence_index(r, a, static_cast<int>(j));
        BOOST_REQUIRE(out.emplace(i, s).second);
      }
    }
  return out;
}

std::string make_shard(const TempDir& dir, int n) {
  std::vector<std::uint16_t> tokens;
  for (int i = 0; i < n; ++i) tokens.push_back(static_cast<std::uint16_t>((i * 37 + i / 7) % 256));
  const auto path = dir.file("s.bin");
  write_token_file(path, tokens);
  return path;
}

void check_layouts_agree(const Dataset& d) {
  const int T = 16;
  const std::int64_t B = 24;
  for (const std::int64_t step : {0, 1, 7}) {
    const auto reference = assemble(d, 1234, step, BatchLayout{B, 1, 24}, T);
    BOOST_REQUIRE_EQUAL(reference.size(), 24u);
    BOOST_CHECK_EQUAL(reference.begin()->first, 0);
    BOOST_CHECK_EQUAL(reference.rbegin()->first, 23);
    // W x m with A = B/(W m): 1x1 (A=24), 2x3 (A=4), 4x2 (A=3), 3x8 (A=1), 8x1 (A=3), 6x4.
    for (const auto& [W, m] : std::vector<std::pair<int, int>>{{1, 1}, {2, 3}, {4, 2}, {3, 8}, {8, 1}, {6, 4}}) {
      BOOST_TEST_CONTEXT("step " << step << " W " << W << " m " << m) {
        BOOST_CHECK(assemble(d, 1234, step, BatchLayout{B, W, m}, T) == reference);
      }
    }
  }
}

}  // namespace

BOOST_AUTO_TEST_CASE(rank_major_mapping_covers_the_global_batch_once) {
  const BatchLayout L{24, 4, 2};  // A = 3
  BOOST_CHECK_EQUAL(L.micro_steps(), 3);
  std::set<std::int64_t> seen;
  for (int r = 0; r < 4; ++r)
    for (int a = 0; a < 3; ++a)
      for (int j = 0; j < 2; ++j) BOOST_CHECK(seen.insert(L.sequence_index(r, a, j)).second);
  BOOST_CHECK_EQUAL(seen.size(), 24u);
  BOOST_CHECK_EQUAL(*seen.rbegin(), 23);
  BOOST_CHECK_EQUAL(L.sequence_index(1, 0, 0), 6);  // rank 1 starts at B/W
}

BOOST_AUTO_TEST_CASE(token_file_layouts_see_the_same_global_batch) {
  TempDir dir;
  TokenFileDataset d(make_shard(dir, 3000));
  check_layouts_agree(d);
}

BOOST_AUTO_TEST_CASE(synthetic_layouts_see_the_same_global_batch) {
  check_layouts_agree(SyntheticDataset(256, 4, 99));
}

BOOST_AUTO_TEST_CASE(sequences_are_deterministic_and_depend_on_seed_step_index) {
  TempDir dir;
  TokenFileDataset file(make_shard(dir, 3000));
  SyntheticDataset syn;
  for (const Dataset* d : {static_cast<const Dataset*>(&file), static_cast<const Dataset*>(&syn)}) {
    const int T = 32;
    Seq a(2 * T), b(2 * T), c(2 * T), e(2 * T), f(2 * T);
    d->sequence(5, 3, 11, T, a.data(), a.data() + T);
    d->sequence(5, 3, 11, T, b.data(), b.data() + T);
    BOOST_CHECK(a == b);
    d->sequence(6, 3, 11, T, c.data(), c.data() + T);
    d->sequence(5, 4, 11, T, e.data(), e.data() + T);
    d->sequence(5, 3, 12, T, f.data(), f.data() + T);
    BOOST_CHECK(a != c);
    BOOST_CHECK(a != e);
    BOOST_CHECK(a != f);
    // Targets are the next tokens.
    for (int j = 0; j + 1 < T; ++j) BOOST_CHECK_EQUAL(a[static_cast<std::size_t>(T + j)], a[static_cast<std::size_t>(j + 1)]);
  }
}

BOOST_AUTO_TEST_CASE(token_file_windows_are_contiguous_slices) {
  TempDir dir;
  const auto path = make_shard(dir, 500);
  TokenFileDataset d(path);
  TokenFile tf(path);
  const int T = 20;
  Seq s(2 * T);
  std::set<std::int32_t> first;
  for (int i = 0; i < 200; ++i) {
    d.sequence(1, 0, i, T, s.data(), s.data() + T);
    // Find the window: the (unique here) start position whose slice matches.
    bool found = false;
    for (std::size_t p = 0; p + T + 1 <= tf.size() && !found; ++p) {
      bool match = true;
      for (int j = 0; j < T && match; ++j)
        match = tf.tokens()[p + static_cast<std::size_t>(j)] == s[static_cast<std::size_t>(j)] &&
                tf.tokens()[p + static_cast<std::size_t>(j) + 1] == s[static_cast<std::size_t>(T + j)];
      found = match;
    }
    BOOST_CHECK(found);
  }
}

BOOST_AUTO_TEST_CASE(token_file_evaluation_tiles_the_file) {
  TempDir dir;
  const auto path = make_shard(dir, 101);
  TokenFileDataset d(path);
  TokenFile tf(path);
  BOOST_CHECK_EQUAL(d.eval_sequences(10), 10);
  BOOST_CHECK_EQUAL(d.eval_sequences(100), 1);
  Seq s(20);
  d.eval_sequence(9, 10, s.data(), s.data() + 10);
  BOOST_CHECK_EQUAL(s[0], tf.tokens()[90]);
  BOOST_CHECK_EQUAL(s[19], tf.tokens()[100]);
  BOOST_CHECK_THROW(d.eval_sequences(101), mics::UsageError);  // needs T+1 tokens
  BOOST_CHECK_THROW(d.sequence(0, 0, 0, 101, s.data(), s.data()), mics::UsageError);
}

BOOST_AUTO_TEST_CASE(evaluation_batches_are_layout_independent) {
  TempDir dir;
  TokenFileDataset d(make_shard(dir, 2000));
  const int T = 8;
  const std::int64_t B = 12;
  BOOST_CHECK_EQUAL(max_eval_batches(d, B, T), (1999 / 8) / 12);
  auto gather = [&](int W, int m, std::int64_t e) {
    const BatchLayout L{B, W, m};
    std::map<std::int64_t, Seq> out;
    Seq tok(static_cast<std::size_t>(m * T)), tgt(static_cast<std::size_t>(m * T));
    for (int r = 0; r < W; ++r)
      for (int a = 0; a < L.micro_steps(); ++a) {
        fill_eval_micro_batch(d, e, L, r, a, T, tok.data(), tgt.data());
        for (int j = 0; j < m; ++j) {
          Seq s(tok.begin() + j * T, tok.begin() + (j + 1) * T);
          s.insert(s.end(), tgt.begin() + j * T, tgt.begin() + (j + 1) * T);
          out.emplace(L.sequence_index(r, a, j), s);
        }
      }
    return out;
  };
  const auto ref = gather(1, 12, 3);
  BOOST_CHECK(gather(4, 1, 3) == ref);
  BOOST_CHECK(gather(2, 3, 3) == ref);
  // Batch 3 is eval sequences 36..47.
  Seq s(16);
  d.eval_sequence(36, T, s.data(), s.data() + T);
  BOOST_CHECK(ref.at(0) == s);
  Seq tok(12 * T), tgt(12 * T);
  BOOST_CHECK_THROW(fill_eval_micro_batch(d, max_eval_batches(d, B, T), BatchLayout{B, 1, 12}, 0, 0, T,
                                          tok.data(), tgt.data()),
                    mics::UsageError);
}

BOOST_AUTO_TEST_CASE(synthetic_walks_follow_the_chain) {
  const SyntheticDataset d(64, 4, 7);
  const int T = 64;
  Seq s(2 * T);
  std::vector<int> pick(4, 0);
  for (int i = 0; i < 400; ++i) {
    d.sequence(3, 1, i, T, s.data(), s.data() + T);
    for (int j = 0; j < T; ++j) {
      const auto* succ = d.successors(s[static_cast<std::size_t>(j)]);
      int k = 0;
      while (k < 4 && succ[k] != s[static_cast<std::size_t>(T + j)]) ++k;
      BOOST_REQUIRE(k < 4);  // every transition is one of the chain's edges
      ++pick[static_cast<std::size_t>(k)];
    }
  }
  // Empirical branch frequencies match 8:4:2:1 / 15 (25600 draws).
  const double n = 400.0 * T;
  for (std::size_t k = 0; k < 4; ++k)
    BOOST_CHECK_SMALL(pick[k] / n - d.probabilities()[k], 0.01);
  // Entropy of 8/15, 4/15, 2/15, 1/15 in nats, well below ln(64).
  double h = 0;
  for (const double p : {8.0 / 15, 4.0 / 15, 2.0 / 15, 1.0 / 15}) h -= p * std::log(p);
  BOOST_CHECK_CLOSE(d.optimal_loss(), h, 1e-9);
  BOOST_CHECK_LT(d.optimal_loss(), 0.5 * std::log(64.0));
  // The chain depends on chain_seed only.
  const SyntheticDataset same(64, 4, 7), other(64, 4, 8);
  bool differs = false;
  for (int t = 0; t < 64; ++t)
    for (int k = 0; k < 4; ++k) {
      BOOST_CHECK_EQUAL(same.successors(t)[k], d.successors(t)[k]);
      differs = differs || other.successors(t)[k] != d.successors(t)[k];
    }
  BOOST_CHECK(differs);
}

BOOST_AUTO_TEST_CASE(layout_and_argument_errors_are_one_line) {
  auto msg = [](const BatchLayout& L) -> std::string {
    try {
      L.validate();
    } catch (const mics::UsageError& e) {
      return e.what();
    }
    return "";
  };
  BOOST_CHECK_EQUAL(msg({12, 4, 2}), "global batch 12 must be a multiple of data-parallel ranks x micro-batch = 4 x 2 = 8");
  BOOST_CHECK(msg({0, 1, 1}).find("must all be positive") != std::string::npos);
  BOOST_CHECK(msg({16, 4, 2}).empty());
  BOOST_CHECK_THROW(SyntheticDataset(1), mics::UsageError);
  BOOST_CHECK_THROW(SyntheticDataset(8, 9), mics::UsageError);
  TempDir dir;
  const auto path = make_shard(dir, 100);
  BOOST_CHECK_THROW(TokenFileDataset(path, 0), mics::UsageError);
  BOOST_CHECK_THROW(TokenFileDataset(path, 200), mics::UsageError);  // tokens up to 255
  Seq tok(8), tgt(8);
  SyntheticDataset d;
  BOOST_CHECK_THROW(fill_micro_batch(d, 0, 0, BatchLayout{8, 2, 2}, 2, 0, 2, tok.data(), tgt.data()), mics::Error);
  BOOST_CHECK_THROW(fill_micro_batch(d, 0, 0, BatchLayout{8, 2, 2}, 0, 2, 2, tok.data(), tgt.data()), mics::Error);
}

// The structure is learnable: a bigram table counted from training batches predicts the
// evaluation walks at close to the chain's entropy, far below the uniform ln(vocab).
BOOST_AUTO_TEST_CASE(synthetic_data_is_learnable_by_a_bigram_model) {
  const int V = 256, T = 64;
  const SyntheticDataset d(V);
  std::vector<double> counts(static_cast<std::size_t>(V * V), 0.01);  // add-0.01 smoothing
  const BatchLayout L{32, 1, 32};
  std::vector<std::int32_t> tok(32 * T), tgt(32 * T);
  for (int step = 0; step < 80; ++step) {
    fill_micro_batch(d, 42, step, L, 0, 0, T, tok.data(), tgt.data());
    for (std::size_t k = 0; k < tok.size(); ++k) counts[static_cast<std::size_t>(tok[k] * V + tgt[k])] += 1.0;
  }
  std::vector<double> rows(static_cast<std::size_t>(V), 0.0);
  for (int a = 0; a < V; ++a)
    for (int b = 0; b < V; ++b) rows[static_cast<std::size_t>(a)] += counts[static_cast<std::size_t>(a * V + b)];
  double loss = 0.0;
  const int n_eval = 64;
  for (int i = 0; i < n_eval; ++i) {
    d.eval_sequence(i, T, tok.data(), tgt.data());
    for (int j = 0; j < T; ++j) {
      const auto a = static_cast<std::size_t>(tok[static_cast<std::size_t>(j)]);
      const auto b = static_cast<std::size_t>(tgt[static_cast<std::size_t>(j)]);
      loss -= std::log(counts[a * V + b] / rows[a]);
    }
  }
  loss /= n_eval * T;
  BOOST_TEST_MESSAGE("bigram eval loss " << loss << ", chain entropy " << d.optimal_loss()
                     << ", uniform " << std::log(256.0));
  BOOST_CHECK_LT(loss, d.optimal_loss() + 0.1);
  BOOST_CHECK_GT(loss, d.optimal_loss() - 0.1);
  BOOST_CHECK_LT(loss, 0.25 * std::log(256.0));
}

BOOST_AUTO_TEST_CASE(open_data_by_spec) {
  TempDir dir;
  const auto synth = open_data("synthetic", 128);
  BOOST_CHECK_EQUAL(synth.train->vocab(), 128);
  BOOST_REQUIRE(synth.val);
  const std::vector<std::uint16_t> tokens(300, 7);
  write_token_file(dir.file("c_train.bin"), tokens);
  const auto no_val = open_data(dir.file("c"), 256);
  BOOST_CHECK(no_val.train && !no_val.val);
  write_token_file(dir.file("c_val.bin"), tokens);
  const auto both = open_data(dir.file("c"), 256);
  BOOST_CHECK(both.train && both.val);
  BOOST_CHECK_EQUAL(both.val->eval_sequences(10), 29);
  const auto file = open_data(dir.file("c_val.bin"), 256);
  BOOST_CHECK(file.train && !file.val);
  try {
    open_data(dir.file("missing"), 256);
    BOOST_FAIL("no error");
  } catch (const mics::UsageError& e) {
    BOOST_CHECK(std::string(e.what()).find("missing_train.bin") != std::string::npos);
  }
  BOOST_CHECK_THROW(open_data(dir.file("c"), 5), mics::UsageError);  // token 7 >= 5
}
