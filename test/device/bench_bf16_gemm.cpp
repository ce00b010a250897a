// bench_bf16_gemm [repeats]: single-thread GF/s of OpenBLAS sgemm (f32 operands) and of
// gemm_bf16 on every path this CPU runs (amx, avx512-bf16, portable), for the GEMM shapes of a GPT-2 small
// step with 1024 tokens as one of two threads sees them (half of M or N). Not a test: run
// it by hand on a quiet machine; it prints the load average before and after.
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "bf16_gemm.hpp"

using mics::device::bf16_t;
using i64 = std::int64_t;

namespace {

struct Shape {
  const char* what;
  bool ta, tb;
  i64 M, N, K;
};

const Shape kShapes[] = {
    {"fwd qkv   x W^T", false, true, 512, 2304, 768},
    {"fwd fc    x W^T", false, true, 512, 3072, 768},
    {"fwd proj  x W^T", false, true, 512, 768, 3072},
    {"dX fc     dY W", false, false, 512, 768, 3072},
    {"dX qkv    dY W", false, false, 512, 768, 2304},
    {"dW qkv    dY^T X", true, false, 1152, 768, 1024},
    {"dW fc     dY^T X", true, false, 1536, 768, 1024},
    {"head fwd  x E^T", false, true, 1024, 25129, 768},
    {"head dX   dY E", false, false, 512, 768, 50257},
    {"head dW   dY^T X", true, false, 25129, 768, 1024},
    {"attn S=QK^T", false, true, 64, 1024, 64},
    {"attn O=PV", false, false, 64, 64, 1024},
    {"attn dV=P^T dO", true, false, 1024, 64, 64},
};

using mics::device::Bf16GemmPath;

// The fastest first, as the table's columns.
std::vector<Bf16GemmPath> usable_paths() {
  std::vector<Bf16GemmPath> out;
  for (Bf16GemmPath p : {Bf16GemmPath::amx, Bf16GemmPath::avx512_bf16, Bf16GemmPath::portable})
    if (mics::device::bf16_gemm_path_usable(p)) out.push_back(p);
  return out;
}

void show_load(const char* when) {
  std::printf("# uptime %s: ", when);
  std::fflush(stdout);
  if (std::system("uptime") != 0) std::printf("(uptime failed)\n");
}

template <class F>
std::vector<double> time_runs(int repeats, F&& run) {
  run();  // warm the caches and the thread-local buffers
  std::vector<double> s;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    run();
    s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return s;
}

// "median [min-max]" in GF/s for the given run times.
std::string gflops(const Shape& s, std::vector<double> t) {
  std::sort(t.begin(), t.end());
  const double flop =
      2.0 * static_cast<double>(s.M) * static_cast<double>(s.N) * static_cast<double>(s.K);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%7.0f [%5.0f-%5.0f]", flop / t[t.size() / 2] / 1e9,
                flop / t.back() / 1e9, flop / t.front() / 1e9);
  return buf;
}

void bench(const Shape& s, int repeats) {
  const i64 a_n = s.M * s.K, b_n = s.K * s.N;
  std::mt19937 gen(1);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> af(static_cast<std::size_t>(a_n)), bf(static_cast<std::size_t>(b_n)),
      c(static_cast<std::size_t>(s.M * s.N));
  std::vector<bf16_t> ab(af.size()), bb(bf.size());
  for (std::size_t i = 0; i < af.size(); ++i)
    ab[i] = mics::device::float_to_bf16(af[i] = dist(gen));
  for (std::size_t i = 0; i < bf.size(); ++i)
    bb[i] = mics::device::float_to_bf16(bf[i] = dist(gen));
  const i64 lda = s.ta ? s.M : s.K, ldb = s.tb ? s.K : s.N;
  const auto sgemm = time_runs(repeats, [&] {
    cblas_sgemm(CblasRowMajor, s.ta ? CblasTrans : CblasNoTrans, s.tb ? CblasTrans : CblasNoTrans,
                static_cast<int>(s.M), static_cast<int>(s.N), static_cast<int>(s.K), 1.0f,
                af.data(), static_cast<int>(lda), bf.data(), static_cast<int>(ldb), 0.0f, c.data(),
                static_cast<int>(s.N));
  });
  std::printf("%-17s %s%s %6lld %6lld %6lld | %s", s.what, s.ta ? "T" : "N", s.tb ? "T" : "N",
              static_cast<long long>(s.M), static_cast<long long>(s.N),
              static_cast<long long>(s.K), gflops(s, sgemm).c_str());
  for (Bf16GemmPath path : usable_paths()) {
    // The portable path is several times slower: fewer repeats keep the run short.
    const int n = path == Bf16GemmPath::portable ? std::min(repeats, 3) : repeats;
    const auto t = time_runs(n, [&] {
      mics::device::gemm_bf16_on(path, s.ta, s.tb, s.M, s.N, s.K, 1.0f, ab.data(), lda,
                                 bb.data(), ldb, 0.0f, c.data(), s.N);
    });
    std::printf(" | %s", gflops(s, t).c_str());
  }
  std::printf("\n");
  std::fflush(stdout);
}

