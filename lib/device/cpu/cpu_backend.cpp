// CPU backend: OpenBLAS for GEMMs, OpenMP for the memory-bound kernels. Computes in f32
// and f64 (bf16 is accepted only by cast/accumulate, so host-side tests of mixed
// precision paths can run here). Every reduction runs over a fixed partition of the data
// and sums the partials in order, so results do not depend on scheduling.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "mics/core/error.hpp"
#include "mics/device/backend.hpp"
#include "bf16_gemm.hpp"
#include "streaming_kernels.hpp"
#include "vector_clones.hpp"
#include "widened.hpp"

namespace mics::device {
namespace {

[[noreturn]] void unsupported(const char* what, DType dt) {
  throw Error(std::string("cpu backend: ") + what + " does not support dtype " +
              dtype_name(dt) + " (this kernel computes in f32 or f64)");
}

// Calls f with a value of the C++ type matching dt (f32 -> float, f64 -> double).
template <class F>
void dispatch(const char* what, DType dt, F&& f) {
  switch (dt) {
    case DType::f32: f(float{}); return;
    case DType::f64: f(double{}); return;
    default: unsupported(what, dt);
  }
}

// Loads/stores of any of the three storage types through double.
inline double load(DType dt, const void* p, std::int64_t i) {
  switch (dt) {
    case DType::f32: return static_cast<double>(static_cast<const float*>(p)[i]);
    case DType::f64: return static_cast<const double*>(p)[i];
    case DType::bf16:
      return static_cast<double>(bf16_to_float(static_cast<const bf16_t*>(p)[i]));
  }
  return 0.0;
}
inline void store(DType dt, void* p, std::int64_t i, double x) {
  switch (dt) {
    case DType::f32: static_cast<float*>(p)[i] = static_cast<float>(x); return;
    case DType::f64: static_cast<double*>(p)[i] = x; return;
    case DType::bf16:
      static_cast<bf16_t*>(p)[i] = float_to_bf16(static_cast<float>(x));
      return;
  }
}

int to_blas_int(std::int64_t v, const char* what) {
  if (v < 0 || v > std::numeric_limits<int>::max())
    throw Error(std::string("cpu backend: gemm dimension ") + what + " = " + std::to_string(v) +
                " does not fit a 32-bit BLAS integer");
  return static_cast<int>(v);
}

// exp for float written as plain arithmetic (Cephes' range reduction and polynomial,
// about 2 ulp) so that the compiler vectorises the loops that call it; libm's expf is a
// scalar call. Inputs are clamped to [-87, 88]: exp(-87) ~ 1.6e-38 stands in for anything
// smaller, which no softmax or GELU here can tell from 0.
inline float exp_vec(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(x/ln2)
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const std::int32_t bits = (static_cast<std::int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}
inline double exp_vec(double x) { return std::exp(x); }
// tanh(u) = 1 - 2/(exp(2u) + 1): absolute error ~1e-7 in float, which is what GELU needs.
inline float tanh_vec(float u) { return 1.0f - 2.0f / (exp_vec(2.0f * u) + 1.0f); }
inline double tanh_vec(double u) { return std::tanh(u); }

// GELU (tanh approximation) and its derivative, one expression each for every caller.
template <class T>
inline T gelu_value(T v) {
  const T k = static_cast<T>(0.79788456080286535588), c3 = static_cast<T>(0.044715);  // sqrt(2/pi)
  return static_cast<T>(0.5) * v * (T(1) + tanh_vec(k * (v + c3 * v * v * v)));
}
template <class T>
inline T gelu_slope(T v) {
  const T k = static_cast<T>(0.79788456080286535588), c3 = static_cast<T>(0.044715);
  const T half = static_cast<T>(0.5), one = 1, three = 3;
  const T th = tanh_vec(k * (v + c3 * v * v * v));
  const T sech2 = one - th * th;
  return half * (one + th) + half * v * sech2 * k * (one + three * c3 * v * v);
}

// The row loops of the memory-bound kernels, as functions so that each gets an AVX2
// clone (vector_clones.hpp). Outputs may alias inputs where backend.hpp allows it (the
// loops are elementwise), hence no __restrict there.
template <class T>
MICS_VECTOR_CLONES void gelu_forward_range(T* o, const T* x, std::int64_t lo, std::int64_t hi) {
#pragma omp simd
  for (std::int64_t i = lo; i < hi; ++i) o[i] = gelu_value(x[i]);
}
template <class T>
MICS_VECTOR_CLONES void gelu_backward_range(T* dx, const T* x, const T* dy, std::int64_t lo, std::int64_t hi) {
#pragma omp simd
  for (std::int64_t i = lo; i < hi; ++i) dx[i] = gelu_slope(x[i]) * dy[i];
}
// Columns [c0, c1) of [N,C] through all rows: dx = gelu'(x) dy, acc[c] += dx (f64, row order).
template <class T>
MICS_VECTOR_CLONES void gelu_backward_columns(T* dx, double* acc, const T* x, const T* dy, std::int64_t N,
                                              std::int64_t C, std::int64_t c0, std::int64_t c1) {
  for (std::int64_t r = 0; r < N; ++r) {
    const std::int64_t o = r * C;
#pragma omp simd
    for (std::int64_t c = c0; c < c1; ++c) {
      const T g = gelu_slope(x[o + c]) * dy[o + c];
      dx[o + c] = g;
      acc[c - c0] += static_cast<double>(g);
    }
  }
}
template <class T>
MICS_VECTOR_CLONES T row_max(const T* row, std::int64_t n) {
  T mx = row[0];
#pragma omp simd reduction(max : mx)
  for (std::int64_t j = 1; j < n; ++j) mx = std::max(mx, row[j]);
  return mx;
}
template <class T>
MICS_VECTOR_CLONES T row_sum_exp(const T* row, std::int64_t n, T shift) {
  T z = 0;
#pragma omp simd reduction(+ : z)
  for (std::int64_t j = 0; j < n; ++j) z += exp_vec(row[j] - shift);
  return z;
}
// out[j] = exp(row[j] - shift) * scale; out may alias row.
template <class T>
MICS_VECTOR_CLONES void row_exp_scaled(T* out, const T* row, std::int64_t n, T shift, T scale) {
#pragma omp simd
  for (std::int64_t j = 0; j < n; ++j) out[j] = exp_vec(row[j] - shift) * scale;
}
// row[j] = exp(row[j] - shift) in place; returns their sum.
template <class T>
MICS_VECTOR_CLONES T row_exp_inplace(T* row, std::int64_t n, T shift) {
  T z = 0;
#pragma omp simd reduction(+ : z)
  for (std::int64_t j = 0; j < n; ++j) {
    row[j] = exp_vec(row[j] - shift);
    z += row[j];
  }
  return z;
}
// Attention rows (see attention_forward). The first n of width scores are live, the rest
// masked and written as 0 so that the GEMMs over the whole block add nothing for them.
// Forward: the scaled scores into exp(s - max) in place, their log-sum-exp into *lse;
// returns 1/sum, which the caller applies to the output row instead of to the width scores.
template <class T>
MICS_VECTOR_CLONES T attn_row_exp(T* row, std::int64_t n, std::int64_t width, T* lse) {
  const T m = row_max(row, n);
  const T z = row_exp_inplace(row, n, m);
  *lse = static_cast<T>(static_cast<double>(m) + std::log(static_cast<double>(z)));
  for (std::int64_t j = n; j < width; ++j) row[j] = 0;
  return T(1) / z;
}
// Backward: the recomputed scores into probabilities with the forward's log-sum-exp.
template <class T>
MICS_VECTOR_CLONES void attn_row_prob(T* row, std::int64_t n, std::int64_t width, T lse) {
#pragma omp simd
  for (std::int64_t j = 0; j < n; ++j) row[j] = exp_vec(row[j] - lse);
  for (std::int64_t j = n; j < width; ++j) row[j] = 0;
}
// Backward: dO_i . O_i, which equals rowsum(P * dP), as a vector reduction (the loop in
// order was one chain of HS dependent adds per row).
template <class T>
MICS_VECTOR_CLONES T row_dot(const T* a, const T* b, std::int64_t n) {
  T d = 0;
#pragma omp simd reduction(+ : d)
  for (std::int64_t j = 0; j < n; ++j) d += a[j] * b[j];
  return d;
}
// Backward: dS = P * (dP - rowsum(P * dP)) * scale in place of dP, the row sum given.
template <class T>
MICS_VECTOR_CLONES void attn_row_dscore(T* dp, const T* p, std::int64_t n, std::int64_t width,
                                        T rowsum, T sc) {
#pragma omp simd
  for (std::int64_t j = 0; j < n; ++j) dp[j] = p[j] * (dp[j] - rowsum) * sc;
  for (std::int64_t j = n; j < width; ++j) dp[j] = 0;
}
// One LayerNorm row: statistics in f64, written out in T.
template <class T>
MICS_VECTOR_CLONES void layernorm_row(T* __restrict o, T* mean, T* rstd, const T* __restrict x,
                                      const T* __restrict w, const T* __restrict b, std::int64_t C, double eps) {
  double m = 0.0;
#pragma omp simd reduction(+ : m)
  for (std::int64_t c = 0; c < C; ++c) m += static_cast<double>(x[c]);
  m /= static_cast<double>(C);
  double v = 0.0;
#pragma omp simd reduction(+ : v)
  for (std::int64_t c = 0; c < C; ++c) {
    const double d = static_cast<double>(x[c]) - m;
    v += d * d;
  }
  v /= static_cast<double>(C);
  const T mt = static_cast<T>(m), st = static_cast<T>(1.0 / std::sqrt(v + eps));
#pragma omp simd
  for (std::int64_t c = 0; c < C; ++c) o[c] = (x[c] - mt) * st * w[c] + b[c];
  *mean = mt;
  *rstd = st;
}
// One LayerNorm row's input gradient, added into dx.
template <class T>
MICS_VECTOR_CLONES void layernorm_backward_row(T* __restrict dx, const T* __restrict dy, const T* __restrict x,
                                               const T* __restrict w, T m, T s, std::int64_t C) {
  double dn_mean = 0.0, dn_norm_mean = 0.0;
#pragma omp simd reduction(+ : dn_mean, dn_norm_mean)
  for (std::int64_t c = 0; c < C; ++c) {
    const T norm = (x[c] - m) * s;
    const T dn = dy[c] * w[c];
    dn_mean += static_cast<double>(dn);
    dn_norm_mean += static_cast<double>(dn * norm);
  }
  const T a = static_cast<T>(dn_mean / static_cast<double>(C));
  const T bb = static_cast<T>(dn_norm_mean / static_cast<double>(C));
#pragma omp simd
  for (std::int64_t c = 0; c < C; ++c) {
    const T norm = (x[c] - m) * s;
    dx[c] += (dy[c] * w[c] - a - norm * bb) * s;
  }
}
// Columns [c0, c1) of LayerNorm's weight and bias gradients over all rows (f64, row order).
template <class T>
MICS_VECTOR_CLONES void layernorm_param_columns(double* __restrict aw, double* __restrict ab, const T* dy, const T* x,
                                                const T* mu, const T* rs, std::int64_t N, std::int64_t C,
                                                std::int64_t c0, std::int64_t c1) {
  for (std::int64_t r = 0; r < N; ++r) {
    const T* xr = x + r * C;
    const T* dyr = dy + r * C;
    const T m = mu[r], s = rs[r];
#pragma omp simd
    for (std::int64_t c = c0; c < c1; ++c) {
      aw[c - c0] += static_cast<double>(dyr[c] * ((xr[c] - m) * s));
      ab[c - c0] += static_cast<double>(dyr[c]);
    }
  }
}
// Column sums of [N,C] over columns [c0, c1), added to acc (f64, row order).
template <class T>
MICS_VECTOR_CLONES void column_sums(double* __restrict acc, const T* d, std::int64_t N, std::int64_t C,
                                    std::int64_t c0, std::int64_t c1) {
  for (std::int64_t r = 0; r < N; ++r) {
    const T* row = d + r * C;
#pragma omp simd
    for (std::int64_t c = c0; c < c1; ++c) acc[c - c0] += static_cast<double>(row[c]);
  }
}

class CpuStream final : public Stream {
public:
  void synchronize() override {}
  void* native() noexcept override { return nullptr; }
};

class CpuEvent final : public Event {
public:
  void record(Stream&) override {}
  void wait(Stream&) override {}
  void synchronize() override {}
  bool ready() override { return true; }
  void* native() noexcept override { return nullptr; }
};

class CpuBackend final : public Backend {
public:
  explicit CpuBackend(int threads) {
    threads_ = threads > 0 ? threads : omp_get_max_threads();
    if (threads_ < 1) threads_ = 1;
    // One thread pool only: OpenBLAS runs single-threaded in whichever thread calls it,
    // and large GEMMs are split over our OpenMP threads (see gemm). Two pools (OpenBLAS's
    // pthreads and OpenMP's) spin against each other on the same cores between calls,
    // which cost a third of the step time on a shared 2-core machine.
    openblas_set_num_threads(1);
  }
  ~CpuBackend() override {
    for (auto& kv : sizes_) std::free(kv.first);
  }

  std::string name() const override { return "cpu"; }
  bool is_host_memory() const override { return true; }
  // bf16 is storage with f32 arithmetic (widened.hpp); its GEMMs run on AMX tiles where
  // the CPU has them (bf16_gemm.hpp), and through f32 otherwise.
  bool supports(DType) const override { return true; }
  int threads() const override { return threads_; }

  // --- memory -------------------------------------------------------------------------
  void* allocate(std::size_t bytes) override {
    if (bytes == 0) return nullptr;
    const std::size_t rounded = (bytes + 255) / 256 * 256;
    void* p = std::aligned_alloc(256, rounded);
    if (p == nullptr)
      throw Error("cpu backend: out of memory allocating " + std::to_string(bytes) + " bytes");
    std::lock_guard<std::mutex> lock(mu_);
    sizes_[p] = bytes;
    in_use_ += bytes;
    peak_ = std::max(peak_, in_use_);
    return p;
  }
  void deallocate(void* p) noexcept override {
    if (p == nullptr) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = sizes_.find(p);
      if (it == sizes_.end()) return;  // not ours: never free foreign memory
      in_use_ -= it->second;
      sizes_.erase(it);
    }
    std::free(p);
  }
  void* allocate_host(std::size_t bytes) override {
    if (bytes == 0) return nullptr;
    void* p = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
    if (p == nullptr)
      throw Error("cpu backend: out of memory allocating " + std::to_string(bytes) +
                  " host bytes");
    return p;
  }
  void deallocate_host(void* p) noexcept override { std::free(p); }
  std::size_t bytes_in_use() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return in_use_;
  }
  std::size_t peak_bytes_in_use() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return peak_;
  }
  void reset_peak() override {
    std::lock_guard<std::mutex> lock(mu_);
    peak_ = in_use_;
  }

