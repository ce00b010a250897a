// Every kernel of the device interface against a float64 reference written here, on every
// available backend and compute type.
#include <boost/test/unit_test.hpp>

#include <cmath>

#include "backend_test_util.hpp"
#include "mics/core/error.hpp"

using namespace mics::test;
using mics::device::AttentionShape;
using mics::device::DType;

namespace {

// Two threads, so that every kernel's threaded path (and its fixed reduction order) is tested.
struct TwoThreads {
  TwoThreads() { test_threads() = 2; }
};
BOOST_TEST_GLOBAL_FIXTURE(TwoThreads);

struct Case {
  Backend& be;
  DType dt;
  std::vector<double> rnd(std::size_t n, std::uint64_t seed, double lo = -1, double hi = 1) {
    return representable(dt, random_vector(n, seed, lo, hi));
  }
  DevTensor dev(const std::vector<double>& v) { return DevTensor(be, dt, v); }
  DevTensor dev(std::size_t n) { return DevTensor(be, dt, std::vector<double>(n, 0.0)); }
  double tol() const { return tolerance(dt); }
};

void for_each_case(const std::function<void(Case&)>& body) {
  for_each_backend([&](Backend& be) {
    for (DType dt : compute_dtypes(be)) {
      BOOST_TEST_CONTEXT("dtype " << mics::device::dtype_name(dt)) {
        Case c{be, dt};
        body(c);
      }
    }
  });
}

double gelu_ref(double x) {
  return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
}

}  // namespace

BOOST_AUTO_TEST_SUITE(device_kernels)

BOOST_AUTO_TEST_CASE(memory_accounting_and_buffers) {
  for_each_backend([](Backend& be) {
    const std::size_t before = be.bytes_in_use();
    {
      mics::device::Buffer a(be, 1000), b(be, DType::f64, 10);
      BOOST_TEST(be.bytes_in_use() == before + 1080);
      BOOST_TEST(be.peak_bytes_in_use() >= before + 1080);
      BOOST_TEST(reinterpret_cast<std::uintptr_t>(a.get()) % 256 == 0u);
      mics::device::Buffer c = std::move(a);
      BOOST_TEST(a.get() == nullptr);
      BOOST_TEST(c.bytes() == 1000u);
    }
    BOOST_TEST(be.bytes_in_use() == before);
    BOOST_TEST(be.allocate(0) == nullptr);
    auto s = be.create_stream();
    auto e = be.create_event();
    e->record(*s);
    e->wait(be.compute_stream());
    e->synchronize();
    BOOST_TEST(e->ready());
  });
}

BOOST_AUTO_TEST_CASE(elementwise) {
  for_each_case([](Case& c) {
    const std::size_t n = 70001;  // not a multiple of any block, above the threading cut
    auto x = c.rnd(n, 1), y = c.rnd(n, 2);
    DevTensor dx = c.dev(x), dy = c.dev(y), dout = c.dev(n);

    c.be.add(c.dt, dout.get(), dx.get(), dy.get(), static_cast<std::int64_t>(n));
    std::vector<double> want(n);
    for (std::size_t i = 0; i < n; ++i) want[i] = x[i] + y[i];
    MICS_CHECK_CLOSE(dout.download(), want, c.tol());

    c.be.axpy(c.dt, dy.get(), dx.get(), static_cast<std::int64_t>(n), -0.5);
    for (std::size_t i = 0; i < n; ++i) want[i] = y[i] - 0.5 * x[i];
    MICS_CHECK_CLOSE(dy.download(), want, c.tol());

    c.be.scale(c.dt, dx.get(), static_cast<std::int64_t>(n), 0.25);
    for (std::size_t i = 0; i < n; ++i) want[i] = 0.25 * x[i];
    MICS_CHECK_CLOSE(dx.download(), want, c.tol());

    c.be.fill(c.dt, dx.get(), static_cast<std::int64_t>(n), 1.5);
    MICS_CHECK_CLOSE(dx.download(), std::vector<double>(n, 1.5), 0.0);

    // Reductions: sum of squares (gradient norm) and plain sum.
    double ss = 0, s = 0;
    for (double v : x) { ss += v * v; s += v; }
    DevTensor dx2 = c.dev(x);
    const double got_ss = c.be.sum_squares(c.dt, dx2.get(), static_cast<std::int64_t>(n));
    const double got_s = c.be.sum(c.dt, dx2.get(), static_cast<std::int64_t>(n));
    BOOST_TEST(std::abs(got_ss - ss) <= 1e-10 * ss);
    BOOST_TEST(std::abs(got_s - s) <= 1e-10 * ss);
    // Deterministic: same bits twice.
    BOOST_TEST(c.be.sum_squares(c.dt, dx2.get(), static_cast<std::int64_t>(n)) == got_ss);
  });
}

