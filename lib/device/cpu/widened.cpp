#include "widened.hpp"

#include <omp.h>

#include <algorithm>
#include <cstring>

#include "mics/core/error.hpp"
#include "vector_clones.hpp"

namespace mics::device::cpu {
namespace {

constexpr std::int64_t kParallel = 65536;

MICS_VECTOR_CLONES void widen_range(float* __restrict d, const std::uint16_t* __restrict s, std::int64_t lo,
                                    std::int64_t hi) {
#pragma omp simd
  for (std::int64_t i = lo; i < hi; ++i) {
    const std::uint32_t u = static_cast<std::uint32_t>(s[i]) << 16;
    std::memcpy(d + i, &u, 4);
  }
}
// float_to_bf16 of dtype.hpp as one branch-free expression, so that the loop vectorises:
// round to nearest even, and a NaN stays a NaN (quiet bit set) instead of rounding up
// into an infinity.
MICS_VECTOR_CLONES void narrow_range(std::uint16_t* __restrict d, const float* __restrict s, std::int64_t lo,
                                     std::int64_t hi) {
#pragma omp simd
  for (std::int64_t i = lo; i < hi; ++i) {
    std::uint32_t u;
    std::memcpy(&u, s + i, 4);
    const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
    const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    d[i] = static_cast<std::uint16_t>(nan ? ((u >> 16) | 0x0040u) : rounded);
  }
}

template <class Body>
void over(std::int64_t n, int threads, Body&& body) {
  if (threads <= 1 || n < kParallel || omp_in_parallel()) {
    body(std::int64_t{0}, n);
    return;
  }
  const std::int64_t step = ((n + threads - 1) / threads + 31) / 32 * 32;
#pragma omp parallel for num_threads(threads) schedule(static, 1)
  for (int q = 0; q < threads; ++q) {
    const std::int64_t lo = q * step, hi = std::min(n, lo + step);
    if (lo < hi) body(lo, hi);
  }
}

}  // namespace

void widen_bf16(float* dst, const bf16_t* src, std::int64_t n, int threads) {
  static_assert(sizeof(bf16_t) == sizeof(std::uint16_t));
  const auto* s = reinterpret_cast<const std::uint16_t*>(src);
  over(n, threads, [&](std::int64_t lo, std::int64_t hi) { widen_range(dst, s, lo, hi); });
}
void narrow_bf16(bf16_t* dst, const float* src, std::int64_t n, int threads) {
  auto* d = reinterpret_cast<std::uint16_t*>(dst);
  over(n, threads, [&](std::int64_t lo, std::int64_t hi) { narrow_range(d, src, lo, hi); });
}

float* Widened::view(void* p, std::int64_t n, bool read, bool write) {
  if (p == nullptr) return nullptr;
  for (View& v : views_)
    if (v.bf == p) {
      if (v.n != n) throw Error("cpu backend: a bf16 argument passed twice with different lengths");
      if (read && !v.read) widen_bf16(v.f, static_cast<const bf16_t*>(p), n, threads_);
      v.read = v.read || read;
      v.write = v.write || write;
      return v.f;
    }
  if (pool_.size() <= views_.size()) pool_.resize(views_.size() + 1);
  std::vector<float>& s = pool_[views_.size()];
  if (s.size() < static_cast<std::size_t>(n)) s.resize(static_cast<std::size_t>(n));
  if (read) widen_bf16(s.data(), static_cast<const bf16_t*>(p), n, threads_);
  views_.push_back(View{p, s.data(), n, read, write});
  return s.data();
}

void Widened::commit() {
  for (const View& v : views_)
    if (v.write) narrow_bf16(static_cast<bf16_t*>(v.bf), v.f, v.n, threads_);
}

}  // namespace mics::device::cpu