  void copy_to_device(void* dst, const void* src, std::size_t bytes, Stream*) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  void copy_to_host(void* dst, const void* src, std::size_t bytes, Stream*) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  void copy(void* dst, const void* src, std::size_t bytes, Stream*) override {
    if (bytes && dst != src) std::memmove(dst, src, bytes);
  }

  // --- streams --------------------------------------------------------------------------
  Stream& compute_stream() override { return stream_; }
  std::unique_ptr<Stream> create_stream() override { return std::make_unique<CpuStream>(); }
  std::unique_ptr<Event> create_event() override { return std::make_unique<CpuEvent>(); }
  void synchronize() override {}

  // --- elementwise ------------------------------------------------------------------------
  void fill(DType dt, void* x, std::int64_t n, double value) override {
    if (dt == DType::bf16) {
      const bf16_t v = float_to_bf16(static_cast<float>(value));
      bf16_t* p = static_cast<bf16_t*>(x);
#pragma omp parallel for num_threads(threads_) schedule(static) if (n > 65536)
      for (std::int64_t i = 0; i < n; ++i) p[i] = v;
      return;
    }
    dispatch("fill", dt, [&](auto tag) {
      using T = decltype(tag);
      T* p = static_cast<T*>(x);
      const T v = static_cast<T>(value);
#pragma omp parallel for num_threads(threads_) schedule(static) if (n > 65536)
      for (std::int64_t i = 0; i < n; ++i) p[i] = v;
    });
  }
  void scale(DType dt, void* x, std::int64_t n, double alpha) override {
    if (dt == DType::bf16) {
      auto w = widened();
      scale(DType::f32, w.inout(x, n), n, alpha);
      return w.commit();
    }
    dispatch("scale", dt, [&](auto tag) {
      using T = decltype(tag);
      T* p = static_cast<T*>(x);
      const T a = static_cast<T>(alpha);
#pragma omp parallel for num_threads(threads_) schedule(static) if (n > 65536)
      for (std::int64_t i = 0; i < n; ++i) p[i] *= a;
    });
  }
  void axpy(DType dt, void* y, const void* x, std::int64_t n, double alpha) override {
    if (dt == DType::bf16) {
      auto w = widened();
      const float* xf = w.in(x, n);
      axpy(DType::f32, w.inout(y, n), xf, n, alpha);
      return w.commit();
    }
    dispatch("axpy", dt, [&](auto tag) {
      using T = decltype(tag);
      T* py = static_cast<T*>(y);
      const T* px = static_cast<const T*>(x);
      const T a = static_cast<T>(alpha);
#pragma omp parallel for num_threads(threads_) schedule(static) if (n > 65536)
      for (std::int64_t i = 0; i < n; ++i) py[i] += a * px[i];
    });
  }
  void add(DType dt, void* out, const void* a, const void* b, std::int64_t n) override {
    if (dt == DType::bf16) {
      auto w = widened();
      const float *af = w.in(a, n), *bf = w.in(b, n);
      add(DType::f32, w.out(out, n), af, bf, n);
      return w.commit();
    }
    dispatch("add", dt, [&](auto tag) {
      using T = decltype(tag);
      T* o = static_cast<T*>(out);
      const T* pa = static_cast<const T*>(a);
      const T* pb = static_cast<const T*>(b);
#pragma omp parallel for num_threads(threads_) schedule(static) if (n > 65536)
      for (std::int64_t i = 0; i < n; ++i) o[i] = pa[i] + pb[i];
    });
  }
  void cast(DType dst_dt, void* dst, DType src_dt, const void* src, std::int64_t n) override {
    if (dst_dt == src_dt) {
      copy(dst, src, static_cast<std::size_t>(n) * dtype_size(dst_dt), nullptr);
      return;
    }
    // The f32 <-> bf16 pairs (the master weights into the bf16 parameters every step) as
    // vector loops; the others element by element.
    if (dst_dt == DType::f32 && src_dt == DType::bf16)
      return cpu::widen_bf16(static_cast<float*>(dst), static_cast<const bf16_t*>(src), n, threads_);
    if (dst_dt == DType::bf16 && src_dt == DType::f32)
      return cpu::narrow_bf16(static_cast<bf16_t*>(dst), static_cast<const float*>(src), n, threads_);
#pragma omp parallel for num_threads(threads_) schedule(static) if (n > 65536)
    for (std::int64_t i = 0; i < n; ++i) store(dst_dt, dst, i, load(src_dt, src, i));
  }
  void accumulate(DType dst_dt, void* dst, DType src_dt, const void* src, std::int64_t n,
                  double alpha) override {
    cpu::accumulate(dst_dt, dst, src_dt, src, n, alpha, threads_);
  }
  double sum_squares(DType dt, const void* x, std::int64_t n) override {
    return cpu::blocked_sum(dt, x, n, true, threads_);
  }
  double sum(DType dt, const void* x, std::int64_t n) override {
    return cpu::blocked_sum(dt, x, n, false, threads_);
  }