BOOST_AUTO_TEST_CASE(casts_and_accumulate) {
  for_each_backend([](Backend& be) {
    const std::size_t n = 1000;
    const std::vector<double> x = random_vector(n, 5, -3, 3);
    // Storage types a cast must handle: f32 and bf16 everywhere (master weights and the
    // compute copy), f64 where the backend computes in it (the CPU: the f64 reference runs).
    std::vector<DType> storage{DType::f32, DType::bf16};
    if (be.supports(DType::f64) || be.is_host_memory()) storage.push_back(DType::f64);
    for (DType src : storage)
      for (DType dst : storage) {
        BOOST_TEST_CONTEXT(dtype_name(src) << " -> " << dtype_name(dst)) {
          const auto xs = representable(src, x);
          DevTensor a(be, src, xs), b(be, dst, n);
          be.cast(dst, b.get(), src, a.get(), static_cast<std::int64_t>(n));
          // The reference rounds once, from the source value, to nearest even.
          MICS_CHECK_CLOSE(b.download(), representable(dst, xs), 0.0);
          if (dst != DType::bf16) {
            const auto base = representable(dst, random_vector(n, 6));
            DevTensor acc(be, dst, base);
            be.accumulate(dst, acc.get(), src, a.get(), static_cast<std::int64_t>(n), 0.5);
            std::vector<double> want(n);
            for (std::size_t i = 0; i < n; ++i) want[i] = base[i] + 0.5 * xs[i];
            MICS_CHECK_CLOSE(acc.download(), want, dst == DType::f64 ? 1e-15 : 1e-6);
          }
        }
      }
    // Round to nearest even into bf16, exactly at a tie: 1 + 2^-8 lies between 1 and
    // 1 + 2^-7, and goes to the even one (1).
    BOOST_TEST(mics::device::bf16_to_float(mics::device::float_to_bf16(1.0f + 1.0f / 256)) == 1.0f);
  });
}

BOOST_AUTO_TEST_CASE(gemm_all_transposes) {
  for_each_case([](Case& c) {
    // Small shapes run as one BLAS call; the larger ones are split over threads by rows
    // (M >= N) or by columns (N > M) on the CPU backend.
    const std::int64_t shapes[][3] = {{37, 29, 23}, {300, 130, 70}, {90, 310, 80}};
    for (const auto& shape : shapes)
    BOOST_TEST_CONTEXT("M N K " << shape[0] << " " << shape[1] << " " << shape[2]) {
    const std::int64_t M = shape[0], N = shape[1], K = shape[2], pad = 3;
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        BOOST_TEST_CONTEXT("ta " << ta << " tb " << tb) {
          const std::int64_t ar = ta ? K : M, ac = ta ? M : K;
          const std::int64_t br = tb ? N : K, bc = tb ? K : N;
          const std::int64_t lda = ac + pad, ldb = bc + pad, ldc = N + pad;
          auto A = c.rnd(static_cast<std::size_t>(ar * lda), 10);
          auto B = c.rnd(static_cast<std::size_t>(br * ldb), 11);
          auto C0 = c.rnd(static_cast<std::size_t>(M * ldc), 12);
          DevTensor dA = c.dev(A), dB = c.dev(B), dC = c.dev(C0);
          c.be.gemm(c.dt, ta, tb, M, N, K, 0.7, dA.get(), lda, dB.get(), ldb, 0.3, dC.get(), ldc);
          std::vector<double> want = C0;
          for (std::int64_t i = 0; i < M; ++i)
            for (std::int64_t j = 0; j < N; ++j) {
              double s = 0;
              for (std::int64_t k = 0; k < K; ++k) {
                const double a = ta ? A[static_cast<std::size_t>(k * lda + i)]
                                    : A[static_cast<std::size_t>(i * lda + k)];
                const double b = tb ? B[static_cast<std::size_t>(j * ldb + k)]
                                    : B[static_cast<std::size_t>(k * ldb + j)];
                s += a * b;
              }
              want[static_cast<std::size_t>(i * ldc + j)] =
                  0.7 * s + 0.3 * C0[static_cast<std::size_t>(i * ldc + j)];
            }
          MICS_CHECK_CLOSE(dC.download(), want, c.tol() * 4);
        }
      }
    }
    // beta = 0 never reads C, even when it holds NaN.
    std::vector<double> nan(16, std::nan(""));
    DevTensor a = c.dev(c.rnd(16, 1)), b = c.dev(c.rnd(16, 2)), out = c.dev(nan);
    c.be.gemm(c.dt, false, false, 4, 4, 4, 1.0, a.get(), 4, b.get(), 4, 0.0, out.get(), 4);
    for (double v : out.download()) BOOST_TEST(std::isfinite(v));
  });
}

BOOST_AUTO_TEST_CASE(gemm_strided_batched) {
  for_each_case([](Case& c) {
    const std::int64_t M = 5, N = 6, K = 7, batch = 3, sa = M * K + 2, sb = K * N + 1, sc = M * N;
    auto A = c.rnd(static_cast<std::size_t>(sa * batch), 20);
    auto B = c.rnd(static_cast<std::size_t>(sb * batch), 21);
    DevTensor dA = c.dev(A), dB = c.dev(B), dC = c.dev(static_cast<std::size_t>(sc * batch));
    c.be.gemm_strided_batched(c.dt, false, false, M, N, K, 1.0, dA.get(), K, sa, dB.get(), N, sb,
                              0.0, dC.get(), N, sc, batch);
    std::vector<double> want(static_cast<std::size_t>(sc * batch));
    for (std::int64_t q = 0; q < batch; ++q)
      for (std::int64_t i = 0; i < M; ++i)
        for (std::int64_t j = 0; j < N; ++j) {
          double s = 0;
          for (std::int64_t k = 0; k < K; ++k)
            s += A[static_cast<std::size_t>(q * sa + i * K + k)] *
                 B[static_cast<std::size_t>(q * sb + k * N + j)];
          want[static_cast<std::size_t>(q * sc + i * N + j)] = s;
        }
    MICS_CHECK_CLOSE(dC.download(), want, c.tol());
  });
}

