// The CPU bf16 GEMM (lib/device/cpu/bf16_gemm): every path this CPU can run against a
// float64 reference computed from the same bf16 inputs, the fast paths against the
// portable one, and the promise the backend's threading relies on: a call split into row
// or column blocks gives the same bits. Paths the CPU lacks are named in the log as not
// tested here.
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "bf16_gemm.hpp"

using mics::device::bf16_t;
using mics::device::bf16_to_float;
using mics::device::float_to_bf16;
using i64 = std::int64_t;

namespace {

const bf16_t kNanBf16{0x7fc0};

// A stored matrix of rows x cols with leading dimension ld; the cells between cols and ld
// hold NaN, so that a kernel reading past the extent poisons its result.
struct Stored {
  i64 rows, cols, ld;
  std::vector<bf16_t> v;
  Stored(i64 r, i64 c, i64 l, std::uint64_t seed) : rows(r), cols(c), ld(l) {
    v.assign(static_cast<std::size_t>(std::max<i64>(r * l, 1)), kNanBf16);
    std::mt19937_64 gen(seed);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (i64 i = 0; i < r; ++i)
      for (i64 j = 0; j < c; ++j) v[static_cast<std::size_t>(i * l + j)] = float_to_bf16(dist(gen));
  }
  // Element (i, k) of op(X): the stored matrix or its transpose.
  double op(bool trans, i64 i, i64 k) const {
    return bf16_to_float(v[static_cast<std::size_t>(trans ? k * ld + i : i * ld + k)]);
  }
};

struct Shape {
  i64 M, N, K;
};

// The operands of one call, stored with leading dimensions 3 past their extents.
struct Problem {
  bool ta, tb;
  Shape s;
  Stored A, B;
  Problem(bool ta_, bool tb_, Shape s_, std::uint64_t seed)
      : ta(ta_),
        tb(tb_),
        s(s_),
        A(ta ? s.K : s.M, ta ? s.M : s.K, (ta ? s.M : s.K) + 3, seed),
        B(tb ? s.N : s.K, tb ? s.K : s.N, (tb ? s.K : s.N) + 3, seed + 1) {}
};

using mics::device::Bf16GemmPath;

// gemm_bf16 on one named path, or (path unset) gemm_bf16 itself, for both C types.
struct Gemm {
  std::optional<Bf16GemmPath> path;
  template <class CT>
  void operator()(bool ta, bool tb, i64 M, i64 N, i64 K, float alpha, const bf16_t* A, i64 lda,
                  const bf16_t* B, i64 ldb, float beta, CT* C, i64 ldc) const {
    if (path)
      mics::device::gemm_bf16_on(*path, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    else
      mics::device::gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
};

const Gemm kPortable{Bf16GemmPath::portable};

// The paths this CPU runs, the portable one first; the others are named in the log.
std::vector<Bf16GemmPath> usable_paths() {
  static bool said = false;
  std::vector<Bf16GemmPath> out;
  for (Bf16GemmPath p : {Bf16GemmPath::portable, Bf16GemmPath::avx512_bf16, Bf16GemmPath::amx}) {
    if (mics::device::bf16_gemm_path_usable(p))
      out.push_back(p);
    else if (!said)
      BOOST_TEST_MESSAGE("bf16 GEMM path " << mics::device::bf16_gemm_path_name(p)
                                           << " is not usable on this CPU: not tested here");
  }
  said = true;
  return out;
}

std::vector<Bf16GemmPath> packed_paths() {
  std::vector<Bf16GemmPath> out = usable_paths();
  out.erase(out.begin());
  return out;
}

float to_float(float x) { return x; }
float to_float(bf16_t x) { return bf16_to_float(x); }
template <class CT>
CT from_float(float x) {
  if constexpr (std::is_same_v<CT, float>)
    return x;
  else
    return float_to_bf16(x);
}

// Initial C with ldc = N + 5: NaN when beta == 0 (it must not be read), else values.
template <class CT>
std::vector<CT> initial_c(const Shape& s, i64 ldc, float beta, std::uint64_t seed) {
  std::vector<CT> c(static_cast<std::size_t>(s.M * ldc), from_float<CT>(std::nanf("")));
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  if (beta != 0.0f)
    for (i64 i = 0; i < s.M; ++i)
      for (i64 j = 0; j < s.N; ++j)
        c[static_cast<std::size_t>(i * ldc + j)] = from_float<CT>(dist(gen));
  return c;
}

// Runs `gemm` on one problem and checks every element against float64: f32 sums of exact
// products err by at most about K * 2^-24 of sum |a||b|; the epilogue adds a few f32
// roundings, and a bf16 C one more rounding of 2^-8 relative.
template <class CT, class Gemm>
void check_against_reference(Gemm gemm, const Problem& p, float alpha, float beta) {
  const Shape& s = p.s;
  const i64 ldc = s.N + 5;
  std::vector<CT> c = initial_c<CT>(s, ldc, beta, 99);
  const std::vector<CT> c0 = c;
  gemm(p.ta, p.tb, s.M, s.N, s.K, alpha, p.A.v.data(), p.A.ld, p.B.v.data(), p.B.ld, beta, c.data(),
       ldc);
  int bad = 0;
  for (i64 i = 0; i < s.M; ++i)
    for (i64 j = 0; j < s.N; ++j) {
      double sum = 0, abs_sum = 0;
      for (i64 k = 0; k < s.K; ++k) {
        const double prod = p.A.op(p.ta, i, k) * p.B.op(p.tb, k, j);
        sum += prod;
        abs_sum += std::fabs(prod);
      }
      const std::size_t at = static_cast<std::size_t>(i * ldc + j);
      const double al = alpha, be = beta;
      const double cin = beta == 0.0f ? 0.0 : static_cast<double>(to_float(c0[at]));
      const double want = al * sum + be * cin;
      const double scale = std::fabs(al) * abs_sum + std::fabs(be * cin);
      double tol = scale * (static_cast<double>(s.K) + 4) * std::ldexp(1.0, -24) + 1e-30;
      if constexpr (std::is_same_v<CT, bf16_t>) tol += std::fabs(want) * std::ldexp(1.0, -8) + tol;
      const double got = to_float(c[at]);
      if (!(std::fabs(got - want) <= tol) && ++bad <= 3)
        BOOST_ERROR("C(" << i << "," << j << ") = " << got << ", want " << want << " +- " << tol);
    }
  BOOST_TEST(bad == 0);
  // Cells past N in each row are not to be written.
  for (i64 i = 0; i < s.M; ++i)
    for (i64 j = s.N; j < ldc; ++j) {
      const std::size_t at = static_cast<std::size_t>(i * ldc + j);
      BOOST_TEST(std::memcmp(&c[at], &c0[at], sizeof(CT)) == 0);
    }
}

const Shape kShapes[] = {
    {37, 45, 70},    {1, 45, 70},    {37, 1, 70}, {37, 45, 1},   {16, 32, 64},
    {300, 260, 200}, {70, 90, 1000}, {1, 1, 1},   {40, 50, 4500}};  // K > 4096: the packed paths cut K
                                                                    // into chunks

// Every transpose, shape, alpha, beta and C type through one path.
void check_all(const Gemm& gemm) {
  std::uint64_t seed = 1;
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (const Shape& s : kShapes) {
        const Problem p(ta, tb, s, seed += 2);
        for (float alpha : {1.0f, -0.75f})
          for (float beta : {0.0f, 1.0f, 0.5f}) {
            BOOST_TEST_CONTEXT("ta " << ta << " tb " << tb << " M " << s.M << " N " << s.N << " K "
                                     << s.K << " alpha " << alpha << " beta " << beta) {
              check_against_reference<float>(gemm, p, alpha, beta);
              check_against_reference<bf16_t>(gemm, p, alpha, beta);
            }
          }
      }
}

// C of one call, and of the same call made in row blocks and in column blocks.
template <class CT, class Gemm>
std::vector<CT> run_blocks(Gemm gemm, const Problem& p, const std::vector<i64>& row_cuts,
                           const std::vector<i64>& col_cuts) {
  const Shape& s = p.s;
  const i64 ldc = s.N;
  std::vector<CT> c = initial_c<CT>(s, ldc, 0.5f, 7);
  for (std::size_t r = 0; r + 1 < row_cuts.size(); ++r)
    for (std::size_t q = 0; q + 1 < col_cuts.size(); ++q) {
      const i64 i0 = row_cuts[r], i1 = row_cuts[r + 1], j0 = col_cuts[q], j1 = col_cuts[q + 1];
      const bf16_t* a = p.A.v.data() + (p.ta ? i0 : i0 * p.A.ld);
      const bf16_t* b = p.B.v.data() + (p.tb ? j0 * p.B.ld : j0);
      gemm(p.ta, p.tb, i1 - i0, j1 - j0, s.K, 1.25f, a, p.A.ld, b, p.B.ld, 0.5f,
           c.data() + i0 * ldc + j0, ldc);
    }
  return c;
}

template <class CT, class Gemm>
void check_split_bits_of(Gemm gemm, const Shape& s) {
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      BOOST_TEST_CONTEXT("ta " << ta << " tb " << tb) {
        const Problem p(ta, tb, s, 1234);
        const auto whole = run_blocks<CT>(gemm, p, {0, s.M}, {0, s.N});
        const std::vector<std::vector<i64>> row_splits = {{0, 150, s.M}, {0, 37, 211, s.M}};
        for (const auto& rows : row_splits) {
          const auto parts = run_blocks<CT>(gemm, p, rows, {0, s.N});
          BOOST_TEST(std::memcmp(whole.data(), parts.data(), whole.size() * sizeof(CT)) == 0);
        }
        const auto cols = run_blocks<CT>(gemm, p, {0, s.M}, {0, 45, s.N});
        BOOST_TEST(std::memcmp(whole.data(), cols.data(), whole.size() * sizeof(CT)) == 0);
        const auto both = run_blocks<CT>(gemm, p, {0, 101, s.M}, {0, 130, s.N});
        BOOST_TEST(std::memcmp(whole.data(), both.data(), whole.size() * sizeof(CT)) == 0);
      }
    }
}

// Shapes with several A blocks, B panels and K blocks on the packed paths, and K chunks.
template <class CT, class Gemm>
void check_split_bits(Gemm gemm) {
  for (const Shape& s : {Shape{300, 260, 1000}, Shape{300, 260, 4500}})
    check_split_bits_of<CT>(gemm, s);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(bf16_gemm)

BOOST_AUTO_TEST_CASE(every_path_against_float64) {
  for (Bf16GemmPath path : usable_paths())
    BOOST_TEST_CONTEXT("path " << mics::device::bf16_gemm_path_name(path)) { check_all(Gemm{path}); }
  BOOST_TEST_MESSAGE("gemm_bf16 takes " << mics::device::bf16_gemm_path_name(
                         mics::device::bf16_gemm_path()));
  check_all(Gemm{});
}

BOOST_AUTO_TEST_CASE(gemm_bf16_takes_the_fastest_usable_path) {
  if (const char* cap = std::getenv("MICS_BF16_GEMM"); cap != nullptr && *cap != '\0') {
    BOOST_TEST_MESSAGE("MICS_BF16_GEMM=" << cap << " caps the choice here: not checked");
    return;
  }
  BOOST_TEST(std::string(mics::device::bf16_gemm_path_name(mics::device::bf16_gemm_path())) ==
             mics::device::bf16_gemm_path_name(usable_paths().back()));
}

BOOST_AUTO_TEST_CASE(packed_paths_against_portable) {
  for (Bf16GemmPath path : packed_paths())
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        const Problem p(ta, tb, {300, 260, 1000}, 77);
        const auto fast = run_blocks<float>(Gemm{path}, p, {0, 300}, {0, 260});
        const auto slow = run_blocks<float>(kPortable, p, {0, 300}, {0, 260});
        double worst = 0;
        for (std::size_t i = 0; i < fast.size(); ++i)
          worst = std::max(worst, static_cast<double>(std::fabs(fast[i] - slow[i])));
        // |1.25 sum| <= 1.25 K and sums of 1000 products err by well under 1e-4 each here.
        BOOST_TEST_CONTEXT("path " << mics::device::bf16_gemm_path_name(path) << " ta " << ta
                                   << " tb " << tb) {
          BOOST_TEST(worst < 1e-3);
        }
      }
}

BOOST_AUTO_TEST_CASE(split_calls_give_the_same_bits) {
  for (Bf16GemmPath path : usable_paths())
    BOOST_TEST_CONTEXT("path " << mics::device::bf16_gemm_path_name(path)) {
      check_split_bits<float>(Gemm{path});
      check_split_bits<bf16_t>(Gemm{path});
    }
}

BOOST_AUTO_TEST_CASE(threads_splitting_rows_and_columns) {
  // As the backend will call it: one call per thread on its own rows (then columns), each
  // thread with its own packing buffers (and tile configuration), new threads included.
  for (Bf16GemmPath path : usable_paths()) {
    const Gemm gemm{path};
    const Problem p(false, true, {300, 260, 1000}, 4321);
    const Shape& s = p.s;
    const auto whole = run_blocks<float>(gemm, p, {0, s.M}, {0, s.N});
    for (bool by_rows : {true, false}) {
      std::vector<float> c = initial_c<float>(s, s.N, 0.5f, 7);
      auto part = [&](i64 lo, i64 hi) {
        const i64 i0 = by_rows ? lo : 0, i1 = by_rows ? hi : s.M;
        const i64 j0 = by_rows ? 0 : lo, j1 = by_rows ? s.N : hi;
        gemm(false, true, i1 - i0, j1 - j0, s.K, 1.25f, p.A.v.data() + i0 * p.A.ld, p.A.ld,
             p.B.v.data() + j0 * p.B.ld, p.B.ld, 0.5f, c.data() + i0 * s.N + j0, s.N);
      };
      const i64 extent = by_rows ? s.M : s.N;
      std::thread t1(part, 0, extent / 3), t2(part, extent / 3, extent);
      t1.join();
      t2.join();
      BOOST_TEST_CONTEXT("path " << mics::device::bf16_gemm_path_name(path) << " by rows "
                                 << by_rows) {
        BOOST_TEST(std::memcmp(whole.data(), c.data(), whole.size() * sizeof(float)) == 0);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(large_c_is_streamed_out) {
  // C of 32 MiB or more with beta == 0 leaves the packed paths through non-temporal
  // stores, rows unaligned here (ldc = N + 5).
  const Problem pf(false, true, {2048, 4100, 40}, 5), pb(true, false, {2048, 8200, 40}, 6);
  for (Bf16GemmPath path : packed_paths())
    BOOST_TEST_CONTEXT("path " << mics::device::bf16_gemm_path_name(path)) {
      check_against_reference<float>(Gemm{path}, pf, 0.5f, 0.0f);
      check_against_reference<bf16_t>(Gemm{path}, pb, 0.5f, 0.0f);
    }
}

BOOST_AUTO_TEST_CASE(empty_sums_and_empty_calls) {
  for (Bf16GemmPath path : usable_paths()) {
    const Gemm g{path};
    std::vector<float> c = {1.0f, 2.0f, 3.0f, 4.0f};
    g(false, false, 2, 2, 0, 1.0f, nullptr, 1, nullptr, 2, 0.5f, c.data(), 2);
    BOOST_TEST(c == (std::vector<float>{0.5f, 1.0f, 1.5f, 2.0f}), boost::test_tools::per_element());
    g(false, false, 0, 2, 3, 1.0f, nullptr, 3, nullptr, 2, 0.5f, c.data(), 2);
    g(false, false, 2, 0, 3, 1.0f, nullptr, 3, nullptr, 2, 0.5f, c.data(), 2);
    BOOST_TEST(c[0] == 0.5f);
  }
}

BOOST_AUTO_TEST_SUITE_END()