  // --- GEMM -------------------------------------------------------------------------------
  // Splits C into row blocks (or column blocks when N is the larger side) over the
  // OpenMP threads, each a single-threaded BLAS call. Each element of C is still one
  // BLAS dot product over all of K, so the split does not change the summation.
  void gemm(DType dt, bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K,
            double alpha, const void* A, std::int64_t lda, const void* B, std::int64_t ldb,
            double beta, void* C, std::int64_t ldc) override {
    const double flops = 2.0 * static_cast<double>(M) * static_cast<double>(N) * static_cast<double>(K);
    if (threads_ == 1 || omp_in_parallel() || flops < 4e6) {
      gemm_serial(dt, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
      return;
    }
    const bool split_rows = M >= N;
    const std::int64_t extent = split_rows ? M : N;
    const std::int64_t parts = std::min<std::int64_t>(threads_, (extent + 15) / 16);
    const std::int64_t step = ((extent + parts - 1) / parts + 15) / 16 * 16;
#pragma omp parallel for num_threads(threads_) schedule(static, 1)
    for (std::int64_t q = 0; q < parts; ++q) {
      const std::int64_t lo = q * step, hi = std::min(extent, lo + step);
      if (lo >= hi) continue;
      if (split_rows) {
        // Rows lo..hi of op(A): row offset when A is [M,K], column offset when [K,M].
        const void* a = offset(A, dt, ta ? lo : lo * lda);
        gemm_serial(dt, ta, tb, hi - lo, N, K, alpha, a, lda, B, ldb, beta,
                    offset(C, dt, lo * ldc), ldc);
      } else {
        // Columns lo..hi of op(B): column offset when B is [K,N], row offset when [N,K].
        const void* b = offset(B, dt, tb ? lo * ldb : lo);
        gemm_serial(dt, ta, tb, M, hi - lo, K, alpha, A, lda, b, ldb, beta,
                    offset(C, dt, lo), ldc);
      }
    }
  }
  void gemm_serial(DType dt, bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K,
                   double alpha, const void* A, std::int64_t lda, const void* B,
                   std::int64_t ldb, double beta, void* C, std::int64_t ldc) {
    if (M == 0 || N == 0) return;
    const int m = to_blas_int(M, "M"), n = to_blas_int(N, "N"), k = to_blas_int(K, "K");
    const int la = to_blas_int(lda, "lda"), lb = to_blas_int(ldb, "ldb"),
              lc = to_blas_int(ldc, "ldc");
    const auto opa = ta ? CblasTrans : CblasNoTrans;
    const auto opb = tb ? CblasTrans : CblasNoTrans;
    if (K == 0) {
      // BLAS would scale C by beta; beta == 0 must not read C.
      if (beta == 0.0) {
        for (std::int64_t i = 0; i < M; ++i)
          for (std::int64_t j = 0; j < N; ++j) store(dt, C, i * ldc + j, 0.0);
      } else {
        for (std::int64_t i = 0; i < M; ++i)
          for (std::int64_t j = 0; j < N; ++j)
            store(dt, C, i * ldc + j, beta * load(dt, C, i * ldc + j));
      }
      return;
    }
    if (dt == DType::bf16) {
      gemm_bf16(ta, tb, M, N, K, static_cast<float>(alpha), static_cast<const bf16_t*>(A), lda,
                static_cast<const bf16_t*>(B), ldb, static_cast<float>(beta), static_cast<bf16_t*>(C), ldc);
      return;
    }
    if (beta == 0.0) {
      // OpenBLAS clears C before a beta = 0 call with a scalar loop (its generic gemm_beta):
      // 12% of the attention time at T = 256, whose GEMMs have K = 64 or write 64 x keys
      // score blocks. Cleared here row by row with memset, and asked for beta = 1, the
      // kernel adds alpha A B to the same zeros: the same bits, fewer cycles.
      const std::size_t row = static_cast<std::size_t>(N) * dtype_size(dt);
      for (std::int64_t i = 0; i < M; ++i) std::memset(offset(C, dt, i * ldc), 0, row);
      beta = 1.0;
    }
    switch (dt) {
      case DType::f32:
        cblas_sgemm(CblasRowMajor, opa, opb, m, n, k, static_cast<float>(alpha),
                    static_cast<const float*>(A), la, static_cast<const float*>(B), lb,
                    static_cast<float>(beta), static_cast<float*>(C), lc);
        return;
      case DType::f64:
        cblas_dgemm(CblasRowMajor, opa, opb, m, n, k, alpha, static_cast<const double*>(A),
                    la, static_cast<const double*>(B), lb, beta, static_cast<double*>(C), lc);
        return;
      default: unsupported("gemm", dt);
    }
  }
  void gemm_strided_batched(DType dt, bool ta, bool tb, std::int64_t M, std::int64_t N,
                            std::int64_t K, double alpha, const void* A, std::int64_t lda,
                            std::int64_t sa, const void* B, std::int64_t ldb, std::int64_t sb,
                            double beta, void* C, std::int64_t ldc, std::int64_t sc,
                            std::int64_t batch) override {
    for (std::int64_t i = 0; i < batch; ++i)
      gemm(dt, ta, tb, M, N, K, alpha, offset(A, dt, i * sa), lda, offset(B, dt, i * sb), ldb,
           beta, offset(C, dt, i * sc), ldc);
  }
  void add_bias(DType dt, void* out, const void* bias, std::int64_t N, std::int64_t C) override {
    if (dt == DType::bf16) {
      auto w = widened();
      const float* b = w.in(bias, C);
      add_bias(DType::f32, w.inout(out, N * C), b, N, C);
      return w.commit();
    }
    dispatch("add_bias", dt, [&](auto tag) {
      using T = decltype(tag);
      T* o = static_cast<T*>(out);
      const T* b = static_cast<const T*>(bias);
#pragma omp parallel for num_threads(threads_) schedule(static) if (N * C > 65536)
      for (std::int64_t r = 0; r < N; ++r) {
        T* row = o + r * C;
        for (std::int64_t c = 0; c < C; ++c) row[c] += b[c];
      }
    });
  }
  // Column sums, parallel over column ranges so each output has one fixed summation order.
  template <class T, class F>
  void column_reduce(std::int64_t N, std::int64_t C, F&& body) {
    const std::int64_t chunk = std::max<std::int64_t>(16, (C + threads_ - 1) / threads_);
    const std::int64_t nchunks = (C + chunk - 1) / chunk;
#pragma omp parallel for num_threads(threads_) schedule(static) if (N * C > 65536)
    for (std::int64_t q = 0; q < nchunks; ++q) body(q * chunk, std::min(C, (q + 1) * chunk));
    (void)N;
  }
  void bias_backward(DType dt, void* dbias, const void* dout, std::int64_t N,
                     std::int64_t C) override {
    if (dt == DType::bf16) {  // each thread's columns, a row segment at a time in cache
      const auto* d = static_cast<const bf16_t*>(dout);
      size_thread_buffers(1, C);
      column_reduce<float>(N, C, [&](std::int64_t c0, std::int64_t c1) {
        float* seg = thread_buffer(1, 0);
        std::vector<double> acc(static_cast<std::size_t>(c1 - c0), 0.0);
        for (std::int64_t r = 0; r < N; ++r) {
          cpu::widen_bf16(seg, d + r * C + c0, c1 - c0, 1);
          column_sums(acc.data(), seg, 1, c1 - c0, 0, c1 - c0);
        }
        add_rounded(static_cast<bf16_t*>(dbias), acc, c0, c1);
      });
      return;
    }
    dispatch("bias_backward", dt, [&](auto tag) {
      using T = decltype(tag);
      T* db = static_cast<T*>(dbias);
      const T* d = static_cast<const T*>(dout);
      column_reduce<T>(N, C, [&](std::int64_t c0, std::int64_t c1) {
        std::vector<double> acc(static_cast<std::size_t>(c1 - c0), 0.0);
        column_sums(acc.data(), d, N, C, c0, c1);
        for (std::int64_t c = c0; c < c1; ++c)
          db[c] += static_cast<T>(acc[static_cast<std::size_t>(c - c0)]);
      });
    });
  }

  // Each thread writes bias (+ residual) into its own block of out and runs its GEMM over
  // the same block with beta = 1: out is written once and read-modified once by the GEMM,
  // where GEMM-then-add_bias had BLAS zero it, write it and read-modify it once more. The
  // blocks are gemm's: rows, or columns when OC is the larger side.
  void linear_forward(DType dt, void* out, const void* inp, const void* weight, const void* bias,
                      const void* residual, std::int64_t N, std::int64_t OC,
                      std::int64_t IC) override {
    if (dt == DType::bf16) return linear_forward_bf16(out, inp, weight, bias, residual, N, OC, IC);
    dispatch("linear_forward", dt, [&](auto tag) {
      using T = decltype(tag);
      T* o = static_cast<T*>(out);
      linear_blocks(N, OC, IC, [&](std::int64_t r0, std::int64_t r1, std::int64_t c0, std::int64_t c1) {
        prefill_bias(o, static_cast<const T*>(bias), static_cast<const T*>(residual), OC, r0, r1, c0, c1);
        gemm_serial(dt, false, true, r1 - r0, c1 - c0, IC, 1.0, offset(inp, dt, r0 * IC), IC,
                    offset(weight, dt, c0 * IC), IC, 1.0, offset(out, dt, r0 * OC + c0), OC);
      });
    });
  }
  // bf16: the bias (+ residual) and the GEMM's sum meet in f32 and are rounded once.
  void linear_forward_bf16(void* out, const void* inp, const void* weight, const void* bias,
                           const void* residual, std::int64_t N, std::int64_t OC, std::int64_t IC) {
    auto w = widened();
    const float* b = w.in(bias, OC);
    const float* res = w.in(residual, N * OC);
    float* o = w.out(out, N * OC);
    const auto* x = static_cast<const bf16_t*>(inp);
    const auto* wt = static_cast<const bf16_t*>(weight);
    linear_blocks(N, OC, IC, [&](std::int64_t r0, std::int64_t r1, std::int64_t c0, std::int64_t c1) {
      prefill_bias(o, b, res, OC, r0, r1, c0, c1);
      gemm_bf16(false, true, r1 - r0, c1 - c0, IC, 1.0f, x + r0 * IC, IC, wt + c0 * IC, IC, 1.0f,
                o + r0 * OC + c0, OC);
    });
    w.commit();
  }
  // Rows r0..r1, columns c0..c1 of out[., OC] = bias (+ residual).
  template <class T>
  static void prefill_bias(T* o, const T* b, const T* res, std::int64_t OC, std::int64_t r0, std::int64_t r1,
                           std::int64_t c0, std::int64_t c1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      T* row = o + r * OC;
      if (res != nullptr) {
        const T* rr = res + r * OC;
#pragma omp simd
        for (std::int64_t c = c0; c < c1; ++c) row[c] = rr[c] + b[c];
      } else {
#pragma omp simd
        for (std::int64_t c = c0; c < c1; ++c) row[c] = b[c];
      }
    }
  }
  // block(r0, r1, c0, c1) over the blocks of a linear layer's [N, OC] output: rows, or
  // columns when OC is the larger side, one block per thread (the whole output when small).
  template <class Block>
  void linear_blocks(std::int64_t N, std::int64_t OC, std::int64_t IC, Block&& block) {
    const double flops = 2.0 * static_cast<double>(N) * static_cast<double>(OC) * static_cast<double>(IC);
    if (threads_ == 1 || omp_in_parallel() || flops < 4e6) {
      block(0, N, 0, OC);
    } else if (N >= OC) {
      parallel_rows(N, [&](std::int64_t lo, std::int64_t hi) { block(lo, hi, 0, OC); });
    } else {
      parallel_rows(OC, [&](std::int64_t lo, std::int64_t hi) { block(0, N, lo, hi); });
    }
  }
  // body(lo, hi) over blocks of [0, N), one per thread, multiples of 16.
  template <class Body>
  void parallel_rows(std::int64_t N, Body&& body) {
    const std::int64_t parts = std::min<std::int64_t>(threads_, (N + 15) / 16);
    const std::int64_t step = ((N + parts - 1) / parts + 15) / 16 * 16;
#pragma omp parallel for num_threads(threads_) schedule(static, 1)
    for (std::int64_t q = 0; q < parts; ++q) {
      const std::int64_t lo = q * step, hi = std::min(N, lo + step);
      if (lo < hi) body(lo, hi);
    }
  }