BOOST_AUTO_TEST_CASE(bias_forward_backward) {
  for_each_case([](Case& c) {
    const std::int64_t N = 300, C = 70;
    auto out = c.rnd(static_cast<std::size_t>(N * C), 30), bias = c.rnd(static_cast<std::size_t>(C), 31);
    DevTensor dout = c.dev(out), dbias = c.dev(bias);
    c.be.add_bias(c.dt, dout.get(), dbias.get(), N, C);
    std::vector<double> want = out, dbw = bias;
    for (std::int64_t r = 0; r < N; ++r)
      for (std::int64_t j = 0; j < C; ++j) {
        want[static_cast<std::size_t>(r * C + j)] += bias[static_cast<std::size_t>(j)];
        dbw[static_cast<std::size_t>(j)] += out[static_cast<std::size_t>(r * C + j)];
      }
    MICS_CHECK_CLOSE(dout.download(), want, c.tol());
    DevTensor g = c.dev(out);
    c.be.bias_backward(c.dt, dbias.get(), g.get(), N, C);  // adds into the bias values
    MICS_CHECK_CLOSE(dbias.download(), dbw, c.tol() * 10);
  });
}

// The fused linear layer: out = inp W^T + bias (+ residual), the threaded path (above the
// GEMM split's size cut, rows not a multiple of the row blocks) and a small serial one.
BOOST_AUTO_TEST_CASE(linear_forward_with_and_without_residual) {
  for_each_case([](Case& c) {
    for (const std::int64_t N : {std::int64_t{7}, std::int64_t{203}}) {
      const std::int64_t OC = 150, IC = 90;
      auto x = c.rnd(static_cast<std::size_t>(N * IC), 32), w = c.rnd(static_cast<std::size_t>(OC * IC), 33);
      auto b = c.rnd(static_cast<std::size_t>(OC), 34), res = c.rnd(static_cast<std::size_t>(N * OC), 35);
      DevTensor dx = c.dev(x), dw = c.dev(w), db = c.dev(b), dres = c.dev(res);
      DevTensor plain = c.dev(static_cast<std::size_t>(N * OC)), resid = c.dev(static_cast<std::size_t>(N * OC));
      c.be.linear_forward(c.dt, plain.get(), dx.get(), dw.get(), db.get(), nullptr, N, OC, IC);
      c.be.linear_forward(c.dt, resid.get(), dx.get(), dw.get(), db.get(), dres.get(), N, OC, IC);
      std::vector<double> want(static_cast<std::size_t>(N * OC)), want_res(want.size());
      for (std::int64_t r = 0; r < N; ++r)
        for (std::int64_t o = 0; o < OC; ++o) {
          double s = b[static_cast<std::size_t>(o)];
          for (std::int64_t k = 0; k < IC; ++k)
            s += x[static_cast<std::size_t>(r * IC + k)] * w[static_cast<std::size_t>(o * IC + k)];
          want[static_cast<std::size_t>(r * OC + o)] = s;
          want_res[static_cast<std::size_t>(r * OC + o)] = s + res[static_cast<std::size_t>(r * OC + o)];
        }
      BOOST_TEST_CONTEXT("N " << N) {
        MICS_CHECK_CLOSE(plain.download(), want, c.tol() * 10);
        MICS_CHECK_CLOSE(resid.download(), want_res, c.tol() * 10);
      }
    }
  });
}

BOOST_AUTO_TEST_CASE(embedding) {
  for_each_case([](Case& c) {
    const std::int64_t B = 3, T = 5, C = 8, V = 7, Tmax = 6;
    std::vector<std::int32_t> tok(static_cast<std::size_t>(B * T));
    for (std::size_t i = 0; i < tok.size(); ++i) tok[i] = static_cast<std::int32_t>((i * 5 + 1) % V);
    tok[3] = tok[4];  // repeated token in one sequence: its gradient accumulates
    mics::device::Buffer dtok(c.be, tok.size() * 4);
    c.be.copy_to_device(dtok.get(), tok.data(), tok.size() * 4);
    auto wte = c.rnd(static_cast<std::size_t>(V * C), 40), wpe = c.rnd(static_cast<std::size_t>(Tmax * C), 41);
    DevTensor dwte = c.dev(wte), dwpe = c.dev(wpe), out = c.dev(static_cast<std::size_t>(B * T * C));
    c.be.embedding_forward(c.dt, out.get(), dtok.as<std::int32_t>(), dwte.get(), dwpe.get(), B, T, C);
    std::vector<double> want(static_cast<std::size_t>(B * T * C));
    for (std::int64_t i = 0; i < B * T; ++i)
      for (std::int64_t j = 0; j < C; ++j)
        want[static_cast<std::size_t>(i * C + j)] =
            wte[static_cast<std::size_t>(tok[static_cast<std::size_t>(i)] * C + j)] +
            wpe[static_cast<std::size_t>((i % T) * C + j)];
    MICS_CHECK_CLOSE(out.download(), want, c.tol());

    auto dout = c.rnd(static_cast<std::size_t>(B * T * C), 42);
    auto g0 = c.rnd(static_cast<std::size_t>(V * C), 43), p0 = c.rnd(static_cast<std::size_t>(Tmax * C), 44);
    DevTensor ddout = c.dev(dout), gte = c.dev(g0), gpe = c.dev(p0);
    c.be.embedding_backward(c.dt, gte.get(), gpe.get(), ddout.get(), dtok.as<std::int32_t>(), B, T, C);
    std::vector<double> wte_want = g0, wpe_want = p0;
    for (std::int64_t i = 0; i < B * T; ++i)
      for (std::int64_t j = 0; j < C; ++j) {
        wte_want[static_cast<std::size_t>(tok[static_cast<std::size_t>(i)] * C + j)] += dout[static_cast<std::size_t>(i * C + j)];
        wpe_want[static_cast<std::size_t>((i % T) * C + j)] += dout[static_cast<std::size_t>(i * C + j)];
      }
    MICS_CHECK_CLOSE(gte.download(), wte_want, c.tol() * 4);
    MICS_CHECK_CLOSE(gpe.download(), wpe_want, c.tol() * 4);
  });
}

