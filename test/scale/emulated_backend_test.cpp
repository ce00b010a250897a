// The compute model (lib/device/emulated): kernels take their modelled time, the roofline
// of FLOPs over the rate and bytes over the bandwidth, by sleeping (the process uses
// almost no CPU meanwhile); memory and copies are real; nothing is computed.
#include <boost/test/unit_test.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <vector>

#include "mics/core/error.hpp"
#include "mics/device/backend.hpp"

using namespace mics::device;

namespace {

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

struct Timed {
  double wall = 0, cpu = 0;
};

template <class F>
Timed timed(Backend& be, F&& f) {
  const double c0 = cpu_seconds();
  const auto t0 = std::chrono::steady_clock::now();
  f();
  be.synchronize();
  Timed t;
  t.wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  t.cpu = cpu_seconds() - c0;
  return t;
}

}  // namespace

// 2 x 400^3 FLOPs at 0.001 TFLOPS: 0.128 s, spent asleep. The upper bound is generous
// (a loaded machine wakes sleepers late) but far below what a skipped wait or a spin
// would give: a spin would use the whole wall time in CPU.
BOOST_AUTO_TEST_CASE(gemm_takes_its_modelled_time_asleep) {
  auto be = make_emulated_backend(0.001);
  const std::int64_t n = 400;
  Buffer a(*be, DType::f32, n * n), b(*be, DType::f32, n * n), c(*be, DType::f32, n * n);
  const double model = 2.0 * n * n * n / 1e9;
  const Timed t = timed(*be, [&] {
    be->gemm(DType::f32, false, false, n, n, n, 1.0, a.get(), n, b.get(), n, 0.0, c.get(), n);
  });
  BOOST_TEST_MESSAGE("gemm: modelled " << model << " s, wall " << t.wall << " s, cpu " << t.cpu << " s");
  BOOST_TEST(std::abs(be->modelled_seconds() - model) < 1e-9);
  BOOST_TEST(t.wall >= model * 0.999);
  BOOST_TEST(t.wall <= model + 1.0);
  BOOST_TEST(t.cpu <= 0.05 + 0.2 * t.wall);
}

// 20000 tiny kernels of 1 us each (4 KB at 4 GB/s) are queued and slept off together:
// 20 ms in all, not 20000 separate sleeps of a scheduler tick.
BOOST_AUTO_TEST_CASE(tiny_kernels_accumulate) {
  auto be = make_emulated_backend(1000.0, 4.0);
  Buffer x(*be, DType::f32, 1000);
  const Timed t = timed(*be, [&] {
    for (int i = 0; i < 20000; ++i) be->fill(DType::f32, x.get(), 1000, 0.0);
  });
  BOOST_TEST_MESSAGE("20000 fills: modelled " << be->modelled_seconds() << " s, wall " << t.wall << " s");
  BOOST_TEST(std::abs(be->modelled_seconds() - 0.02) < 1e-9);
  BOOST_TEST(t.wall >= 0.02 * 0.999);
  BOOST_TEST(t.wall <= 0.02 + 1.0);
}

// The roofline: a kernel is charged the larger of its FLOP time and its byte time.
BOOST_AUTO_TEST_CASE(roofline_of_flops_and_bytes) {
  auto be = make_emulated_backend(1.0, 100.0);  // 1e12 FLOP/s, 1e11 B/s
  Buffer x(*be, DType::f32, 1 << 20);
  be->axpy(DType::f32, x.get(), x.get(), 1 << 20, 2.0);  // 2n FLOPs, 12n bytes: bytes win
  const double n = 1 << 20;
  BOOST_TEST(std::abs(be->modelled_seconds() - 12 * n / 1e11) < 1e-12);
  const double before = be->modelled_seconds();
  be->gemm(DType::f32, false, true, 256, 256, 256, 1.0, x.get(), 256, x.get(), 256, 1.0, x.get(), 256);
  const double flops_s = 2.0 * 256 * 256 * 256 / 1e12, bytes_s = 4.0 * 256 * 256 * 4 / 1e11;
  BOOST_TEST(std::abs(be->modelled_seconds() - before - std::max(flops_s, bytes_s)) < 1e-12);
}

// Copies and memory are real; results that would need arithmetic are NaN, and the
// backend says it computes nothing.
BOOST_AUTO_TEST_CASE(copies_are_real_values_are_not) {
  auto be = make_emulated_backend(10.0);
  BOOST_TEST(!be->computes_values());
  BOOST_TEST(be->is_host_memory());
  BOOST_TEST(be->peak_flops(DType::f32) == 10e12);
  std::vector<float> in{1, 2, 3, 4}, out(4, 0.0f);
  Buffer d(*be, DType::f32, 4);
  BOOST_TEST(be->bytes_in_use() >= 16u);
  be->copy_to_device(d.get(), in.data(), 16);
  be->copy_to_host(out.data(), d.get(), 16);
  BOOST_TEST(out == in);
  BOOST_TEST(std::isnan(be->sum(DType::f32, d.get(), 4)));
  BOOST_TEST(std::isnan(be->sum_squares(DType::f32, d.get(), 4)));
}

BOOST_AUTO_TEST_CASE(registry_names_and_bad_rates) {
  auto be = make_backend("emulated:2:100");
  BOOST_TEST(be->peak_flops(DType::f32) == 2e12);
  BOOST_TEST(be->name() == "emulated(2 TFLOPS, 100 GB/s)");
  BOOST_TEST(make_backend("emulated:0.5")->name() == "emulated(0.5 TFLOPS)");
  BOOST_CHECK_THROW(make_backend("emulated:fast"), mics::UsageError);
  BOOST_CHECK_THROW(make_backend("emulated:1:2:3"), mics::UsageError);
  BOOST_CHECK_THROW(make_emulated_backend(0.0), mics::UsageError);
  BOOST_CHECK_THROW(make_emulated_backend(1.0, -1.0), mics::UsageError);
  // Not a numeric backend: the kernel tests that iterate over the list must not see it.
  const auto names = available_backends();
  BOOST_TEST((std::find(names.begin(), names.end(), "emulated") == names.end()));
}