  // --- embedding ----------------------------------------------------------------------------
  void embedding_forward(DType dt, void* out, const std::int32_t* tokens, const void* wte,
                         const void* wpe, std::int64_t B, std::int64_t T,
                         std::int64_t C) override {
    if (dt == DType::bf16) {
      // Read in bf16 and summed in f32: wte's [V, C] has no V here to widen it whole, and
      // only the batch's rows are touched anyway.
      const auto* te = static_cast<const bf16_t*>(wte);
      const auto* pe = static_cast<const bf16_t*>(wpe);
      auto* o = static_cast<bf16_t*>(out);
#pragma omp parallel for num_threads(threads_) schedule(static) if (B * T * C > 65536)
      for (std::int64_t i = 0; i < B * T; ++i) {
        const bf16_t* a = te + static_cast<std::int64_t>(tokens[i]) * C;
        const bf16_t* p = pe + (i % T) * C;
        for (std::int64_t c = 0; c < C; ++c) o[i * C + c] = float_to_bf16(bf16_to_float(a[c]) + bf16_to_float(p[c]));
      }
      return;
    }
    dispatch("embedding_forward", dt, [&](auto tag) {
      using T_ = decltype(tag);
      T_* o = static_cast<T_*>(out);
      const T_* te = static_cast<const T_*>(wte);
      const T_* pe = static_cast<const T_*>(wpe);
#pragma omp parallel for num_threads(threads_) schedule(static) if (B * T * C > 65536)
      for (std::int64_t i = 0; i < B * T; ++i) {
        const T_* a = te + static_cast<std::int64_t>(tokens[i]) * C;
        const T_* p = pe + (i % T) * C;
        T_* row = o + i * C;
        for (std::int64_t c = 0; c < C; ++c) row[c] = a[c] + p[c];
      }
    });
  }
  void embedding_backward(DType dt, void* dwte, void* dwpe, const void* dout,
                          const std::int32_t* tokens, std::int64_t B, std::int64_t T,
                          std::int64_t C) override {
    if (dt == DType::bf16) return embedding_backward_bf16(dwte, dwpe, dout, tokens, B, T, C);
    dispatch("embedding_backward", dt, [&](auto tag) {
      using T_ = decltype(tag);
      const T_* d = static_cast<const T_*>(dout);
      // Column ranges per thread: every element of dwte/dwpe is summed in row order.
      column_reduce<T_>(B * T, C, [&](std::int64_t c0, std::int64_t c1) {
        if (dwte != nullptr) {
          T_* g = static_cast<T_*>(dwte);
          for (std::int64_t i = 0; i < B * T; ++i) {
            T_* grow = g + static_cast<std::int64_t>(tokens[i]) * C;
            const T_* drow = d + i * C;
            for (std::int64_t c = c0; c < c1; ++c) grow[c] += drow[c];
          }
        }
        if (dwpe != nullptr) {
          T_* g = static_cast<T_*>(dwpe);
          for (std::int64_t i = 0; i < B * T; ++i) {
            T_* grow = g + (i % T) * C;
            const T_* drow = d + i * C;
            for (std::int64_t c = c0; c < c1; ++c) grow[c] += drow[c];
          }
        }
      });
    });
  }

  // --- LayerNorm -----------------------------------------------------------------------------
  void layernorm_forward(DType dt, void* out, void* mean, void* rstd, const void* inp,
                         const void* weight, const void* bias, std::int64_t N, std::int64_t C,
                         double eps) override {
    if (dt == DType::bf16) {  // mean and rstd are f32 (accum_dtype); a row at a time in cache
      auto w = widened();
      const float *g = w.in(weight, C), *b = w.in(bias, C);
      const auto* x = static_cast<const bf16_t*>(inp);
      auto* o = static_cast<bf16_t*>(out);
      auto *mu = static_cast<float*>(mean), *rs = static_cast<float*>(rstd);
      size_thread_buffers(2, C);
#pragma omp parallel for num_threads(threads_) schedule(static) if (N * C > 16384)
      for (std::int64_t r = 0; r < N; ++r) {
        float *xr = thread_buffer(2, 0), *orow = thread_buffer(2, 1);  // layernorm_row: no aliasing
        cpu::widen_bf16(xr, x + r * C, C, 1);
        layernorm_row(orow, mu + r, rs + r, xr, g, b, C, eps);
        cpu::narrow_bf16(o + r * C, orow, C, 1);
      }
      return;
    }
    dispatch("layernorm_forward", dt, [&](auto tag) {
      using T = decltype(tag);
      T* o = static_cast<T*>(out);
      T* mu = static_cast<T*>(mean);
      T* rs = static_cast<T*>(rstd);
      const T* x = static_cast<const T*>(inp);
      const T* w = static_cast<const T*>(weight);
      const T* b = static_cast<const T*>(bias);
#pragma omp parallel for num_threads(threads_) schedule(static) if (N * C > 16384)
      for (std::int64_t r = 0; r < N; ++r) layernorm_row(o + r * C, mu + r, rs + r, x + r * C, w, b, C, eps);
    });
  }
  void layernorm_backward(DType dt, void* dinp, void* dweight, void* dbias, const void* dout,
                          const void* inp, const void* weight, const void* mean,
                          const void* rstd, std::int64_t N, std::int64_t C) override {
    if (dt == DType::bf16)
      return layernorm_backward_bf16(dinp, dweight, dbias, dout, inp, weight, static_cast<const float*>(mean),
                                     static_cast<const float*>(rstd), N, C);
    dispatch("layernorm_backward", dt, [&](auto tag) {
      using T = decltype(tag);
      T* dx = static_cast<T*>(dinp);
      T* dw = static_cast<T*>(dweight);
      T* db = static_cast<T*>(dbias);
      const T* dy = static_cast<const T*>(dout);
      const T* x = static_cast<const T*>(inp);
      const T* w = static_cast<const T*>(weight);
      const T* mu = static_cast<const T*>(mean);
      const T* rs = static_cast<const T*>(rstd);
#pragma omp parallel for num_threads(threads_) schedule(static) if (N * C > 16384)
      for (std::int64_t r = 0; r < N; ++r)
        layernorm_backward_row(dx + r * C, dy + r * C, x + r * C, w, mu[r], rs[r], C);
      column_reduce<T>(N, C, [&](std::int64_t c0, std::int64_t c1) {
        const std::size_t w_ = static_cast<std::size_t>(c1 - c0);
        std::vector<double> aw(w_, 0.0), ab(w_, 0.0);
        layernorm_param_columns(aw.data(), ab.data(), dy, x, mu, rs, N, C, c0, c1);
        for (std::int64_t c = c0; c < c1; ++c) {
          dw[c] += static_cast<T>(aw[static_cast<std::size_t>(c - c0)]);
          db[c] += static_cast<T>(ab[static_cast<std::size_t>(c - c0)]);
        }
      });
    });
  }

