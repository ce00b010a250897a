#pragma once
// Typed fill/read for test buffers of any DType, and a way to check a verdict on all ranks.
#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "mics/comm/dtype.hpp"

namespace mics::test {

using comm::DType;

// A host buffer of n elements of dt, addressed as doubles.
class Buffer {
public:
  Buffer(DType dt, std::size_t n) : dt_(dt), n_(n), bytes_(n * comm::dtype_size(dt) + 1) {}
  void* data() { return bytes_.data(); }
  const void* data() const { return bytes_.data(); }
  std::size_t size() const { return n_; }
  DType dtype() const { return dt_; }
  void set(std::size_t i, double v) {
    unsigned char* p = bytes_.data() + i * comm::dtype_size(dt_);
    switch (dt_) {
      case DType::f32: { const float f = static_cast<float>(v); std::memcpy(p, &f, 4); break; }
      case DType::f64: std::memcpy(p, &v, 8); break;
      case DType::bf16: { const auto b = device::float_to_bf16(static_cast<float>(v)); std::memcpy(p, &b.bits, 2); break; }
    }
  }
  double get(std::size_t i) const {
    const unsigned char* p = bytes_.data() + i * comm::dtype_size(dt_);
    switch (dt_) {
      case DType::f32: { float f; std::memcpy(&f, p, 4); return static_cast<double>(f); }
      case DType::f64: { double d; std::memcpy(&d, p, 8); return d; }
      case DType::bf16: { device::bf16_t b; std::memcpy(&b.bits, p, 2); return static_cast<double>(device::bf16_to_float(b)); }
    }
    return 0.0;
  }
  bool same_bytes(const Buffer& o) const { return bytes_ == o.bytes_; }

private:
  DType dt_;
  std::size_t n_;
  std::vector<unsigned char> bytes_;
};

// True on every rank when `ok` holds on every rank of comm.
inline bool all_ranks(MPI_Comm comm, bool ok) {
  int mine = ok ? 1 : 0, all = 0;
  MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, comm);
  return all == 1;
}

}  // namespace mics::test
