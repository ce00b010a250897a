#pragma once
// Helpers for test bodies written once and run on every backend this build and machine
// offer (device::available_backends(): "cpu" always, "cuda" when built and a GPU is
// present), in every compute type the backend supports, against float64 references.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "mics/device/backend.hpp"

namespace mics::test {

using device::Backend;
using device::DType;

// Threads for CPU backends made by for_each_backend: 0 = OMP_NUM_THREADS (1 under ctest).
// The kernel tests set 2, so that the threaded paths are the ones checked.
inline int& test_threads() {
  static int t = 0;
  return t;
}

// Runs body(backend) for each available backend, inside a Boost.Test context naming it.
inline void for_each_backend(const std::function<void(Backend&)>& body, int threads = -1) {
  if (threads < 0) threads = test_threads();
  for (const auto& name : device::available_backends()) {
    BOOST_TEST_CONTEXT("backend " << name) {
      auto be = device::make_backend(name, threads);
      body(*be);
    }
  }
}

// Compute types to test on a backend: every one of f64, f32, bf16 it supports.
inline std::vector<DType> compute_dtypes(const Backend& be) {
  std::vector<DType> out;
  for (DType dt : {DType::f64, DType::f32, DType::bf16})
    if (be.supports(dt)) out.push_back(dt);
  return out;
}

// Relative tolerance for a result computed in dt against a float64 reference, for
// kernels with short reductions (a few hundred terms). bf16 keeps 8 bits of mantissa.
inline double tolerance(DType dt) {
  switch (dt) {
    case DType::f64: return 1e-11;
    case DType::f32: return 2e-5;
    case DType::bf16: return 3e-2;
  }
  return 0;
}

inline double host_load(DType dt, const void* p, std::size_t i) {
  switch (dt) {
    case DType::f32: return static_cast<double>(static_cast<const float*>(p)[i]);
    case DType::f64: return static_cast<const double*>(p)[i];
    case DType::bf16:
      return static_cast<double>(device::bf16_to_float(static_cast<const device::bf16_t*>(p)[i]));
  }
  return 0;
}
inline void host_store(DType dt, void* p, std::size_t i, double v) {
  switch (dt) {
    case DType::f32: static_cast<float*>(p)[i] = static_cast<float>(v); break;
    case DType::f64: static_cast<double*>(p)[i] = v; break;
    case DType::bf16:
      static_cast<device::bf16_t*>(p)[i] = device::float_to_bf16(static_cast<float>(v));
      break;
  }
}

// A device tensor of runtime type with host-side double views for setup and checks.
class DevTensor {
public:
  DevTensor(Backend& be, DType dt, std::size_t n) : be_(&be), dt_(dt), n_(n),
      buf_(be, device::dtype_size(dt) * (n ? n : 1)) {}
  DevTensor(Backend& be, DType dt, const std::vector<double>& v) : DevTensor(be, dt, v.size()) {
    upload(v);
  }
  void upload(const std::vector<double>& v) {
    std::vector<unsigned char> host(device::dtype_size(dt_) * n_);
    for (std::size_t i = 0; i < n_; ++i) host_store(dt_, host.data(), i, v[i]);
    be_->copy_to_device(buf_.get(), host.data(), host.size());
  }
  std::vector<double> download() const {
    std::vector<unsigned char> host(device::dtype_size(dt_) * n_);
    be_->copy_to_host(host.data(), buf_.get(), host.size());
    std::vector<double> v(n_);
    for (std::size_t i = 0; i < n_; ++i) v[i] = host_load(dt_, host.data(), i);
    return v;
  }
  void* get() const { return buf_.get(); }
  std::size_t size() const { return n_; }

private:
  Backend* be_;
  DType dt_;
  std::size_t n_;
  device::Buffer buf_;
};

// Rounds each value to what dt can represent, so that references start from the same
// inputs as the kernel does.
inline std::vector<double> representable(DType dt, std::vector<double> v) {
  unsigned char tmp[8];
  for (double& x : v) {
    host_store(dt, tmp, 0, x);
    x = host_load(dt, tmp, 0);
  }
  return v;
}

inline std::vector<double> random_vector(std::size_t n, std::uint64_t seed, double lo = -1,
                                         double hi = 1) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<double> v(n);
  for (double& x : v) x = u(rng);
  return v;
}

// max |a-b| / max(max|b|, floor): a scale-aware error for a whole tensor.
inline double rel_error(const std::vector<double>& a, const std::vector<double>& b,
                        double floor = 1e-30) {
  double num = 0, den = floor;
  for (std::size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::abs(a[i] - b[i]));
    den = std::max(den, std::abs(b[i]));
  }
  return num / den;
}

#define MICS_CHECK_CLOSE(got, want, tol)                                                   \
  do {                                                                                     \
    const double mics_err_ = ::mics::test::rel_error((got), (want));                       \
    BOOST_TEST(mics_err_ <= (tol), #got " vs " #want ": relative error " << mics_err_      \
                                                              << " > " << (tol));          \
  } while (0)

}  // namespace mics::test