  // --- GELU ---------------------------------------------------------------------------------
  void gelu_forward(DType dt, void* out, const void* inp, std::int64_t n) override {
    if (dt == DType::bf16) {
      const auto* x = static_cast<const bf16_t*>(inp);
      auto* o = static_cast<bf16_t*>(out);
      return bf16_chunks(n, 1, [&](float* const* buf, std::int64_t a, std::int64_t m) {
        cpu::widen_bf16(buf[0], x + a, m, 1);
        gelu_forward_range(buf[0], buf[0], 0, m);
        cpu::narrow_bf16(o + a, buf[0], m, 1);
      });
    }
    dispatch("gelu_forward", dt, [&](auto tag) {
      using T = decltype(tag);
      T* o = static_cast<T*>(out);
      const T* x = static_cast<const T*>(inp);
      elementwise(n, [&](std::int64_t lo, std::int64_t hi) { gelu_forward_range(o, x, lo, hi); });
    });
  }
  void gelu_backward(DType dt, void* dinp, const void* inp, const void* dout,
                     std::int64_t n) override {
    if (dt == DType::bf16) {
      const auto *x = static_cast<const bf16_t*>(inp), *dy = static_cast<const bf16_t*>(dout);
      auto* dx = static_cast<bf16_t*>(dinp);
      return bf16_chunks(n, 2, [&](float* const* buf, std::int64_t a, std::int64_t m) {
        cpu::widen_bf16(buf[0], x + a, m, 1);
        cpu::widen_bf16(buf[1], dy + a, m, 1);
        gelu_backward_range(buf[1], buf[0], buf[1], 0, m);
        cpu::narrow_bf16(dx + a, buf[1], m, 1);
      });
    }
    dispatch("gelu_backward", dt, [&](auto tag) {
      using T = decltype(tag);
      T* dx = static_cast<T*>(dinp);
      const T* x = static_cast<const T*>(inp);
      const T* dy = static_cast<const T*>(dout);
      elementwise(n, [&](std::int64_t lo, std::int64_t hi) { gelu_backward_range(dx, x, dy, lo, hi); });
    });
  }

  // The GELU gradient and the bias gradient's column sums in one pass over [N,C]: each
  // thread takes a range of columns through all rows, so every column is summed in row
  // order (the bits of bias_backward after gelu_backward).
  void gelu_backward_bias(DType dt, void* dinp, void* dbias, const void* inp, const void* dout,
                          std::int64_t N, std::int64_t C) override {
    if (dt == DType::bf16) return gelu_backward_bias_bf16(dinp, dbias, inp, dout, N, C);
    dispatch("gelu_backward_bias", dt, [&](auto tag) {
      using T = decltype(tag);
      T* dx = static_cast<T*>(dinp);
      T* db = static_cast<T*>(dbias);
      const T* x = static_cast<const T*>(inp);
      const T* dy = static_cast<const T*>(dout);
      column_reduce<T>(N, C, [&](std::int64_t c0, std::int64_t c1) {
        std::vector<double> acc(static_cast<std::size_t>(c1 - c0), 0.0);
        gelu_backward_columns(dx, acc.data(), x, dy, N, C, c0, c1);
        for (std::int64_t c = c0; c < c1; ++c) db[c] += static_cast<T>(acc[static_cast<std::size_t>(c - c0)]);
      });
    });
  }
  // body(lo, hi) over [0, n) in one contiguous range per thread (multiples of 16).
  template <class Body>
  void elementwise(std::int64_t n, Body&& body) {
    if (threads_ == 1 || n <= 16384 || omp_in_parallel()) {
      body(std::int64_t{0}, n);
      return;
    }
    parallel_rows(n, body);
  }

  // bf16 GELU gradient and bias columns: each thread's columns row by row, widened into
  // two rows of its own, so dx is rounded once and db sums the f32 gradient in row order.
  void gelu_backward_bias_bf16(void* dinp, void* dbias, const void* inp, const void* dout, std::int64_t N,
                               std::int64_t C) {
    auto* dx = static_cast<bf16_t*>(dinp);
    auto* db = static_cast<bf16_t*>(dbias);
    const auto *x = static_cast<const bf16_t*>(inp), *dy = static_cast<const bf16_t*>(dout);
    size_thread_buffers(2, C);
    column_reduce<float>(N, C, [&](std::int64_t c0, std::int64_t c1) {
      const std::int64_t w = c1 - c0;
      float *xb = thread_buffer(2, 0), *gb = thread_buffer(2, 1);
      std::vector<double> acc(static_cast<std::size_t>(w), 0.0);
      for (std::int64_t r = 0; r < N; ++r) {
        cpu::widen_bf16(xb, x + r * C + c0, w, 1);
        cpu::widen_bf16(gb, dy + r * C + c0, w, 1);
        gelu_backward_columns(gb, acc.data(), xb, gb, 1, w, 0, w);
        cpu::narrow_bf16(dx + r * C + c0, gb, w, 1);
      }
      add_rounded(db, acc, c0, c1);
    });
  }
  // dst[c] += acc[c - c0] over [c0, c1), each rounded once into bf16.
  static void add_rounded(bf16_t* dst, const std::vector<double>& acc, std::int64_t c0, std::int64_t c1) {
    for (std::int64_t c = c0; c < c1; ++c)
      dst[c] = float_to_bf16(
          static_cast<float>(static_cast<double>(bf16_to_float(dst[c])) + acc[static_cast<std::size_t>(c - c0)]));
  }
  // bf16 LayerNorm backward: the rows' input gradients, then each thread's columns of the
  // weight and bias gradients, every row widened (whole, or its column segment) into the
  // thread's own f32 buffers; the sums run in the f32 kernel's order.
  void layernorm_backward_bf16(void* dinp, void* dweight, void* dbias, const void* dout, const void* inp,
                               const void* weight, const float* mu, const float* rs, std::int64_t N, std::int64_t C) {
    auto w = widened();
    const float* g = w.in(weight, C);
    const auto *dy = static_cast<const bf16_t*>(dout), *x = static_cast<const bf16_t*>(inp);
    auto* dx = static_cast<bf16_t*>(dinp);
    size_thread_buffers(3, C);
#pragma omp parallel for num_threads(threads_) schedule(static) if (N * C > 16384)
    for (std::int64_t r = 0; r < N; ++r) {
      float *dyr = thread_buffer(3, 0), *xr = thread_buffer(3, 1), *dxr = thread_buffer(3, 2);
      cpu::widen_bf16(dyr, dy + r * C, C, 1);
      cpu::widen_bf16(xr, x + r * C, C, 1);
      cpu::widen_bf16(dxr, dx + r * C, C, 1);
      layernorm_backward_row(dxr, dyr, xr, g, mu[r], rs[r], C);
      cpu::narrow_bf16(dx + r * C, dxr, C, 1);
    }
    column_reduce<float>(N, C, [&](std::int64_t c0, std::int64_t c1) {
      const std::int64_t wd = c1 - c0;
      float *dyb = thread_buffer(3, 0), *xb = thread_buffer(3, 1);
      std::vector<double> aw(static_cast<std::size_t>(wd), 0.0), ab(static_cast<std::size_t>(wd), 0.0);
      for (std::int64_t r = 0; r < N; ++r) {
        cpu::widen_bf16(dyb, dy + r * C + c0, wd, 1);
        cpu::widen_bf16(xb, x + r * C + c0, wd, 1);
        layernorm_param_columns(aw.data(), ab.data(), dyb, xb, mu + r, rs + r, 1, wd, 0, wd);
      }
      add_rounded(static_cast<bf16_t*>(dweight), aw, c0, c1);
      add_rounded(static_cast<bf16_t*>(dbias), ab, c0, c1);
    });
  }
  // body(buf, a, m) over [0, n) in chunks of at most kChunk elements, buf the calling
  // thread's k f32 buffers: a widened chunk stays in L1 instead of a whole f32 copy of the
  // tensor going out to memory and back.
  static constexpr std::int64_t kChunk = 4096;
  template <class Body>
  void bf16_chunks(std::int64_t n, int k, Body&& body) {
    size_thread_buffers(k, kChunk);
    elementwise(n, [&](std::int64_t lo, std::int64_t hi) {
      float* buf[4] = {};
      for (int j = 0; j < k; ++j) buf[j] = thread_buffer(k, j);
      for (std::int64_t a = lo; a < hi; a += kChunk) body(buf, a, std::min(kChunk, hi - a));
    });
  }
  // k buffers of n floats per thread (row_pool_), sized before a parallel region; inside
  // it thread_buffer(k, j) is the calling thread's j-th.
  void size_thread_buffers(int k, std::int64_t n) {
    const auto slots = static_cast<std::size_t>(threads_ * k);
    if (row_pool_.size() < slots) row_pool_.resize(slots);
    for (std::size_t i = 0; i < slots; ++i)
      if (row_pool_[i].size() < static_cast<std::size_t>(n)) row_pool_[i].resize(static_cast<std::size_t>(n));
  }
  float* thread_buffer(int k, int j) {
    return row_pool_[static_cast<std::size_t>(omp_get_thread_num() * k + j)].data();
  }

