// The whole model on every available backend: finite-difference gradient check in f64
// for both variants and every parameter tensor, lower precisions against f64, the
// bucket-by-bucket API against the whole-pass API, and the loss/gradient scaling.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>

#include "backend_test_util.hpp"
#include "mics/core/error.hpp"
#include "mics/model/config.hpp"
#include "mics/model/layout.hpp"
#include "mics/model/masking.hpp"
#include "mics/model/transformer.hpp"

using namespace mics::test;
using namespace mics::model;
using mics::device::DType;

namespace {

ModelConfig tiny(Variant v) {
  ModelConfig c = load_model_config(std::string(MICS_SOURCE_DIR) + "/inputs/models/" +
                                    (v == Variant::gpt ? "tiny" : "tiny-bert") + ".cfg");
  return c;
}

using HostParams = std::vector<std::vector<double>>;  // per bucket

// Parameters far from the GPT-2 init (whose q/k gradients are nearly zero), so that every
// tensor's gradient is well above the finite differences' noise.
HostParams random_params(const BucketLayout& L, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(-1, 1);
  HostParams p;
  for (const auto& b : L.buckets) {
    std::vector<double> v(b.count);
    for (const auto& t : b.tensors) {
      const bool ln_gain = !t.weight_decay && t.name.find("weight") != std::string::npos;
      for (std::size_t i = t.offset; i < t.offset + t.count; ++i)
        v[i] = ln_gain ? 1 + 0.2 * u(rng) : (t.weight_decay ? 0.4 * u(rng) : 0.1 * u(rng));
    }
    p.push_back(std::move(v));
  }
  return p;
}

HostParams init_params(const ModelConfig& c, const BucketLayout& L, std::uint64_t seed) {
  HostParams p;
  for (std::size_t b = 0; b < L.buckets.size(); ++b) {
    std::vector<double> v(L.buckets[b].count);
    init_bucket(c, L, static_cast<int>(b), 0, v.size(), DType::f64, v.data(), seed);
    p.push_back(std::move(v));
  }
  return p;
}

struct Batch {
  std::vector<std::int32_t> tokens, targets;
};

Batch make_batch(const ModelConfig& c, std::int64_t B, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  const std::int64_t T = c.seq, V = c.vocab;
  std::vector<std::int32_t> raw(static_cast<std::size_t>(B * (T + 1)));
  for (auto& t : raw) t = static_cast<std::int32_t>(rng() % static_cast<std::uint64_t>(V - 1));
  Batch out;
  out.tokens.resize(static_cast<std::size_t>(B * T));
  out.targets.resize(static_cast<std::size_t>(B * T));
  if (c.variant == Variant::gpt) {
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t t = 0; t < T; ++t) {
        out.tokens[static_cast<std::size_t>(b * T + t)] = raw[static_cast<std::size_t>(b * (T + 1) + t)];
        out.targets[static_cast<std::size_t>(b * T + t)] = raw[static_cast<std::size_t>(b * (T + 1) + t + 1)];
      }
  } else {
    std::vector<std::int32_t> seqs(static_cast<std::size_t>(B * T));
    for (std::size_t i = 0; i < seqs.size(); ++i) seqs[i] = raw[i];
    bert_mask(seqs.data(), B, T, V, seed, 0, out.tokens.data(), out.targets.data());
  }
  return out;
}

// Parameters and gradients of one model on one backend, in one compute type.
struct DeviceState {
  std::vector<DevTensor> p, g;
  std::vector<const void*> pp;
  std::vector<void*> gp;
  DeviceState(Backend& be, DType dt, const HostParams& host) {
    for (const auto& v : host) {
      p.emplace_back(be, dt, representable(dt, v));
      g.emplace_back(be, dt, std::vector<double>(v.size(), 7.0));  // garbage: must be overwritten
    }
    for (auto& t : p) pp.push_back(t.get());
    for (auto& t : g) gp.push_back(t.get());
  }
  HostParams grads() const {
    HostParams out;
    for (const auto& t : g) out.push_back(t.download());
    return out;
  }
};

