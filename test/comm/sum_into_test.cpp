// The ring collectives' host reductions (lib/comm/mpi/schedules.cpp): the vectorised bf16
// sum rounds exactly as the scalar conversion helpers do, specials included.
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "../../lib/comm/mpi/schedules.hpp"
#include "mics/device/dtype.hpp"

using mics::device::bf16_t;
using mics::device::bf16_to_float;
using mics::device::float_to_bf16;

BOOST_AUTO_TEST_CASE(bf16_sum_rounds_like_the_scalar_conversion) {
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> bits(0, 0xffff);
  std::vector<std::uint16_t> a(1 << 16), b(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    a[i] = static_cast<std::uint16_t>(i);  // every bf16 value once, NaNs and infinities too
    b[i] = static_cast<std::uint16_t>(bits(rng));
  }
  // Sums that round to even and overflow to infinity.
  a[0] = float_to_bf16(1.0f).bits;
  b[0] = float_to_bf16(std::ldexp(1.0f, -8)).bits;
  a[1] = b[1] = float_to_bf16(std::numeric_limits<float>::max()).bits;
  std::vector<std::uint16_t> want(a.size());
  for (std::size_t i = 0; i < a.size(); ++i)
    want[i] = float_to_bf16(bf16_to_float(bf16_t{a[i]}) + bf16_to_float(bf16_t{b[i]})).bits;
  mics::comm::mpi::sum_into(a.data(), b.data(), a.size(), mics::device::DType::bf16);
  // Bit for bit, except which NaN a sum of two NaNs returns (IEEE leaves the payload
  // open, and a vector add may take it from either operand): then both must be NaN.
  const auto is_nan = [](std::uint16_t v) { return (v & 0x7fffu) > 0x7f80u; };
  std::size_t differ = 0, nan_pairs = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i] == want[i]) continue;
    if (is_nan(a[i]) && is_nan(want[i]) && is_nan(b[i]) && is_nan(static_cast<std::uint16_t>(i))) {
      ++nan_pairs;
      continue;
    }
    ++differ;
    BOOST_TEST_MESSAGE("element " << i << ": got " << a[i] << " want " << want[i]);
  }
  BOOST_TEST(differ == 0u);
  BOOST_TEST(nan_pairs <= 2u);
}

BOOST_AUTO_TEST_CASE(f32_sum_is_elementwise) {
  std::vector<float> a{1.5f, -2.0f, 1e30f, 0.0f, 3.0f}, b{0.25f, 2.0f, 1e30f, -0.0f, 4.0f};
  mics::comm::mpi::sum_into(a.data(), b.data(), a.size(), mics::device::DType::f32);
  const std::vector<float> want{1.75f, 0.0f, 2e30f, 0.0f, 7.0f};
  BOOST_TEST(a == want, boost::test_tools::per_element());
}