  // --- attention ------------------------------------------------------------------------------
  // Query rows are taken kQueryBlock at a time against every key they may see (causal: the
  // keys up to the block's last row), so each thread holds a kQueryBlock x T block of
  // scores and nothing of size T x T exists: at T = 1024 and 12 heads that was 48 MiB per
  // layer and sequence kept for the backward pass. A block row holds all of its keys, so
  // its softmax is exact in one pass (no running rescale), and the causal blocks skip the
  // keys after their last row (about half of the score and P V products). `saved` keeps
  // one T per (row, head), the row's log-sum-exp of the scaled scores: the backward pass
  // turns a recomputed score block into probabilities with one exp per entry, without
  // searching the maximum or summing again. The passes over the kQueryBlock x keys blocks
  // are what costs beside the GEMMs, so each block is touched as few times as possible: the
  // forward scales the kQueryBlock x HS output by 1/z instead of normalising P, and the
  // backward takes rowsum(P * dP) as dO . O (HS terms) instead of a pass over the block.
  // 64 rather than 128: 128-row blocks run the block GEMMs' shapes faster alone (single
  // thread, keys 1024: 45 -> 61 GF/s for the scores), but the backward's two blocks then
  // outgrow a 512 KiB L2 at T = 1024 and T = 256 executes 20% more masked scores; in the
  // kernels, neither T resolved a gain on the shared machine (validation/BENCHMARKS.md).
  // Nor at short T: at T = 256 a whole head as one 256-row block (its scores fit L2) ran
  // 20-55% slower than 64-row blocks and 128 rows 4-22% slower (they execute 60% / 20%
  // more masked scores, and the time goes per score entry: exp passes, clearing, BLAS
  // packing, more than the GEMM shape); 32 and 48 rows were slower in both rounds, 16 in
  // one of two (validation/BENCHMARKS.md, "Attention at T = 256").
  static constexpr std::int64_t kQueryBlock = 64;
  std::size_t attention_saved_bytes(DType dt, const AttentionShape& s) const override {
    // f64 keeps the log-sum-exp in f64: a float one would leave P off by 1e-7 relative.
    const std::size_t each = dt == DType::f64 ? sizeof(double) : sizeof(float);
    return each * static_cast<std::size_t>(s.B * s.NH * s.T);
  }

  void attention_forward(DType dt, const AttentionShape& s, void* out, void* saved,
                         const void* qkv) override {
    if (dt == DType::bf16)  // saved holds f32 log-sum-exps (attention_saved_bytes)
      return attention_forward_bf16(s, static_cast<bf16_t*>(out), static_cast<float*>(saved),
                                    static_cast<const bf16_t*>(qkv));
    dispatch("attention_forward", dt, [&](auto tag) {
      using T = decltype(tag);
      const std::int64_t T_ = s.T, C = s.NH * s.HS, C3 = 3 * C;
      const std::int64_t nq = (T_ + kQueryBlock - 1) / kQueryBlock;
      const double scale = 1.0 / std::sqrt(static_cast<double>(s.HS));
      std::vector<T>& work = scratch<T>(static_cast<std::size_t>(threads_ * kQueryBlock * T_));
#pragma omp parallel for num_threads(threads_) schedule(dynamic, 1)
      for (std::int64_t task = 0; task < s.B * s.NH * nq; ++task) {
        const std::int64_t bh = task / nq, b = bh / s.NH, h = bh % s.NH;
        const std::int64_t q0 = (task % nq) * kQueryBlock, rows = std::min(kQueryBlock, T_ - q0);
        const std::int64_t keys = s.causal ? q0 + rows : T_;
        T* S = work.data() + static_cast<std::int64_t>(omp_get_thread_num()) * kQueryBlock * T_;
        const T* q = static_cast<const T*>(qkv) + b * T_ * C3 + h * s.HS;
        T* o = static_cast<T*>(out) + (b * T_ + q0) * C + h * s.HS;
        T* lse = static_cast<T*>(saved) + bh * T_ + q0;
        T inv_z[kQueryBlock];
        gemm(dt, false, true, rows, keys, s.HS, scale, q + q0 * C3, C3, q + C, C3, 0.0, S, keys);
        for (std::int64_t i = 0; i < rows; ++i)
          inv_z[i] = attn_row_exp(S + i * keys, causal_width(s.causal, q0, i, keys), keys, &lse[i]);
        gemm(dt, false, false, rows, s.HS, keys, 1.0, S, keys, q + 2 * C, C3, 0.0, o, C);
        for (std::int64_t i = 0; i < rows; ++i)
          for (std::int64_t d = 0; d < s.HS; ++d) o[i * C + d] *= inv_z[i];
      }
    });
  }
  // Copies one head's T x HS columns (row stride ld) into a contiguous panel. The block
  // GEMMs are small (HS = 64) and BLAS repacks their operands on every call; read from a
  // panel, those repacks touch T x HS values in whole cache lines instead of 64-value
  // pieces of 3C-wide rows (single-thread sgemm on the block shapes: 5-15% faster).
  template <class T>
  static void gather_head(T* panel, const T* src, std::int64_t T_, std::int64_t HS, std::int64_t ld) {
    for (std::int64_t t = 0; t < T_; ++t)
      std::memcpy(panel + t * HS, src + t * ld, static_cast<std::size_t>(HS) * sizeof(T));
  }
  // How many keys row i of a block starting at query q0 sees (the rest are masked).
  static std::int64_t causal_width(bool causal, std::int64_t q0, std::int64_t i, std::int64_t keys) {
    return causal ? std::min(keys, q0 + i + 1) : keys;
  }
  // Per (b, h), its query blocks in order: dK and dV gather the blocks' contributions in a
  // fixed order, so the result does not depend on the threads.
  void attention_backward(DType dt, const AttentionShape& s, void* dqkv, const void* dout,
                          const void* qkv, const void* out, const void* saved) override {
    if (dt == DType::bf16) return attention_backward_bf16(s, dqkv, dout, qkv, out, saved);
    dispatch("attention_backward", dt, [&](auto tag) {
      using T = decltype(tag);
      const double scale = 1.0 / std::sqrt(static_cast<double>(s.HS));
      over_heads<T>(s, 2 * kQueryBlock * s.T + 3 * s.T * s.HS,
                    [&](T* mine, std::int64_t qo, std::int64_t oo, std::int64_t bh) {
                      attention_backward_head<T>(s, scale, mine, static_cast<const T*>(qkv) + qo,
                                                 static_cast<T*>(dqkv) + qo, static_cast<const T*>(dout) + oo,
                                                 static_cast<const T*>(out) + oo,
                                                 static_cast<const T*>(saved) + bh * s.T);
                    });
    });
  }
  // One (b, h): qkv/dq point at its query columns of qkv/dqkv, dO/O at its columns of
  // dout/out; `work` holds the two kQueryBlock x T blocks and the Q, K, V panels.
  template <class T>
  void attention_backward_head(const AttentionShape& s, double scale, T* work, const T* qkv, T* dq,
                               const T* dO, const T* O, const T* lse_all) {
    const DType dt = sizeof(T) == sizeof(double) ? DType::f64 : DType::f32;
    const std::int64_t T_ = s.T, C = s.NH * s.HS, C3 = 3 * C, HS = s.HS;
    T* P = work;
    T* dP = P + kQueryBlock * T_;
    T* q = dP + kQueryBlock * T_;
    T* k = q + T_ * HS;
    T* v = k + T_ * HS;
    gather_head(q, qkv, T_, HS, C3);
    gather_head(k, qkv + C, T_, HS, C3);
    gather_head(v, qkv + 2 * C, T_, HS, C3);
    T* dk = dq + C;
    T* dv = dq + 2 * C;
    // The last query block sees every key (causal or not), so going from the last block to
    // the first lets that block's GEMMs write dK and dV with beta = 0 (gemm_serial clears
    // the rows it writes, as for any beta = 0 call) instead of clearing all T x HS columns
    // beforehand, and the later blocks add in a fixed order.
    const std::int64_t nq = (T_ + kQueryBlock - 1) / kQueryBlock;
    for (std::int64_t qb = nq - 1; qb >= 0; --qb) {
      const std::int64_t q0 = qb * kQueryBlock, rows = std::min(kQueryBlock, T_ - q0);
      const std::int64_t keys = s.causal ? q0 + rows : T_;
      const double acc = qb == nq - 1 ? 0.0 : 1.0;
      gemm_serial(dt, false, true, rows, keys, HS, scale, q + q0 * HS, HS, k, HS, 0.0, P, keys);
      for (std::int64_t i = 0; i < rows; ++i)
        attn_row_prob(P + i * keys, causal_width(s.causal, q0, i, keys), keys, lse_all[q0 + i]);
      // dV += P^T dO ; dP = dO V^T ; dS ; dQ = dS K ; dK += dS^T Q
      gemm_serial(dt, true, false, keys, HS, rows, 1.0, P, keys, dO + q0 * C, C, acc, dv, C3);
      // rowsum(P * dP) = sum_j P_ij (dO_i . v_j) = dO_i . O_i: HS terms instead of keys.
      // All rows of the block in one loop: the O rows are read here only, and back to back
      // their cache misses overlap instead of waiting behind each row's pass over keys.
      T rowsum[kQueryBlock];
      for (std::int64_t i = 0; i < rows; ++i) rowsum[i] = row_dot(dO + (q0 + i) * C, O + (q0 + i) * C, HS);
      gemm_serial(dt, false, true, rows, keys, HS, 1.0, dO + q0 * C, C, v, HS, 0.0, dP, keys);
      for (std::int64_t i = 0; i < rows; ++i)
        attn_row_dscore(dP + i * keys, P + i * keys, causal_width(s.causal, q0, i, keys), keys,
                        rowsum[i], static_cast<T>(scale));
      gemm_serial(dt, false, false, rows, HS, keys, 1.0, dP, keys, k, HS, 0.0, dq + q0 * C3, C3);
      gemm_serial(dt, true, false, keys, HS, rows, 1.0, dP, keys, q + q0 * HS, HS, acc, dk, C3);
    }
  }