// Sub-vector of one tensor.
std::vector<double> tensor_of(const std::vector<double>& bucket, const TensorSpec& t) {
  return std::vector<double>(bucket.begin() + static_cast<std::ptrdiff_t>(t.offset),
                             bucket.begin() + static_cast<std::ptrdiff_t>(t.offset + t.count));
}

}  // namespace

BOOST_AUTO_TEST_SUITE(model_transformer)

// d loss / d theta for every parameter of the tiny models by the fourth-order central
// difference (-L(+2e) + 8L(+e) - 8L(-e) + L(-2e)) / 12e, e = 1e-3, in f64: its truncation
// error is O(e^4) and its rounding error about 1e-12, far below the 1e-6 bound.
BOOST_AUTO_TEST_CASE(gradient_check_f64_both_variants) {
  for_each_backend([](Backend& be) {
    if (!be.supports(DType::f64)) {
      BOOST_TEST_MESSAGE(be.name() << ": no f64, gradient check skipped (compared to the CPU instead)");
      return;
    }
    for (Variant v : {Variant::gpt, Variant::bert}) {
      BOOST_TEST_CONTEXT("variant " << variant_name(v)) {
        const ModelConfig c = tiny(v);
        const std::int64_t B = 2;
        Transformer m(c, be, DType::f64, B);
        const HostParams host = random_params(m.layout(), 11);
        Batch batch = make_batch(c, B, 5);
        if (v == Variant::gpt) batch.targets[3] = -1;  // one ignored position
        m.set_batch(batch.tokens.data(), batch.targets.data());
        DeviceState s(be, DType::f64, host);
        const double loss = m.forward_backward(s.pp, s.gp);
        BOOST_TEST(std::isfinite(loss));
        const HostParams grads = s.grads();

        double worst = 0;
        std::string worst_name;
        std::size_t checked = 0;
        const double e = 1e-3;
        for (std::size_t b = 0; b < host.size(); ++b) {
          const BucketSpec& bs = m.layout().buckets[b];
          std::vector<double> fd(bs.count);
          for (std::size_t i = 0; i < bs.count; ++i) {
            auto at = [&](double delta) {
              const double x = host[b][i] + delta;
              be.copy_to_device(mics::device::offset(s.p[b].get(), DType::f64, static_cast<std::int64_t>(i)), &x, 8);
              return m.forward(s.pp);
            };
            fd[i] = (-at(2 * e) + 8 * at(e) - 8 * at(-e) + at(-2 * e)) / (12 * e);
            at(0);
          }
          for (const auto& t : bs.tensors) {
            const double err = rel_error(tensor_of(grads[b], t), tensor_of(fd, t));
            BOOST_TEST(err < 1e-6, t.name << ": relative error " << err);
            if (err > worst) { worst = err; worst_name = t.name; }
            ++checked;
          }
        }
        BOOST_TEST(checked == 2u + 12u * 2u + 2u);
        std::printf("gradient check %s on %s: %zu tensors, loss %.6f, worst relative error %.2e (%s)\n",
                    variant_name(v), be.name().c_str(), checked, loss, worst, worst_name.c_str());
      }
    }
  });
}