BOOST_AUTO_TEST_CASE(layernorm) {
  for_each_case([](Case& c) {
    const std::int64_t N = 40, C = 33;
    const double eps = 1e-5;
    auto x = c.rnd(static_cast<std::size_t>(N * C), 50, -2, 3), w = c.rnd(static_cast<std::size_t>(C), 51, 0.5, 1.5),
         b = c.rnd(static_cast<std::size_t>(C), 52);
    DevTensor dx = c.dev(x), dw = c.dev(w), db = c.dev(b), out = c.dev(static_cast<std::size_t>(N * C));
    const DType st = mics::device::accum_dtype(c.dt);
    DevTensor mean(c.be, st, static_cast<std::size_t>(N)), rstd(c.be, st, static_cast<std::size_t>(N));
    c.be.layernorm_forward(c.dt, out.get(), mean.get(), rstd.get(), dx.get(), dw.get(), db.get(), N, C, eps);

    std::vector<double> y(static_cast<std::size_t>(N * C)), mu(static_cast<std::size_t>(N)), rs(static_cast<std::size_t>(N));
    for (std::int64_t r = 0; r < N; ++r) {
      double m = 0, v = 0;
      for (std::int64_t j = 0; j < C; ++j) m += x[static_cast<std::size_t>(r * C + j)];
      m /= static_cast<double>(C);
      for (std::int64_t j = 0; j < C; ++j) v += std::pow(x[static_cast<std::size_t>(r * C + j)] - m, 2);
      v /= static_cast<double>(C);
      mu[static_cast<std::size_t>(r)] = m;
      rs[static_cast<std::size_t>(r)] = 1 / std::sqrt(v + eps);
      for (std::int64_t j = 0; j < C; ++j)
        y[static_cast<std::size_t>(r * C + j)] = (x[static_cast<std::size_t>(r * C + j)] - m) * rs[static_cast<std::size_t>(r)] * w[static_cast<std::size_t>(j)] + b[static_cast<std::size_t>(j)];
    }
    MICS_CHECK_CLOSE(out.download(), y, c.tol() * 4);
    MICS_CHECK_CLOSE(mean.download(), mu, c.tol() * 4);
    MICS_CHECK_CLOSE(rstd.download(), rs, c.tol() * 4);

    // Backward against the analytic gradient in double; dinp, dweight, dbias add into.
    auto dy = c.rnd(static_cast<std::size_t>(N * C), 53), dx0 = c.rnd(static_cast<std::size_t>(N * C), 54),
         dw0 = c.rnd(static_cast<std::size_t>(C), 55), db0 = c.rnd(static_cast<std::size_t>(C), 56);
    DevTensor ddy = c.dev(dy), ddx = c.dev(dx0), ddw = c.dev(dw0), ddb = c.dev(db0);
    c.be.layernorm_backward(c.dt, ddx.get(), ddw.get(), ddb.get(), ddy.get(), dx.get(), dw.get(), mean.get(), rstd.get(), N, C);
    std::vector<double> gx = dx0, gw = dw0, gb = db0;
    for (std::int64_t r = 0; r < N; ++r) {
      double a = 0, bb = 0;
      for (std::int64_t j = 0; j < C; ++j) {
        const std::size_t i = static_cast<std::size_t>(r * C + j);
        const double nrm = (x[i] - mu[static_cast<std::size_t>(r)]) * rs[static_cast<std::size_t>(r)];
        a += dy[i] * w[static_cast<std::size_t>(j)];
        bb += dy[i] * w[static_cast<std::size_t>(j)] * nrm;
        gw[static_cast<std::size_t>(j)] += dy[i] * nrm;
        gb[static_cast<std::size_t>(j)] += dy[i];
      }
      a /= static_cast<double>(C);
      bb /= static_cast<double>(C);
      for (std::int64_t j = 0; j < C; ++j) {
        const std::size_t i = static_cast<std::size_t>(r * C + j);
        const double nrm = (x[i] - mu[static_cast<std::size_t>(r)]) * rs[static_cast<std::size_t>(r)];
        gx[i] += (dy[i] * w[static_cast<std::size_t>(j)] - a - nrm * bb) * rs[static_cast<std::size_t>(r)];
      }
    }
    MICS_CHECK_CLOSE(ddx.download(), gx, c.tol() * 10);
    MICS_CHECK_CLOSE(ddw.download(), gw, c.tol() * 10);
    MICS_CHECK_CLOSE(ddb.download(), gb, c.tol() * 10);
  });
}