  // bf16 attention: the forward and backward passes above with their GEMMs on bf16
  // operands (gemm_bf16: AMX tiles where the CPU has them), the row passes in f32. The
  // probabilities and dS blocks are rounded to bf16 for the GEMMs that take them as an
  // operand (as GPU flash attention does); dK and dV add up over the query blocks in f32
  // and are rounded once at the end, so a long sequence does not round them per block.
  void attention_forward_bf16(const AttentionShape& s, bf16_t* out, float* saved, const bf16_t* qkv) {
    const std::int64_t T_ = s.T, C = s.NH * s.HS, C3 = 3 * C, HS = s.HS;
    const std::int64_t nq = (T_ + kQueryBlock - 1) / kQueryBlock;
    const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(HS)));
    const std::int64_t per_thread = kQueryBlock * T_ + (kQueryBlock * T_ + 1) / 2 + kQueryBlock * HS;
    std::vector<float>& work = scratch<float>(static_cast<std::size_t>(threads_ * per_thread));
#pragma omp parallel for num_threads(threads_) schedule(dynamic, 1)
    for (std::int64_t task = 0; task < s.B * s.NH * nq; ++task) {
      const std::int64_t bh = task / nq, b = bh / s.NH, h = bh % s.NH;
      const std::int64_t q0 = (task % nq) * kQueryBlock, rows = std::min(kQueryBlock, T_ - q0);
      const std::int64_t keys = s.causal ? q0 + rows : T_;
      float* S = work.data() + static_cast<std::int64_t>(omp_get_thread_num()) * per_thread;
      auto* P = reinterpret_cast<bf16_t*>(S + kQueryBlock * T_);
      float* O = S + kQueryBlock * T_ + (kQueryBlock * T_ + 1) / 2;
      const bf16_t* q = qkv + b * T_ * C3 + h * HS;
      float* lse = saved + bh * T_ + q0;
      float inv_z[kQueryBlock];
      gemm_bf16(false, true, rows, keys, HS, scale, q + q0 * C3, C3, q + C, C3, 0.0f, S, keys);
      for (std::int64_t i = 0; i < rows; ++i)
        inv_z[i] = attn_row_exp(S + i * keys, causal_width(s.causal, q0, i, keys), keys, &lse[i]);
      cpu::narrow_bf16(P, S, rows * keys, 1);
      gemm_bf16(false, false, rows, HS, keys, 1.0f, P, keys, q + 2 * C, C3, 0.0f, O, HS);
      for (std::int64_t i = 0; i < rows; ++i) {
        for (std::int64_t d = 0; d < HS; ++d) O[i * HS + d] *= inv_z[i];
        cpu::narrow_bf16(out + (b * T_ + q0 + i) * C + h * HS, O + i * HS, HS, 1);
      }
    }
  }
  void attention_backward_bf16(const AttentionShape& s, void* dqkv, const void* dout, const void* qkv,
                               const void* out, const void* saved) {
    const std::int64_t T_ = s.T, HS = s.HS;
    // Two f32 blocks (P, dP), two bf16 blocks (P, dS), three bf16 panels, dK and dV in f32.
    const std::int64_t per_thread = 3 * kQueryBlock * T_ + (3 * T_ * HS + 1) / 2 + 2 * T_ * HS;
    over_heads<float>(s, per_thread, [&](float* mine, std::int64_t qo, std::int64_t oo, std::int64_t bh) {
      attention_backward_head_bf16(s, mine, static_cast<const bf16_t*>(qkv) + qo, static_cast<bf16_t*>(dqkv) + qo,
                                   static_cast<const bf16_t*>(dout) + oo, static_cast<const bf16_t*>(out) + oo,
                                   static_cast<const float*>(saved) + bh * T_);
    });
  }
  // body(work, qkv offset, out offset, bh) for every (sequence, head) pair bh, spread over
  // the threads, each with its own per_thread elements of scratch.
  template <class T, class Body>
  void over_heads(const AttentionShape& s, std::int64_t per_thread, Body&& body) {
    const std::int64_t C = s.NH * s.HS;
    std::vector<T>& work = scratch<T>(static_cast<std::size_t>(threads_ * per_thread));
#pragma omp parallel for num_threads(threads_) schedule(dynamic, 1)
    for (std::int64_t bh = 0; bh < s.B * s.NH; ++bh) {
      const std::int64_t b = bh / s.NH, h = bh % s.NH;
      T* mine = work.data() + static_cast<std::int64_t>(omp_get_thread_num()) * per_thread;
      body(mine, b * s.T * 3 * C + h * s.HS, b * s.T * C + h * s.HS, bh);
    }
  }
  void attention_backward_head_bf16(const AttentionShape& s, float* work, const bf16_t* qkv, bf16_t* dq,
                                    const bf16_t* dO, const bf16_t* O, const float* lse_all) {
    const std::int64_t T_ = s.T, C = s.NH * s.HS, C3 = 3 * C, HS = s.HS;
    const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(HS)));
    float* P = work;
    float* dP = P + kQueryBlock * T_;
    auto* Pb = reinterpret_cast<bf16_t*>(dP + kQueryBlock * T_);
    bf16_t* dSb = Pb + kQueryBlock * T_;
    bf16_t* q = dSb + kQueryBlock * T_;
    bf16_t* k = q + T_ * HS;
    bf16_t* v = k + T_ * HS;
    float* dk = dP + 2 * kQueryBlock * T_ + (3 * T_ * HS + 1) / 2;
    float* dv = dk + T_ * HS;
    gather_head(q, qkv, T_, HS, C3);
    gather_head(k, qkv + C, T_, HS, C3);
    gather_head(v, qkv + 2 * C, T_, HS, C3);
    const std::int64_t nq = (T_ + kQueryBlock - 1) / kQueryBlock;
    for (std::int64_t qb = nq - 1; qb >= 0; --qb) {  // the last block sees every key: beta 0 there
      const std::int64_t q0 = qb * kQueryBlock, rows = std::min(kQueryBlock, T_ - q0);
      const std::int64_t keys = s.causal ? q0 + rows : T_;
      const float acc = qb == nq - 1 ? 0.0f : 1.0f;
      gemm_bf16(false, true, rows, keys, HS, scale, q + q0 * HS, HS, k, HS, 0.0f, P, keys);
      for (std::int64_t i = 0; i < rows; ++i)
        attn_row_prob(P + i * keys, causal_width(s.causal, q0, i, keys), keys, lse_all[q0 + i]);
      cpu::narrow_bf16(Pb, P, rows * keys, 1);
      gemm_bf16(true, false, keys, HS, rows, 1.0f, Pb, keys, dO + q0 * C, C, acc, dv, HS);
      float rowsum[kQueryBlock];
      for (std::int64_t i = 0; i < rows; ++i) {
        float d = 0;
        for (std::int64_t j = 0; j < HS; ++j) d += bf16_to_float(dO[(q0 + i) * C + j]) * bf16_to_float(O[(q0 + i) * C + j]);
        rowsum[i] = d;
      }
      gemm_bf16(false, true, rows, keys, HS, 1.0f, dO + q0 * C, C, v, HS, 0.0f, dP, keys);
      for (std::int64_t i = 0; i < rows; ++i)
        attn_row_dscore(dP + i * keys, P + i * keys, causal_width(s.causal, q0, i, keys), keys, rowsum[i], scale);
      cpu::narrow_bf16(dSb, dP, rows * keys, 1);
      gemm_bf16(false, false, rows, HS, keys, 1.0f, dSb, keys, k, HS, 0.0f, dq + q0 * C3, C3);
      gemm_bf16(true, false, keys, HS, rows, 1.0f, dSb, keys, q + q0 * HS, HS, acc, dk, HS);
    }
    for (std::int64_t t = 0; t < T_; ++t) {
      cpu::narrow_bf16(dq + C + t * C3, dk + t * HS, HS, 1);
      cpu::narrow_bf16(dq + 2 * C + t * C3, dv + t * HS, HS, 1);
    }
  }

  // --- cross-entropy ------------------------------------------------------------------------
  void cross_entropy_forward(DType dt, void* losses, const void* logits,
                             const std::int32_t* targets, std::int64_t N, std::int64_t V,
                             std::int64_t ld) override {
    if (dt == DType::bf16) return ce_forward_bf16(static_cast<float*>(losses), nullptr, logits, targets, N, V, ld);
    dispatch("cross_entropy_forward", dt, [&](auto tag) {
      using T = decltype(tag);
      ce_forward_rows<T>(static_cast<T*>(losses), nullptr, static_cast<const T*>(logits), targets, N, V, ld);
    });
  }
  void cross_entropy_backward(DType dt, void* dlogits, const void* logits,
                              const std::int32_t* targets, std::int64_t N, std::int64_t V,
                              std::int64_t ld, double grad_scale) override {
    if (dt == DType::bf16) {
      const auto sc = static_cast<float>(grad_scale);
      return ce_backward_bf16(dlogits, logits, targets, N, V, ld, sc, [&](float* row, std::int64_t) {
        const float mx = row_max(row, V);
        row_exp_scaled(row, row, V, mx, static_cast<float>(grad_scale / static_cast<double>(row_sum_exp(row, V, mx))));
      });
    }
    dispatch("cross_entropy_backward", dt, [&](auto tag) {
      using T = decltype(tag);
      ce_backward_rows<T>(static_cast<T*>(dlogits), static_cast<const T*>(logits), targets, N, V, ld, grad_scale,
                          [&](T* drow, const T* row, std::int64_t) {
                            const T mx = row_max(row, V);
                            const T z = row_sum_exp(row, V, mx);
                            row_exp_scaled(drow, row, V, mx, static_cast<T>(grad_scale / static_cast<double>(z)));
                          });
    });
  }

  // Forward as cross_entropy_forward, also saving each counted row's log-sum-exp, so that
  // the backward pass is one pass over the logits with one exp per element (instead of a
  // search for the maximum, a sum of exponentials and the exponentials again).
  void cross_entropy_forward_lse(DType dt, void* losses, void* lse, const void* logits,
                                 const std::int32_t* targets, std::int64_t N, std::int64_t V,
                                 std::int64_t ld) override {
    if (dt == DType::bf16)
      return ce_forward_bf16(static_cast<float*>(losses), static_cast<float*>(lse), logits, targets, N, V, ld);
    dispatch("cross_entropy_forward_lse", dt, [&](auto tag) {
      using T = decltype(tag);
      ce_forward_rows<T>(static_cast<T*>(losses), static_cast<T*>(lse), static_cast<const T*>(logits), targets, N,
                         V, ld);
    });
  }
  void cross_entropy_backward_lse(DType dt, void* dlogits, const void* logits, const void* lse,
                                  const std::int32_t* targets, std::int64_t N, std::int64_t V,
                                  std::int64_t ld, double grad_scale) override {
    if (dt == DType::bf16) {
      const float* ls = static_cast<const float*>(lse);
      const auto sc = static_cast<float>(grad_scale);
      return ce_backward_bf16(dlogits, logits, targets, N, V, ld, sc,
                              [&](float* row, std::int64_t r) { row_exp_scaled(row, row, V, ls[r], sc); });
    }
    dispatch("cross_entropy_backward_lse", dt, [&](auto tag) {
      using T = decltype(tag);
      const T* ls = static_cast<const T*>(lse);
      const T sc = static_cast<T>(grad_scale);
      ce_backward_rows<T>(static_cast<T*>(dlogits), static_cast<const T*>(logits), targets, N, V, ld, grad_scale,
                          [&](T* drow, const T* row, std::int64_t r) { row_exp_scaled(drow, row, V, ls[r], sc); });
    });
  }
  // Each row's loss, log(sum exp) - its target's logit (0 for rows without a target), and
  // when lse is given the row's log-sum-exp there too.
  template <class T>
  void ce_forward_rows(T* out, T* lse, const T* x, const std::int32_t* targets, std::int64_t N, std::int64_t V,
                       std::int64_t ld) {
#pragma omp parallel for num_threads(threads_) schedule(static) if (N * V > 16384)
    for (std::int64_t r = 0; r < N; ++r) ce_row(out, lse, x + r * ld, targets, r, V);
  }
  // Row r's loss and, when lse is given, its log-sum-exp (0 and 0 for a row without target).
  template <class T>
  static void ce_row(T* out, T* lse, const T* row, const std::int32_t* targets, std::int64_t r, std::int64_t V) {
    double l = 0.0, loss = 0.0;
    if (targets[r] >= 0) {
      const T mx = row_max(row, V);
      l = std::log(static_cast<double>(row_sum_exp(row, V, mx))) + static_cast<double>(mx);
      loss = l - static_cast<double>(row[targets[r]]);
    }
    out[r] = static_cast<T>(loss);
    if (lse) lse[r] = static_cast<T>(l);
  }
  // bf16 logits: each row is widened into its thread's f32 row, which stays in cache, and
  // the f32 row code runs on it; a gradient row is rounded back once. Widening the whole
  // [N, V] block instead cost a quarter of a step's time at T = 256 (a pass over 200 MB
  // each way). Losses and lse are f32.
  void ce_forward_bf16(float* out, float* lse, const void* logits, const std::int32_t* targets, std::int64_t N,
                       std::int64_t V, std::int64_t ld) {
    const auto* x = static_cast<const bf16_t*>(logits);
    over_bf16_rows(N, V, [&](float* row, std::int64_t r) {
      if (targets[r] >= 0) cpu::widen_bf16(row, x + r * ld, V, 1);
      ce_row(out, lse, row, targets, r, V);
    });
  }
  template <class ExpRow>
  void ce_backward_bf16(void* dlogits, const void* logits, const std::int32_t* targets, std::int64_t N,
                        std::int64_t V, std::int64_t ld, float sc, ExpRow exp_row) {
    const auto* x = static_cast<const bf16_t*>(logits);
    auto* d = static_cast<bf16_t*>(dlogits);
    over_bf16_rows(N, V, [&](float* row, std::int64_t r) {
      if (targets[r] < 0) {
        std::fill(row, row + V, 0.0f);
      } else {
        cpu::widen_bf16(row, x + r * ld, V, 1);
        exp_row(row, r);
        row[targets[r]] -= sc;
      }
      cpu::narrow_bf16(d + r * ld, row, V, 1);
    });
  }
  // body(row, r) for each of N rows, with `row` a V-float buffer of the calling thread.
  template <class Body>
  void over_bf16_rows(std::int64_t N, std::int64_t V, Body&& body) {
    size_thread_buffers(1, V);
#pragma omp parallel for num_threads(threads_) schedule(static) if (N * V > 16384)
    for (std::int64_t r = 0; r < N; ++r) body(thread_buffer(1, 0), r);
  }
  // The gradient rows: softmax(row) * grad_scale, written by exp_row(drow, row, r), less
  // grad_scale at the target; rows without a target are zero.
  template <class T, class ExpRow>
  void ce_backward_rows(T* d, const T* x, const std::int32_t* targets, std::int64_t N, std::int64_t V,
                        std::int64_t ld, double grad_scale, ExpRow exp_row) {
    const T sc = static_cast<T>(grad_scale);
#pragma omp parallel for num_threads(threads_) schedule(static) if (N * V > 16384)
    for (std::int64_t r = 0; r < N; ++r) {
      T* drow = d + r * ld;
      if (targets[r] < 0) {
        for (std::int64_t j = 0; j < V; ++j) drow[j] = 0;
        continue;
      }
      exp_row(drow, x + r * ld, r);
      drow[targets[r]] -= sc;
    }
  }

  // --- AdamW --------------------------------------------------------------------------------
  void adamw(DType dt, void* param, void* m, void* v, DType grad_dt, const void* grad,
             std::int64_t n, const AdamWParams& hp) override {
    cpu::adamw(dt, param, m, v, grad_dt, grad, n, hp, threads_);
  }
  void adamw_zero_grad(DType dt, void* param, void* m, void* v, DType grad_dt, void* grad,
                       std::int64_t n, const AdamWParams& hp) override {
    cpu::adamw_zero_grad(dt, param, m, v, grad_dt, grad, n, hp, threads_);
  }