// Every lower-precision compute type of every backend against the CPU's f64 run.
BOOST_AUTO_TEST_CASE(lower_precision_against_f64) {
  auto cpu = mics::device::make_cpu_backend(2);
  for (Variant v : {Variant::gpt, Variant::bert}) {
    const ModelConfig c = tiny(v);
    const std::int64_t B = 3;
    Transformer ref(c, *cpu, DType::f64, B);
    const HostParams host = init_params(c, ref.layout(), 3);
    const Batch batch = make_batch(c, B, 9);
    ref.set_batch(batch.tokens.data(), batch.targets.data());
    // f32 parameters are the f64 ones rounded, so both runs see the same model.
    const HostParams host32 = [&] { HostParams h; for (auto& x : host) h.push_back(representable(DType::f32, x)); return h; }();
    DeviceState rs(*cpu, DType::f64, host32);
    const double ref_loss = ref.forward_backward(rs.pp, rs.gp);
    const HostParams ref_g = rs.grads();
    for_each_backend([&](Backend& be) {
      for (DType dt : compute_dtypes(be)) {
        if (dt == DType::f64) continue;
        // bf16 bounds are provisional (no GPU has run them yet): 8 mantissa bits.
        const double tol = dt == DType::f32 ? 1e-4 : 1e-1;
        BOOST_TEST_CONTEXT(variant_name(v) << " " << dtype_name(dt)) {
          Transformer m(c, be, dt, B);
          m.set_batch(batch.tokens.data(), batch.targets.data());
          DeviceState s(be, dt, host32);
          const double loss = m.forward_backward(s.pp, s.gp);
          BOOST_TEST(std::abs(loss - ref_loss) <= tol * std::abs(ref_loss));
          const HostParams g = s.grads();
          double worst = 0;
          std::string worst_name = "-";
          for (std::size_t b = 0; b < g.size(); ++b)
            for (const auto& t : m.layout().buckets[b].tensors) {
              const double err = rel_error(tensor_of(g[b], t), tensor_of(ref_g[b], t));
              BOOST_TEST(err < tol, t.name << ": relative error " << err);
              if (err > worst) { worst = err; worst_name = t.name; }
            }
          // One grep-able line per run: the first GPU run sets the bf16 bounds from it.
          std::printf("observed-error transformer/%s %s on %s: loss %.8f vs %.8f (relative %.3e), "
                      "worst gradient error %.3e in %s, bound %.0e\n",
                      variant_name(v), dtype_name(dt), be.name().c_str(), loss, ref_loss,
                      std::abs(loss - ref_loss) / std::abs(ref_loss), worst, worst_name.c_str(), tol);
        }
      }
    });
  }
}

BOOST_AUTO_TEST_CASE(bucket_api_equals_whole_pass_and_is_deterministic) {
  for_each_backend([](Backend& be) {
    for (DType dt : compute_dtypes(be)) {
      for (Variant v : {Variant::gpt, Variant::bert}) {
        BOOST_TEST_CONTEXT(variant_name(v) << " " << dtype_name(dt)) {
          const ModelConfig c = tiny(v);
          const std::int64_t B = 2;
          Transformer m(c, be, dt, B);
          const HostParams host = init_params(c, m.layout(), 1);
          const Batch batch = make_batch(c, B, 2);
          m.set_batch(batch.tokens.data(), batch.targets.data());
          DeviceState a(be, dt, host), b(be, dt, host);
          const double la = m.forward_backward(a.pp, a.gp);
          // The same step through the bucket calls, as the engine makes them.
          const int L = static_cast<int>(c.layers), lnf = final_norm_bucket(c);
          m.embed_forward(b.pp[0]);
          for (int l = 0; l < L; ++l) m.block_forward(l, b.pp[static_cast<std::size_t>(block_bucket(l))]);
          const double lb = m.head_forward(b.pp[static_cast<std::size_t>(lnf)], b.pp[0]);
          m.head_backward(b.pp[static_cast<std::size_t>(lnf)], b.pp[0], b.gp[static_cast<std::size_t>(lnf)], b.gp[0]);
          for (int l = L - 1; l >= 0; --l)
            m.block_backward(l, b.pp[static_cast<std::size_t>(block_bucket(l))], b.gp[static_cast<std::size_t>(block_bucket(l))]);
          m.embed_backward(b.pp[0], b.gp[0]);
          BOOST_TEST(la == lb);
          BOOST_TEST(a.grads() == b.grads());
          // Activations are reused: a second whole pass gives the same bits.
          const double la2 = m.forward_backward(a.pp, a.gp);
          BOOST_TEST(la2 == la);
          BOOST_TEST(a.grads() == b.grads());
          BOOST_TEST(m.forward(a.pp) == la);
          BOOST_TEST(m.counted_tokens() == (v == Variant::gpt ? B * c.seq : B * masked_per_sequence(c.seq)));
        }
      }
    }
  });
}

