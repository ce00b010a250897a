#include "streaming_kernels.hpp"
#include "vector_clones.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "mics/core/error.hpp"

namespace mics::device::cpu {
namespace {

// Below this many elements a call runs on the calling thread: waking the pool costs more
// than the pass (the engine calls AdamW once per tensor range, and biases are small).
constexpr std::int64_t kParallelElements = 32768;
// Elements per block of a reduction; each block is summed in 8 interleaved partials.
constexpr std::int64_t kReduceBlock = 4096;
constexpr int kLanes = 8;

[[noreturn]] void unsupported(const char* what, DType dt) {
  throw Error(std::string("cpu backend: ") + what + " does not support dtype " + dtype_name(dt));
}

// Widening loads, inlined into the loops so that they vectorise (bf16: a 16-bit shift).
inline float widen(float x) { return x; }
inline double widen(double x) { return x; }
inline float widen(bf16_t x) { return bf16_to_float(x); }

// Calls f(S{}) with S the storage type of dt.
template <class F>
void with_storage(const char* what, DType dt, F&& f) {
  switch (dt) {
    case DType::f32: f(float{}); return;
    case DType::f64: f(double{}); return;
    case DType::bf16: f(bf16_t{}); return;
  }
  unsupported(what, dt);
}
template <class F>
void with_state(const char* what, DType dt, F&& f) {
  switch (dt) {
    case DType::f32: f(float{}); return;
    case DType::f64: f(double{}); return;
    default: unsupported(what, dt);
  }
}

// Runs body(lo, hi) over [0, n) in one contiguous range per thread (a multiple of 16
// elements each, so that no two threads share a cache line of a 4-byte array).
template <class Body>
void split(std::int64_t n, int threads, Body&& body) {
  if (threads <= 1 || n < kParallelElements || omp_in_parallel()) {
    body(std::int64_t{0}, n);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    // The team OpenMP actually gave (it may be smaller than asked) shares the range.
    const std::int64_t team = omp_get_num_threads();
    const std::int64_t per = ((n + team - 1) / team + 15) / 16 * 16;
    const std::int64_t lo = std::min<std::int64_t>(n, per * omp_get_thread_num());
    body(lo, std::min(n, lo + per));
  }
}

template <class T>
struct AdamWCoef {
  T b1, b2, ob1, ob2, lr, decay, ibc1, ibc2, eps, gs;
};

template <class T>
AdamWCoef<T> adamw_coef(const AdamWParams& hp) {
  const double bc1 = 1.0 - std::pow(hp.beta1, static_cast<double>(hp.step));
  const double bc2 = 1.0 - std::pow(hp.beta2, static_cast<double>(hp.step));
  return {static_cast<T>(hp.beta1), static_cast<T>(hp.beta2), static_cast<T>(1.0 - hp.beta1),
          static_cast<T>(1.0 - hp.beta2), static_cast<T>(hp.lr), static_cast<T>(hp.lr * hp.weight_decay),
          static_cast<T>(1.0 / bc1), static_cast<T>(1.0 / bc2), static_cast<T>(hp.eps),
          static_cast<T>(hp.grad_scale)};
}

// The update of backend.hpp (AdamWParams), in the state type T, each value read and
// written once. With Zero, each gradient element is zeroed right after it is read (the
// engine's accumulator, ready for the next step without a pass of its own).
template <bool Zero, class T, class G>
MICS_VECTOR_CLONES void adamw_range(T* __restrict p, T* __restrict m, T* __restrict v,
                                    std::conditional_t<Zero, G*, const G*> __restrict g, std::int64_t lo,
                                    std::int64_t hi, const AdamWCoef<T> c) {
#pragma omp simd
  for (std::int64_t i = lo; i < hi; ++i) {
    const T gi = static_cast<T>(widen(g[i])) * c.gs;
    if constexpr (Zero) g[i] = G{};
    const T mi = c.b1 * m[i] + c.ob1 * gi;
    const T vi = c.b2 * v[i] + c.ob2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const T mh = mi * c.ibc1, vh = vi * c.ibc2;
    p[i] = p[i] - c.decay * p[i] - c.lr * mh / (std::sqrt(vh) + c.eps);
  }
}

template <class D, class S>
MICS_VECTOR_CLONES void accumulate_range(D* __restrict d, const S* __restrict s, std::int64_t lo, std::int64_t hi, double alpha) {
#pragma omp simd
  for (std::int64_t i = lo; i < hi; ++i)
    d[i] = static_cast<D>(static_cast<double>(d[i]) + alpha * static_cast<double>(widen(s[i])));
}

// One block's sum in kLanes interleaved partials (lane j takes elements j, j+8, ...),
// combined pairwise: a fixed order that the compiler can keep in vector registers.
template <class S, bool Squares>
MICS_VECTOR_CLONES double block_sum(const S* __restrict x, std::int64_t lo, std::int64_t hi) {
  double acc[kLanes] = {};
  std::int64_t i = lo;
  for (; i + kLanes <= hi; i += kLanes)
    for (int j = 0; j < kLanes; ++j) {
      const double e = static_cast<double>(widen(x[i + j]));
      acc[j] += Squares ? e * e : e;
    }
  for (int j = 0; i < hi; ++i, ++j) {
    const double e = static_cast<double>(widen(x[i]));
    acc[j] += Squares ? e * e : e;
  }
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

template <class S, bool Squares>
double sum_blocks(const S* x, std::int64_t n, int threads) {
  const std::int64_t nb = (n + kReduceBlock - 1) / kReduceBlock;
  std::vector<double> part(static_cast<std::size_t>(nb), 0.0);
  const bool parallel = threads > 1 && n >= kParallelElements && !omp_in_parallel();
#pragma omp parallel for num_threads(threads) schedule(static) if (parallel)
  for (std::int64_t b = 0; b < nb; ++b)
    part[static_cast<std::size_t>(b)] = block_sum<S, Squares>(x, b * kReduceBlock, std::min(n, (b + 1) * kReduceBlock));
  double s = 0.0;
  for (double v : part) s += v;
  return s;
}

// adamw and adamw_zero_grad: GradPtr is const void* or void* (the gradient zeroed).
template <bool Zero, class GradPtr>
void adamw_over(DType dt, void* param, void* m, void* v, DType grad_dt, GradPtr grad, std::int64_t n,
                const AdamWParams& hp, int threads) {
  with_state("adamw", dt, [&](auto t) {
    using T = decltype(t);
    const AdamWCoef<T> c = adamw_coef<T>(hp);
    with_storage("adamw (gradient)", grad_dt, [&](auto gt) {
      using G = decltype(gt);
      using GP = std::conditional_t<Zero, G*, const G*>;
      split(n, threads, [&](std::int64_t lo, std::int64_t hi) {
        adamw_range<Zero, T, G>(static_cast<T*>(param), static_cast<T*>(m), static_cast<T*>(v),
                                static_cast<GP>(grad), lo, hi, c);
      });
    });
  });
}

}  // namespace

void adamw(DType dt, void* param, void* m, void* v, DType grad_dt, const void* grad, std::int64_t n,
           const AdamWParams& hp, int threads) {
  adamw_over<false>(dt, param, m, v, grad_dt, grad, n, hp, threads);
}

void adamw_zero_grad(DType dt, void* param, void* m, void* v, DType grad_dt, void* grad, std::int64_t n,
                     const AdamWParams& hp, int threads) {
  adamw_over<true>(dt, param, m, v, grad_dt, grad, n, hp, threads);
}

void accumulate(DType dst_dt, void* dst, DType src_dt, const void* src, std::int64_t n, double alpha,
                int threads) {
  with_state("accumulate (destination)", dst_dt, [&](auto dt) {
    using D = decltype(dt);
    with_storage("accumulate (source)", src_dt, [&](auto st) {
      using S = decltype(st);
      split(n, threads, [&](std::int64_t lo, std::int64_t hi) {
        accumulate_range(static_cast<D*>(dst), static_cast<const S*>(src), lo, hi, alpha);
      });
    });
  });
}

double blocked_sum(DType dt, const void* x, std::int64_t n, bool squares, int threads) {
  double out = 0.0;
  with_storage("sum", dt, [&](auto st) {
    using S = decltype(st);
    const S* p = static_cast<const S*>(x);
    out = squares ? sum_blocks<S, true>(p, n, threads) : sum_blocks<S, false>(p, n, threads);
  });
  return out;
}

}  // namespace mics::device::cpu