BOOST_AUTO_TEST_CASE(gelu) {
  for_each_case([](Case& c) {
    const std::size_t n = 20001;
    auto x = c.rnd(n, 60, -5, 5), dy = c.rnd(n, 61);
    DevTensor dx = c.dev(x), out = c.dev(n), ddy = c.dev(dy), din = c.dev(n);
    c.be.gelu_forward(c.dt, out.get(), dx.get(), static_cast<std::int64_t>(n));
    c.be.gelu_backward(c.dt, din.get(), dx.get(), ddy.get(), static_cast<std::int64_t>(n));
    std::vector<double> y(n), g(n);
    for (std::size_t i = 0; i < n; ++i) {
      y[i] = gelu_ref(x[i]);
      // Central difference of the reference at a step where f64 is exact to ~1e-10.
      const double h = 1e-5;
      g[i] = dy[i] * (gelu_ref(x[i] + h) - gelu_ref(x[i] - h)) / (2 * h);
    }
    MICS_CHECK_CLOSE(out.download(), y, c.tol());
    MICS_CHECK_CLOSE(din.download(), g, std::max(c.tol(), 1e-9));
  });
}

// GELU's backward with the bias gradient of the layer before it, in place as the model
// calls it, on more rows than the threading cut.
BOOST_AUTO_TEST_CASE(gelu_backward_with_bias_gradient) {
  for_each_case([](Case& c) {
    const std::int64_t N = 1001, C = 70;
    const auto n = static_cast<std::size_t>(N * C);
    auto x = c.rnd(n, 62, -5, 5), dy = c.rnd(n, 63), bias = c.rnd(static_cast<std::size_t>(C), 64);
    DevTensor dx = c.dev(x), dg = c.dev(dy), db = c.dev(bias);
    c.be.gelu_backward_bias(c.dt, dg.get(), db.get(), dx.get(), dg.get(), N, C);
    std::vector<double> g(n), dbw = bias;
    const double h = 1e-5;
    for (std::size_t i = 0; i < n; ++i) {
      g[i] = dy[i] * (gelu_ref(x[i] + h) - gelu_ref(x[i] - h)) / (2 * h);
      dbw[i % static_cast<std::size_t>(C)] += g[i];
    }
    MICS_CHECK_CLOSE(dg.download(), g, std::max(c.tol(), 1e-9));
    MICS_CHECK_CLOSE(db.download(), dbw, std::max(c.tol() * 10, 1e-8));
  });
}

namespace {

// Attention in f64 from its definition, one query row at a time: the output y and dqkv.
void attention_reference(const AttentionShape& s, const std::vector<double>& qkv, const std::vector<double>& dout,
                         std::vector<double>& y, std::vector<double>& g) {
  const std::int64_t C = s.NH * s.HS, C3 = 3 * C;
  const double sc = 1 / std::sqrt(static_cast<double>(s.HS));
  auto at = [&](std::int64_t b, std::int64_t t, std::int64_t part, std::int64_t h, std::int64_t d) {
    return static_cast<std::size_t>((b * s.T + t) * C3 + part * C + h * s.HS + d);
  };
  for (std::int64_t b = 0; b < s.B; ++b)
    for (std::int64_t h = 0; h < s.NH; ++h)
      for (std::int64_t i = 0; i < s.T; ++i) {
        const std::int64_t n = s.causal ? i + 1 : s.T;
        std::vector<double> p(static_cast<std::size_t>(n));
        double mx = -1e300, z = 0;
        for (std::int64_t j = 0; j < n; ++j) {
          double dot = 0;
          for (std::int64_t d = 0; d < s.HS; ++d) dot += qkv[at(b, i, 0, h, d)] * qkv[at(b, j, 1, h, d)];
          p[static_cast<std::size_t>(j)] = dot * sc;
          mx = std::max(mx, dot * sc);
        }
        for (double& v : p) { v = std::exp(v - mx); z += v; }
        for (double& v : p) v /= z;
        std::vector<double> dp(static_cast<std::size_t>(n));
        const std::size_t orow = static_cast<std::size_t>((b * s.T + i) * C + h * s.HS);
        double dsum = 0;
        for (std::int64_t j = 0; j < n; ++j) {
          double dd = 0;
          for (std::int64_t d = 0; d < s.HS; ++d) {
            y[orow + static_cast<std::size_t>(d)] += p[static_cast<std::size_t>(j)] * qkv[at(b, j, 2, h, d)];
            dd += dout[orow + static_cast<std::size_t>(d)] * qkv[at(b, j, 2, h, d)];
            g[at(b, j, 2, h, d)] += p[static_cast<std::size_t>(j)] * dout[orow + static_cast<std::size_t>(d)];
          }
          dp[static_cast<std::size_t>(j)] = dd;
          dsum += dd * p[static_cast<std::size_t>(j)];
        }
        for (std::int64_t j = 0; j < n; ++j) {
          const double ds = p[static_cast<std::size_t>(j)] * (dp[static_cast<std::size_t>(j)] - dsum) * sc;
          for (std::int64_t d = 0; d < s.HS; ++d) {
            g[at(b, i, 0, h, d)] += ds * qkv[at(b, j, 1, h, d)];
            g[at(b, j, 1, h, d)] += ds * qkv[at(b, i, 0, h, d)];
          }
        }
      }
}

// Forward and backward of one shape on c's backend against the reference.
void check_attention(Case& c, const AttentionShape& s) {
  const std::int64_t C = s.NH * s.HS, C3 = 3 * C, BT = s.B * s.T;
  auto qkv = c.rnd(static_cast<std::size_t>(BT * C3), 70, -2, 2);
  auto dout = c.rnd(static_cast<std::size_t>(BT * C), 71);
  DevTensor dqkv_in = c.dev(qkv), out = c.dev(static_cast<std::size_t>(BT * C)), ddout = c.dev(dout),
            dqkv = c.dev(static_cast<std::size_t>(BT * C3));
  mics::device::Buffer saved(c.be, c.be.attention_saved_bytes(c.dt, s));
  c.be.attention_forward(c.dt, s, out.get(), saved.get(), dqkv_in.get());
  c.be.attention_backward(c.dt, s, dqkv.get(), ddout.get(), dqkv_in.get(), out.get(), saved.get());
  std::vector<double> y(static_cast<std::size_t>(BT * C), 0.0), g(static_cast<std::size_t>(BT * C3), 0.0);
  attention_reference(s, qkv, dout, y, g);
  MICS_CHECK_CLOSE(out.download(), y, c.tol() * 4);
  MICS_CHECK_CLOSE(dqkv.download(), g, c.tol() * 10);
}

}  // namespace