// Recomputing block activations in backward gives the same bits as keeping them, with
// less activation memory.
BOOST_AUTO_TEST_CASE(recompute_matches_stored_activations) {
  for_each_backend([](Backend& be) {
    for (DType dt : compute_dtypes(be)) {
      for (Variant v : {Variant::gpt, Variant::bert}) {
        BOOST_TEST_CONTEXT(variant_name(v) << " " << dtype_name(dt)) {
          ModelConfig c = tiny(v);
          c.layers = 3;
          Transformer keep(c, be, dt, 2), redo(c, be, dt, 2, /*recompute=*/true);
          BOOST_TEST(redo.recompute());
          BOOST_TEST(redo.activation_bytes() < keep.activation_bytes());
          const HostParams host = random_params(keep.layout(), 21);
          const Batch batch = make_batch(c, 2, 22);
          keep.set_batch(batch.tokens.data(), batch.targets.data());
          redo.set_batch(batch.tokens.data(), batch.targets.data());
          DeviceState a(be, dt, host), b(be, dt, host);
          BOOST_TEST(keep.forward_backward(a.pp, a.gp) == redo.forward_backward(b.pp, b.gp));
          BOOST_TEST(a.grads() == b.grads());
        }
      }
    }
  });
}

// Loss and gradients are those of the mean over counted targets: a micro-batch of two
// sequences equals the average of the two single-sequence micro-batches (equal counts).
BOOST_AUTO_TEST_CASE(mean_over_counted_targets) {
  for_each_backend([](Backend& be) {
    const DType dt = be.supports(DType::f64) ? DType::f64 : DType::f32;
    const double tol = dt == DType::f64 ? 1e-12 : 1e-5;
    const ModelConfig c = tiny(Variant::gpt);
    Transformer m2(c, be, dt, 2), m1(c, be, dt, 1);
    const HostParams host = init_params(c, m2.layout(), 4);
    const Batch batch = make_batch(c, 2, 6);
    DeviceState s2(be, dt, host), s1(be, dt, host);
    m2.set_batch(batch.tokens.data(), batch.targets.data());
    const double l2 = m2.forward_backward(s2.pp, s2.gp);
    const HostParams g2 = s2.grads();
    double l1 = 0;
    HostParams g1;
    for (int half = 0; half < 2; ++half) {
      m1.set_batch(batch.tokens.data() + half * c.seq, batch.targets.data() + half * c.seq);
      l1 += 0.5 * m1.forward_backward(s1.pp, s1.gp);
      const HostParams g = s1.grads();
      if (g1.empty()) g1 = HostParams(g.size());
      for (std::size_t b = 0; b < g.size(); ++b) {
        g1[b].resize(g[b].size(), 0.0);
        for (std::size_t i = 0; i < g[b].size(); ++i) g1[b][i] += 0.5 * g[b][i];
      }
    }
    BOOST_TEST(std::abs(l1 - l2) <= tol * l2);
    for (std::size_t b = 0; b < g1.size(); ++b) MICS_CHECK_CLOSE(g1[b], g2[b], tol * 10);
    // No counted target: loss 0 and zero gradients, not NaN.
    std::vector<std::int32_t> none(static_cast<std::size_t>(c.seq), -1);
    m1.set_batch(batch.tokens.data(), none.data());
    BOOST_TEST(m1.forward_backward(s1.pp, s1.gp) == 0.0);
    for (const auto& g : s1.grads())
      for (double x : g) BOOST_TEST(x == 0.0);
  });
}

BOOST_AUTO_TEST_CASE(bad_batches_and_arguments) {
  auto be = mics::device::make_cpu_backend(1);
  const ModelConfig c = tiny(Variant::gpt);
  Transformer m(c, *be, DType::f32, 1);
  std::vector<std::int32_t> tok(static_cast<std::size_t>(c.seq), 1), tgt(tok);
  tok[2] = static_cast<std::int32_t>(c.vocab);
  BOOST_CHECK_THROW(m.set_batch(tok.data(), tgt.data()), mics::UsageError);
  tok[2] = -1;
  BOOST_CHECK_THROW(m.set_batch(tok.data(), tgt.data()), mics::UsageError);
  tok[2] = 0;
  tgt[0] = static_cast<std::int32_t>(c.vocab + 5);
  BOOST_CHECK_THROW(m.set_batch(tok.data(), tgt.data()), mics::UsageError);
  BOOST_CHECK_THROW(Transformer(c, *be, DType::f32, 0), mics::UsageError);
  BOOST_CHECK_THROW(m.block_forward(5, nullptr), mics::Error);
}

BOOST_AUTO_TEST_SUITE_END()
