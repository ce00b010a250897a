// Presets, overrides, bad input, layout, initialisation, FLOP counting and masking.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "mics/core/error.hpp"
#include "mics/model/config.hpp"
#include "mics/model/layout.hpp"
#include "mics/model/masking.hpp"

namespace fs = std::filesystem;
namespace po = boost::program_options;
using namespace mics::model;

namespace {

std::string preset(const std::string& name) {
  return std::string(MICS_SOURCE_DIR) + "/inputs/models/" + name + ".cfg";
}

// A scratch preset file that removes itself.
struct TempFile {
  fs::path path;
  explicit TempFile(const std::string& text) {
    path = fs::temp_directory_path() /
           ("mics_model_cfg_" + std::to_string(::getpid()) + "_" + std::to_string(counter()++) + ".cfg");
    std::ofstream(path) << text;
  }
  ~TempFile() { std::error_code ec; fs::remove(path, ec); }
  static int& counter() { static int c = 0; return c; }
};

const char* kGood = "variant = gpt\nlayers = 2\nhidden = 16\nheads = 2\nseq = 8\nvocab = 32\n";

// Expects load_model_config on `text` to throw UsageError whose one-line message contains
// every string of `needles`.
void expect_bad(const std::string& text, std::initializer_list<const char*> needles) {
  TempFile f(text);
  try {
    load_model_config(f.path.string());
    BOOST_ERROR("accepted bad preset:\n" << text);
  } catch (const mics::UsageError& e) {
    const std::string msg = e.what();
    BOOST_TEST_MESSAGE("rejected: " << msg);
    BOOST_TEST(msg.find('\n') == std::string::npos);
    for (const char* n : needles) BOOST_TEST(msg.find(n) != std::string::npos, "'" << msg << "' lacks '" << n << "'");
  }
}

std::string replace(std::string s, const std::string& from, const std::string& to) {
  s.replace(s.find(from), from.size(), to);
  return s;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(model_config)

BOOST_AUTO_TEST_CASE(every_preset_loads) {
  // name -> expected parameter count, computed by hand from
  // V*h + s*h + l*(12h^2 + 13h) + 2h.
  const std::map<std::string, std::size_t> expected = {
      {"tiny", 32 * 16 + 8 * 16 + 2 * (12 * 256 + 13 * 16) + 32},
      {"tiny-bert", 32 * 16 + 8 * 16 + 2 * (12 * 256 + 13 * 16) + 32},
      {"gpt2-124m", 124439808},
      {"gpt2-1.5b", 1557611200},
      {"bert-large", 30522ull * 1024 + 512 * 1024 + 24ull * (12ull * 1024 * 1024 + 13 * 1024) + 2048},
      {"bert-10b", 32003ull * 2560 + 512 * 2560 + 127ull * (12ull * 2560 * 2560 + 13 * 2560) + 5120},
      {"gpt3-100b", 50257ull * 10240 + 2048 * 10240 + 80ull * (12ull * 10240 * 10240 + 13 * 10240) + 20480},
      {"gpt3-175b", 50257ull * 12288 + 2048 * 12288 + 96ull * (12ull * 12288 * 12288 + 13 * 12288) + 24576},
  };
  for (const auto& [name, count] : expected) {
    BOOST_TEST_CONTEXT("preset " << name) {
      const ModelConfig c = load_model_config(preset(name));
      BOOST_TEST(c.name == name);
      // Describing the model builds only metadata: a few structs per layer.
      const BucketLayout L = make_layout(c);
      BOOST_TEST(L.buckets.size() == static_cast<std::size_t>(c.layers + 2));
      BOOST_TEST(L.parameter_count() == count);
      BOOST_TEST(parameter_count(c) == count);
      std::printf("%-11s %-4s layers %3lld hidden %5lld heads %3lld seq %4lld vocab %5lld : "
                  "%15zu parameters (%.3g), %.4g FLOPs/token (f=3), %.4g (f=4)\n",
                  name.c_str(), variant_name(c.variant), static_cast<long long>(c.layers),
                  static_cast<long long>(c.hidden), static_cast<long long>(c.heads),
                  static_cast<long long>(c.seq), static_cast<long long>(c.vocab), count,
                  static_cast<double>(count), flops_per_token(c, false), flops_per_token(c, true));
    }
  }
  BOOST_TEST(load_model_config(preset("bert-10b")).variant == Variant::bert);
  const ModelConfig b10 = load_model_config(preset("bert-10b"));
  BOOST_TEST(b10.hidden == 2560);
  BOOST_TEST(b10.layers == 127);
  BOOST_TEST(b10.heads == 40);
  BOOST_TEST(b10.seq == 512);
  BOOST_TEST(b10.vocab == 32003);
}

BOOST_AUTO_TEST_CASE(layout_names_offsets_and_decay) {
  const ModelConfig c = load_model_config(preset("tiny"));
  const BucketLayout L = make_layout(c);
  BOOST_TEST(L.buckets[0].name == "embeddings");
  BOOST_TEST(L.buckets[1].name == "h0");
  BOOST_TEST(L.buckets[3].name == "ln_f");
  std::set<std::string> names;
  for (const auto& b : L.buckets) {
    std::size_t off = 0;
    for (const auto& t : b.tensors) {
      BOOST_TEST(t.offset == off);
      off += t.count;
      names.insert(t.name);
      const bool bias_or_ln = t.name.find(".bias") != std::string::npos ||
                              t.name.find("ln") != std::string::npos;
      BOOST_TEST(t.weight_decay == !bias_or_ln, t.name);
    }
    BOOST_TEST(off == b.count);
  }
  BOOST_TEST(names.size() == 2u + 12u * 2u + 2u);
  const TensorRef r = find_tensor(L, "h1.mlp.proj.weight");
  BOOST_TEST(r.bucket == 2);
  BOOST_TEST(r.spec->shape == (std::vector<std::int64_t>{16, 64}));
  BOOST_CHECK_THROW(find_tensor(L, "h9.nothing"), mics::Error);
  std::vector<float> bucket(L.buckets[2].count);
  BOOST_TEST(tensor_data(bucket.data(), mics::device::DType::f32, *r.spec) ==
             static_cast<void*>(bucket.data() + r.spec->offset));
}

BOOST_AUTO_TEST_CASE(flops_hand_computed) {
  // tiny: l=2, h=16, s=8, V=32, one sequence.
  // f=3: 24*3*8*2*256 * (1 + 8/96) + 6*8*16*32 = 294912 + 24576 + 24576 = 344064;
  // f=4: 393216 + 32768 + 24576 = 450560 (the head is not recomputed).
  const ModelConfig c = load_model_config(preset("tiny"));
  BOOST_TEST(training_flops(c, 1.0, false) == 344064.0);
  BOOST_TEST(training_flops(c, 1.0, true) == 450560.0);
  BOOST_TEST(training_flops(c, 5.0, false) == 5 * 344064.0);
  BOOST_TEST(flops_per_token(c) == 344064.0 / 8);
  BOOST_TEST(head_training_flops(c, 2.0) == 2 * 24576.0);
  // Per token the formula expands to 72 l h^2 + 12 s l h + 6 V h (f=3) and
  // 96 l h^2 + 16 s l h + 6 V h (f=4); checked on the big presets.
  for (const char* name : {"gpt2-124m", "bert-10b", "gpt3-175b"}) {
    const ModelConfig m = load_model_config(preset(name));
    const double l = static_cast<double>(m.layers), h = static_cast<double>(m.hidden),
                 s = static_cast<double>(m.seq), V = static_cast<double>(m.vocab);
    BOOST_TEST(flops_per_token(m, false) == 72 * l * h * h + 12 * s * l * h + 6 * V * h,
               boost::test_tools::tolerance(1e-12));
    BOOST_TEST(flops_per_token(m, true) == 96 * l * h * h + 16 * s * l * h + 6 * V * h,
               boost::test_tools::tolerance(1e-12));
  }
  // GPT-3 175B: about 1.08e12 FLOPs per token (6 x 175e9 plus attention and head).
  BOOST_TEST(flops_per_token(load_model_config(preset("gpt3-175b"))) == 1.0764e12,
             boost::test_tools::tolerance(1e-4));
}

BOOST_AUTO_TEST_CASE(flops_are_three_passes_over_the_models_own_matrices) {
  // Counted from the layout rather than the formula: each [out, in] matrix (the blocks'
  // weights and wte as the tied head; wpe is a lookup) is 2 out in FLOPs per token forward
  // and twice that backward (input and weight gradients); attention's Q K^T and P V add
  // 4 s h per token and layer forward over the full s x s, also tripled.
  for (const char* name : {"tiny", "gpt2-124m", "bert-10b", "gpt3-175b"}) {
    const ModelConfig m = load_model_config(preset(name));
    double forward = 4.0 * static_cast<double>(m.layers) * static_cast<double>(m.seq) *
                     static_cast<double>(m.hidden);
    for (const auto& bucket : make_layout(m).buckets)
      for (const auto& t : bucket.tensors)
        if (t.shape.size() == 2 && t.name != "wpe")
          forward += 2.0 * static_cast<double>(t.shape[0]) * static_cast<double>(t.shape[1]);
    BOOST_TEST_CONTEXT(name) {
      BOOST_TEST(flops_per_token(m, false) == 3 * forward, boost::test_tools::tolerance(1e-12));
    }
  }
}

BOOST_AUTO_TEST_CASE(bad_presets) {
  const std::string g = kGood;
  expect_bad(replace(g, "heads = 2", "heads = 3"), {"heads = 3", "does not divide", "hidden = 16"});
  expect_bad(replace(g, "layers = 2", "layers = 0"), {"layers = 0", "at least 1"});
  expect_bad(replace(g, "heads = 2", "heads = 0"), {"heads = 0", "at least 1"});
  expect_bad(replace(g, "hidden = 16", "hidden = -16"), {"hidden = -16", "negative"});
  expect_bad(replace(g, "seq = 8", "seq = -1"), {"seq = -1", "negative"});
  expect_bad(replace(g, "vocab = 32", "vocab = lots"), {"vocab", "lots"});
  expect_bad(g + "dropout = 0.1\n", {"dropout"});
  expect_bad(replace(g, "vocab = 32\n", ""), {"vocab", "missing"});
  expect_bad(replace(g, "variant = gpt", "variant = t5"), {"t5", "gpt, bert"});
  // Missing file, a directory, an unreadable file.
  for (const std::string& p : {std::string("/nonexistent/mics/model.cfg"),
                              fs::temp_directory_path().string()}) {
    try {
      load_model_config(p);
      BOOST_ERROR("accepted " << p);
    } catch (const mics::UsageError& e) {
      BOOST_TEST(std::string(e.what()).find(p) != std::string::npos, e.what());
    }
  }
  TempFile locked(kGood);
  fs::permissions(locked.path, fs::perms::none);
  if (!std::ifstream(locked.path)) {  // root reads anything: only meaningful otherwise
    BOOST_CHECK_THROW(load_model_config(locked.path.string()), mics::UsageError);
  }
}

BOOST_AUTO_TEST_CASE(command_line_overrides) {
  po::options_description d;
  add_model_options(d);
  auto parse = [&](std::vector<std::string> args) {
    po::variables_map vm;
    po::store(po::command_line_parser(args).options(d).run(), vm);
    po::notify(vm);
    return model_config_from_variables(vm);
  };
  const ModelConfig c = parse({"--model", preset("gpt2-124m"), "--layers", "2", "--seq", "256"});
  BOOST_TEST(c.layers == 2);
  BOOST_TEST(c.seq == 256);
  BOOST_TEST(c.hidden == 768);
  const ModelConfig d2 = parse({"--variant", "bert", "--layers", "1", "--hidden", "8", "--heads", "2",
                                "--seq", "4", "--vocab", "10"});
  BOOST_TEST(d2.variant == Variant::bert);
  BOOST_CHECK_THROW(parse({"--layers", "1"}), mics::UsageError);  // no preset, shape incomplete
  BOOST_CHECK_THROW(parse({"--model", preset("tiny"), "--heads", "5"}), mics::UsageError);
  BOOST_CHECK_THROW(parse({"--model", preset("tiny"), "--layers", "-2"}), mics::UsageError);
}

BOOST_AUTO_TEST_CASE(initialisation_is_layout_independent) {
  const ModelConfig c = load_model_config(preset("tiny"));
  const BucketLayout L = make_layout(c);
  for (int b = 0; b < static_cast<int>(L.buckets.size()); ++b) {
    const std::size_t n = L.buckets[static_cast<std::size_t>(b)].count;
    std::vector<double> whole(n), pieces(n);
    init_bucket(c, L, b, 0, n, mics::device::DType::f64, whole.data(), 42);
    // Any split into shards reproduces the same values.
    for (std::size_t begin = 0; begin < n; begin += 37) {
      const std::size_t cnt = std::min<std::size_t>(37, n - begin);
      init_bucket(c, L, b, begin, cnt, mics::device::DType::f64, pieces.data() + begin, 42);
    }
    BOOST_TEST(whole == pieces);
    std::vector<float> f32(n);
    init_bucket(c, L, b, 0, n, mics::device::DType::f32, f32.data(), 42);
    for (std::size_t i = 0; i < n; ++i) BOOST_TEST(f32[i] == static_cast<float>(whole[i]));
  }
  BOOST_CHECK_THROW(init_bucket(c, L, 0, 0, L.buckets[0].count + 1, mics::device::DType::f32,
                                nullptr, 1), mics::Error);
  // Statistics and fixed values on a bigger model's block (only one bucket's values).
  ModelConfig m = c;
  m.hidden = 64; m.heads = 4; m.layers = 8;
  const BucketLayout ML = make_layout(m);
  const BucketSpec& blk = ML.buckets[1];
  std::vector<double> v(blk.count);
  init_bucket(m, ML, 1, 0, blk.count, mics::device::DType::f64, v.data(), 7);
  auto stddev = [&](int t) {
    const auto& s = blk.tensors[static_cast<std::size_t>(t)];
    double sum = 0, sq = 0;
    for (std::size_t i = s.offset; i < s.offset + s.count; ++i) { sum += v[i]; sq += v[i] * v[i]; }
    const double nn = static_cast<double>(s.count);
    return std::sqrt(sq / nn - (sum / nn) * (sum / nn));
  };
  BOOST_TEST(stddev(kQkvW) == 0.02, boost::test_tools::tolerance(0.03));
  BOOST_TEST(stddev(kFcW) == 0.02, boost::test_tools::tolerance(0.03));
  BOOST_TEST(stddev(kFcProjW) == 0.02 / 4.0, boost::test_tools::tolerance(0.03));  // 1/sqrt(2*8)
  for (int t : {kLn1W, kLn2W})
    for (std::size_t i = 0; i < blk.tensors[static_cast<std::size_t>(t)].count; ++i)
      BOOST_TEST(v[blk.tensors[static_cast<std::size_t>(t)].offset + i] == 1.0);
  for (int t : {kLn1B, kQkvB, kAttnProjB, kLn2B, kFcB, kFcProjB})
    for (std::size_t i = 0; i < blk.tensors[static_cast<std::size_t>(t)].count; ++i)
      BOOST_TEST(v[blk.tensors[static_cast<std::size_t>(t)].offset + i] == 0.0);
  std::vector<double> other(blk.count);
  init_bucket(m, ML, 1, 0, blk.count, mics::device::DType::f64, other.data(), 8);
  BOOST_TEST(other != v);
}

BOOST_AUTO_TEST_CASE(bert_masking) {
  const std::int64_t B = 6, T = 40, V = 100;
  std::vector<std::int32_t> tok(static_cast<std::size_t>(B * T));
  for (std::size_t i = 0; i < tok.size(); ++i) tok[i] = static_cast<std::int32_t>((i * 7) % (V - 1));
  std::vector<std::int32_t> in(tok.size()), tg(tok.size()), in2(tok.size()), tg2(tok.size());
  bert_mask(tok.data(), B, T, V, 99, 0, in.data(), tg.data());
  BOOST_TEST(masked_per_sequence(T) == 6);
  BOOST_TEST(masked_per_sequence(3) == 1);
  std::int64_t masked = 0, shown_mask = 0;
  for (std::int64_t b = 0; b < B; ++b) {
    std::int64_t k = 0;
    for (std::int64_t t = 0; t < T; ++t) {
      const auto i = static_cast<std::size_t>(b * T + t);
      if (tg[i] >= 0) {
        ++k;
        BOOST_TEST(tg[i] == tok[i]);
        if (in[i] == mask_token(V)) ++shown_mask;
      } else {
        BOOST_TEST(in[i] == tok[i]);
      }
    }
    BOOST_TEST(k == masked_per_sequence(T));
    masked += k;
  }
  BOOST_TEST(shown_mask > masked / 2);  // about 80%
  // Deterministic, and a sample's masking depends on its global index only.
  bert_mask(tok.data(), B, T, V, 99, 0, in2.data(), tg2.data());
  BOOST_TEST(in == in2);
  BOOST_TEST(tg == tg2);
  bert_mask(tok.data() + 3 * T, 3, T, V, 99, 3, in2.data(), tg2.data());
  BOOST_TEST(std::equal(in2.begin(), in2.begin() + 3 * T, in.begin() + 3 * T));
  BOOST_TEST(std::equal(tg2.begin(), tg2.begin() + 3 * T, tg.begin() + 3 * T));
}

BOOST_AUTO_TEST_SUITE_END()