BOOST_AUTO_TEST_CASE(attention) {
  for_each_case([](Case& c) {
    for (bool causal : {true, false}) {
      BOOST_TEST_CONTEXT("causal " << causal) { check_attention(c, AttentionShape{2, 7, 3, 4, causal}); }
    }
  });
}

// Long sequences: many query blocks, the last one partial, causal blocks that see only
// part of the keys; T = 1030 is the T = 1024 regime of GPT-2 with a ragged end.
BOOST_AUTO_TEST_CASE(attention_long_sequences) {
  for_each_case([](Case& c) {
    for (bool causal : {true, false}) {
      for (std::int64_t T : {std::int64_t{130}, std::int64_t{1030}}) {
        BOOST_TEST_CONTEXT("causal " << causal << " T " << T) { check_attention(c, AttentionShape{1, T, 2, 8, causal}); }
      }
    }
  });
}

// The CPU attention splits its work over (b, h) and query blocks: the bits must not depend
// on the thread count (f32 and f64, causal and not, a ragged last block, several heads).
BOOST_AUTO_TEST_CASE(attention_same_bits_at_any_thread_count) {
  auto one = mics::device::make_cpu_backend(1), three = mics::device::make_cpu_backend(3);
  const AttentionShape base{2, 130, 3, 8, true};
  const std::int64_t C = base.NH * base.HS, BT = base.B * base.T;
  const auto qkv = random_vector(static_cast<std::size_t>(BT * 3 * C), 72, -2, 2);
  const auto dout = random_vector(static_cast<std::size_t>(BT * C), 73);
  for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
    for (bool causal : {true, false}) {
      BOOST_TEST_CONTEXT(dtype_name(dt) << " causal " << causal) {
        AttentionShape s = base;
        s.causal = causal;
        std::vector<std::vector<double>> got;
        for (Backend* be : {one.get(), three.get()}) {
          DevTensor x(*be, dt, qkv), dy(*be, dt, dout), y(*be, dt, static_cast<std::size_t>(BT * C)),
              dx(*be, dt, qkv.size());
          mics::device::Buffer saved(*be, be->attention_saved_bytes(dt, s));
          be->attention_forward(dt, s, y.get(), saved.get(), x.get());
          be->attention_backward(dt, s, dx.get(), dy.get(), x.get(), y.get(), saved.get());
          got.push_back(y.download());
          got.push_back(dx.download());
        }
        BOOST_CHECK(got[0] == got[2]);
        BOOST_CHECK(got[1] == got[3]);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(cross_entropy) {
  for_each_case([](Case& c) {
    const std::int64_t N = 9, V = 37, ld = 40;
    auto logits = c.rnd(static_cast<std::size_t>(N * ld), 80, -4, 4);
    std::vector<std::int32_t> tgt{3, -1, 0, 36, 5, -1, 17, 17, 2};
    mics::device::Buffer dt(c.be, tgt.size() * 4);
    c.be.copy_to_device(dt.get(), tgt.data(), tgt.size() * 4);
    const DType st = mics::device::accum_dtype(c.dt);
    DevTensor dl = c.dev(logits), losses(c.be, st, static_cast<std::size_t>(N));
    c.be.cross_entropy_forward(c.dt, losses.get(), dl.get(), dt.as<std::int32_t>(), N, V, ld);
    std::vector<double> want(static_cast<std::size_t>(N), 0.0), grad = logits;  // padding columns untouched
    const double scale = 1.0 / 7;
    for (std::int64_t r = 0; r < N; ++r) {
      const std::size_t row = static_cast<std::size_t>(r * ld);
      if (tgt[static_cast<std::size_t>(r)] < 0) {
        for (std::int64_t j = 0; j < V; ++j) grad[row + static_cast<std::size_t>(j)] = 0;
        continue;
      }
      double mx = -1e300, z = 0;
      for (std::int64_t j = 0; j < V; ++j) mx = std::max(mx, logits[row + static_cast<std::size_t>(j)]);
      for (std::int64_t j = 0; j < V; ++j) z += std::exp(logits[row + static_cast<std::size_t>(j)] - mx);
      want[static_cast<std::size_t>(r)] = std::log(z) + mx - logits[row + static_cast<std::size_t>(tgt[static_cast<std::size_t>(r)])];
      for (std::int64_t j = 0; j < V; ++j)
        grad[row + static_cast<std::size_t>(j)] = scale * (std::exp(logits[row + static_cast<std::size_t>(j)] - mx) / z - (j == tgt[static_cast<std::size_t>(r)] ? 1 : 0));
    }
    MICS_CHECK_CLOSE(losses.download(), want, c.tol() * 4);
    // The pair that carries the row log-sum-exp from forward to backward: the same values.
    DevTensor dl2 = c.dev(logits), losses2(c.be, st, static_cast<std::size_t>(N)),
              lse(c.be, st, static_cast<std::size_t>(N));
    c.be.cross_entropy_forward_lse(c.dt, losses2.get(), lse.get(), dl2.get(), dt.as<std::int32_t>(), N, V, ld);
    MICS_CHECK_CLOSE(losses2.download(), want, c.tol() * 4);
    // In place (dlogits aliases logits), as the model uses it.
    c.be.cross_entropy_backward(c.dt, dl.get(), dl.get(), dt.as<std::int32_t>(), N, V, ld, scale);
    MICS_CHECK_CLOSE(dl.download(), grad, c.tol() * 4);
    c.be.cross_entropy_backward_lse(c.dt, dl2.get(), dl2.get(), lse.get(), dt.as<std::int32_t>(), N, V, ld, scale);
    MICS_CHECK_CLOSE(dl2.download(), grad, c.tol() * 4);
  });
}

namespace {
// AdamW in f64 (decoupled weight decay, bias-corrected moments) at step hp.step.
void adamw_step_reference(std::vector<double>& p, std::vector<double>& m, std::vector<double>& v,
                     const std::vector<double>& g, const mics::device::AdamWParams& hp) {
  for (std::size_t i = 0; i < p.size(); ++i) {
    const double gi = g[i] * hp.grad_scale;
    m[i] = hp.beta1 * m[i] + (1 - hp.beta1) * gi;
    v[i] = hp.beta2 * v[i] + (1 - hp.beta2) * gi * gi;
    const double mh = m[i] / (1 - std::pow(hp.beta1, hp.step));
    const double vh = v[i] / (1 - std::pow(hp.beta2, hp.step));
    p[i] = p[i] - hp.lr * hp.weight_decay * p[i] - hp.lr * mh / (std::sqrt(vh) + hp.eps);
  }
}
}  // namespace

BOOST_AUTO_TEST_CASE(adamw) {
  for_each_backend([](Backend& be) {
    for (DType dt : {DType::f64, DType::f32}) {
      if (!be.supports(dt)) continue;
      for (DType gdt : {dt, DType::bf16}) {
        BOOST_TEST_CONTEXT(dtype_name(dt) << " grads " << dtype_name(gdt)) {
          const std::size_t n = 1001;
          auto p = representable(dt, random_vector(n, 90));
          std::vector<double> m(n, 0.0), v(n, 0.0);
          DevTensor dp(be, dt, p), dm(be, dt, m), dv(be, dt, v), dg(be, gdt, n);
          mics::device::AdamWParams hp;
          hp.lr = 0.01; hp.weight_decay = 0.1; hp.grad_scale = 0.5;
          for (int step = 1; step <= 3; ++step) {
            auto g = representable(gdt, random_vector(n, 100 + static_cast<std::uint64_t>(step)));
            dg.upload(g);
            hp.step = step;
            be.adamw(dt, dp.get(), dm.get(), dv.get(), gdt, dg.get(), static_cast<std::int64_t>(n), hp);
            adamw_step_reference(p, m, v, g, hp);
          }
          MICS_CHECK_CLOSE(dp.download(), p, dt == DType::f64 ? 1e-12 : 1e-5);
          MICS_CHECK_CLOSE(dm.download(), m, dt == DType::f64 ? 1e-12 : 1e-5);
          MICS_CHECK_CLOSE(dv.download(), v, dt == DType::f64 ? 1e-12 : 1e-5);
        }
      }
    }
  });
}

// AdamW that zeroes the gradient as it reads it (the engine's accumulator): the f64
// reference, the gradient all zeros after, on a long range (threaded) and a short one.
BOOST_AUTO_TEST_CASE(adamw_zero_grad) {
  for_each_backend([](Backend& be) {
    for (DType dt : {DType::f64, DType::f32}) {
      if (!be.supports(dt)) continue;
      for (const std::size_t n : {std::size_t{1001}, std::size_t{100003}}) {
        BOOST_TEST_CONTEXT(dtype_name(dt) << " n " << n) {
          auto p = representable(dt, random_vector(n, 92));
          std::vector<double> m(n, 0.0), v(n, 0.0);
          DevTensor dp(be, dt, p), dm(be, dt, m), dv(be, dt, v), dg(be, dt, n);
          mics::device::AdamWParams hp;
          hp.lr = 0.01; hp.weight_decay = 0.1; hp.grad_scale = 0.5;
          for (int step = 1; step <= 2; ++step) {
            auto g = representable(dt, random_vector(n, 300 + static_cast<std::uint64_t>(step)));
            dg.upload(g);
            hp.step = step;
            be.adamw_zero_grad(dt, dp.get(), dm.get(), dv.get(), dt, dg.get(), static_cast<std::int64_t>(n), hp);
            adamw_step_reference(p, m, v, g, hp);
            BOOST_TEST(dg.download() == std::vector<double>(n, 0.0));
          }
          MICS_CHECK_CLOSE(dp.download(), p, dt == DType::f64 ? 1e-12 : 1e-5);
          MICS_CHECK_CLOSE(dm.download(), m, dt == DType::f64 ? 1e-12 : 1e-5);
          MICS_CHECK_CLOSE(dv.download(), v, dt == DType::f64 ? 1e-12 : 1e-5);
        }
      }
    }
  });
}

// The threaded, vectorised paths of the optimizer kernels (long ranges, not a multiple of
// any vector or thread split): the f64 reference, and the same bits whatever the thread
// count, so that replicas on ranks with different --threads stay identical.
namespace {

struct AdamWRun {
  std::vector<double> p, m, v;
};

AdamWRun run_adamw(Backend& be, DType dt, DType gdt, std::size_t n, int steps) {
  DevTensor dp(be, dt, representable(dt, random_vector(n, 91))), dm(be, dt, std::vector<double>(n, 0.0)),
      dv(be, dt, std::vector<double>(n, 0.0)), dg(be, gdt, n);
  mics::device::AdamWParams hp;
  hp.lr = 0.01; hp.weight_decay = 0.1; hp.grad_scale = 0.5;
  for (int step = 1; step <= steps; ++step) {
    dg.upload(representable(gdt, random_vector(n, 200 + static_cast<std::uint64_t>(step))));
    hp.step = step;
    be.adamw(dt, dp.get(), dm.get(), dv.get(), gdt, dg.get(), static_cast<std::int64_t>(n), hp);
  }
  return {dp.download(), dm.download(), dv.download()};
}

AdamWRun adamw_reference(DType dt, DType gdt, std::size_t n, int steps) {
  AdamWRun r{representable(dt, random_vector(n, 91)), std::vector<double>(n, 0.0), std::vector<double>(n, 0.0)};
  mics::device::AdamWParams hp;
  hp.lr = 0.01; hp.weight_decay = 0.1; hp.grad_scale = 0.5;
  for (int step = 1; step <= steps; ++step) {
    hp.step = step;
    adamw_step_reference(r.p, r.m, r.v, representable(gdt, random_vector(n, 200 + static_cast<std::uint64_t>(step))), hp);
  }
  return r;
}

}  // namespace

BOOST_AUTO_TEST_CASE(adamw_long_ranges_match_reference_at_any_thread_count) {
  const std::size_t n = 100003;
  auto one = mics::device::make_cpu_backend(1);
  for_each_backend([&](Backend& be) {
    for (DType dt : {DType::f64, DType::f32}) {
      if (!be.supports(dt)) continue;
      for (DType gdt : {dt, DType::bf16}) {
        BOOST_TEST_CONTEXT(dtype_name(dt) << " grads " << dtype_name(gdt)) {
          const AdamWRun got = run_adamw(be, dt, gdt, n, 3), want = adamw_reference(dt, gdt, n, 3);
          const double tol = dt == DType::f64 ? 1e-12 : 1e-5;
          MICS_CHECK_CLOSE(got.p, want.p, tol);
          MICS_CHECK_CLOSE(got.m, want.m, tol);
          MICS_CHECK_CLOSE(got.v, want.v, tol);
          if (be.name() != "cpu") continue;
          const AdamWRun serial = run_adamw(*one, dt, gdt, n, 3);
          BOOST_CHECK(serial.p == got.p && serial.m == got.m && serial.v == got.v);
        }
      }
    }
  });
}

BOOST_AUTO_TEST_CASE(accumulate_and_sums_long_ranges_at_any_thread_count) {
  const std::size_t n = 100003;
  auto one = mics::device::make_cpu_backend(1);
  for_each_backend([&](Backend& be) {
    for (DType dt : {DType::f64, DType::f32}) {
      if (!be.supports(dt)) continue;
      for (DType src : {dt, DType::bf16}) {
        BOOST_TEST_CONTEXT(dtype_name(dt) << " += " << dtype_name(src)) {
          const auto base = representable(dt, random_vector(n, 7)), x = representable(src, random_vector(n, 8, -3, 3));
          DevTensor acc(be, dt, base), a(be, src, x);
          be.accumulate(dt, acc.get(), src, a.get(), static_cast<std::int64_t>(n), -0.25);
          std::vector<double> want(n);
          for (std::size_t i = 0; i < n; ++i) want[i] = base[i] - 0.25 * x[i];
          MICS_CHECK_CLOSE(acc.download(), want, dt == DType::f64 ? 1e-15 : 1e-6);
          double ss = 0, s = 0;
          for (double v : x) { ss += v * v; s += v; }
          const double got_ss = be.sum_squares(src, a.get(), static_cast<std::int64_t>(n));
          BOOST_TEST(std::abs(got_ss - ss) <= 1e-10 * ss);
          BOOST_TEST(std::abs(be.sum(src, a.get(), static_cast<std::int64_t>(n)) - s) <= 1e-10 * ss);
          if (be.name() != "cpu") continue;
          DevTensor a1(*one, src, x);
          BOOST_TEST(one->sum_squares(src, a1.get(), static_cast<std::int64_t>(n)) == got_ss);
        }
      }
    }
  });
}

BOOST_AUTO_TEST_CASE(registry_and_bad_names) {
  const auto names = mics::device::available_backends();
  BOOST_TEST(names.front() == "cpu");
  BOOST_CHECK_THROW(mics::device::make_backend("tpu"), mics::UsageError);
  BOOST_TEST(mics::device::parse_dtype("BF16") == DType::bf16);
  BOOST_TEST(mics::device::parse_dtype("fp32") == DType::f32);
  BOOST_CHECK_THROW(mics::device::parse_dtype("f16"), mics::UsageError);
  auto cpu = mics::device::make_backend("cpu", 1);
  for (DType dt : {DType::f64, DType::f32, DType::bf16}) BOOST_TEST(cpu->supports(dt));
}

BOOST_AUTO_TEST_SUITE_END()