#if defined(__x86_64__) && defined(__GNUC__)
constexpr long kPeakIters = 20000000;  // of 16 instructions each

// GF/s of a register-only loop that ran since t0, and keeps its 16 accumulators alive
// (read as bytes: no AVX-512 code here).
double peak_gflops(std::chrono::steady_clock::time_point t0, const void* acc, double flops) {
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  float lanes[16 * 16], sink = 0;
  std::memcpy(lanes, acc, sizeof lanes);
  for (int i = 0; i < 16; ++i) sink += lanes[16 * i];  // every accumulator, or GCC drops some
  if (sink < 0) std::printf("#\n");
  return static_cast<double>(kPeakIters) * 16 * flops / s / 1e9;
}

// The core's vdpbf16ps rate with nothing but the instruction: 16 independent zmm
// accumulators in registers, no memory operands (64 flops per instruction).
__attribute__((target("avx512bf16,avx512f,avx512bw"))) double dpbf16_peak_gflops() {
  __m512 acc[16];
  for (__m512& a : acc) a = _mm512_setzero_ps();
  __m512bh x = reinterpret_cast<__m512bh>(_mm512_set1_epi32(0x3f803f80));  // (1, 1)
  const auto t0 = std::chrono::steady_clock::now();
  for (long n = 0; n < kPeakIters; ++n) {
#pragma GCC unroll 16
    for (__m512& a : acc) a = _mm512_dpbf16_ps(a, x, x);
    __asm__ volatile("" : "+v"(x));  // keeps the loop from being folded away
  }
  return peak_gflops(t0, acc, 64);
}

// The same for f32 FMA on zmm registers (32 flops per instruction).
__attribute__((target("avx512f"))) double fma512_peak_gflops() {
  __m512 acc[16];
  for (__m512& a : acc) a = _mm512_setzero_ps();
  __m512 x = _mm512_set1_ps(1.0f);
  const auto t0 = std::chrono::steady_clock::now();
  for (long n = 0; n < kPeakIters; ++n) {
#pragma GCC unroll 16
    for (__m512& a : acc) a = _mm512_fmadd_ps(x, x, a);
    __asm__ volatile("" : "+v"(x));
  }
  return peak_gflops(t0, acc, 32);
}
#endif

// Register-only peaks of this core, the limits the table's rates compare with.
void print_peaks() {
#if defined(__x86_64__) && defined(__GNUC__)
  if (mics::device::bf16_gemm_path_usable(Bf16GemmPath::avx512_bf16)) {
    std::printf("# peak (register-only loops, one thread): vdpbf16ps %.0f GF/s, f32 zmm FMA %.0f GF/s\n",
                dpbf16_peak_gflops(), fma512_peak_gflops());
    return;
  }
#endif
  std::printf("# peak: not measured (the CPU has no AVX-512 BF16)\n");
}

}  // namespace

int main(int argc, char** argv) {
  const int repeats = argc > 1 ? std::max(1, std::atoi(argv[1])) : 5;
  openblas_set_num_threads(1);
  std::printf("# one thread; %d timed runs after a warm-up (fallback: at most 3), C f32, beta 0\n",
              repeats);
  std::printf("# gemm_bf16 takes the %s path\n",
              mics::device::bf16_gemm_path_name(mics::device::bf16_gemm_path()));
  show_load("before");
  print_peaks();
  std::printf("%-17s op %6s %6s %6s | %-21s", "shape", "M", "N", "K", "sgemm f32 GF/s");
  for (Bf16GemmPath path : usable_paths())
    std::printf(" | %-21s", (std::string(mics::device::bf16_gemm_path_name(path)) + " GF/s").c_str());
  std::printf("\n%-17s    %6s %6s %6s | %-21s", "", "", "", "", "median [min-max]");
  for (std::size_t i = 0; i < usable_paths().size(); ++i) std::printf(" | %-21s", "median [min-max]");
  std::printf("\n");
  for (const Shape& s : kShapes) bench(s, repeats);
  print_peaks();
  show_load("after");
  return 0;
}