private:
  cpu::Widened widened() { return cpu::Widened(widen_pool_, threads_); }
  // bf16: each touched row of dwte and dwpe gets its rows of dout summed in f32, in row
  // order, and rounded once as it is added (a token seen many times is not rounded per use).
  void embedding_backward_bf16(void* dwte, void* dwpe, const void* dout, const std::int32_t* tokens,
                               std::int64_t B, std::int64_t T, std::int64_t C) {
    const std::int64_t n = B * T;
    std::vector<std::int64_t> order(static_cast<std::size_t>(n));
    std::iota(order.begin(), order.end(), std::int64_t{0});
    std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) { return tokens[a] < tokens[b]; });
    const auto* d = static_cast<const bf16_t*>(dout);
    column_reduce<float>(n, C, [&](std::int64_t c0, std::int64_t c1) {
      std::vector<float> acc(static_cast<std::size_t>(c1 - c0));
      auto add_row = [&](std::int64_t i) {
        for (std::int64_t c = c0; c < c1; ++c) acc[static_cast<std::size_t>(c - c0)] += bf16_to_float(d[i * C + c]);
      };
      auto flush = [&](bf16_t* row) {
        for (std::int64_t c = c0; c < c1; ++c)
          row[c] = float_to_bf16(bf16_to_float(row[c]) + acc[static_cast<std::size_t>(c - c0)]);
        std::fill(acc.begin(), acc.end(), 0.0f);
      };
      for (std::int64_t k = 0; dwte != nullptr && k < n;) {
        const std::int32_t tok = tokens[order[static_cast<std::size_t>(k)]];
        for (; k < n && tokens[order[static_cast<std::size_t>(k)]] == tok; ++k) add_row(order[static_cast<std::size_t>(k)]);
        flush(static_cast<bf16_t*>(dwte) + static_cast<std::int64_t>(tok) * C);
      }
      for (std::int64_t t = 0; dwpe != nullptr && t < T; ++t) {
        for (std::int64_t b = 0; b < B; ++b) add_row(b * T + t);
        flush(static_cast<bf16_t*>(dwpe) + t * C);
      }
    });
  }
  template <class T>
  std::vector<T>& scratch(std::size_t n) {
    std::vector<T>& s = scratch_impl(static_cast<T*>(nullptr));
    if (s.size() < n) s.resize(n);
    return s;
  }
  std::vector<float>& scratch_impl(float*) { return scratch_f_; }
  std::vector<double>& scratch_impl(double*) { return scratch_d_; }

  int threads_ = 1;
  CpuStream stream_;
  mutable std::mutex mu_;
  std::unordered_map<void*, std::size_t> sizes_;
  std::size_t in_use_ = 0, peak_ = 0;
  std::vector<float> scratch_f_;
  std::vector<double> scratch_d_;
  std::vector<std::vector<float>> widen_pool_;  // bf16 kernels' f32 views (widened.hpp)
  std::vector<std::vector<float>> row_pool_;    // bf16 kernels' per-thread rows and chunks
};

}  // namespace

std::string cpu_bf16_gemm_path() { return bf16_gemm_path_name(bf16_gemm_path()); }

std::string cpu_blas_kernels() {
  const char* core = openblas_get_corename();
  std::string out = std::string("OpenBLAS ") + (core != nullptr ? core : "?") + " kernels";
  if (const char* pin = std::getenv("OPENBLAS_CORETYPE"); pin != nullptr && *pin != '\0')
    out += std::string(" (OPENBLAS_CORETYPE=") + pin + ")";
  return out;
}

std::unique_ptr<Backend> make_cpu_backend(int threads) {
  bf16_gemm_path();  // a bad MICS_BF16_GEMM is a usage error now, not inside a kernel
  return std::make_unique<CpuBackend>(threads);
}

}  // namespace mics::device
