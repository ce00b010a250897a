#pragma once
// bf16 on the CPU backend (private to lib/device/cpu). The CPU computes bf16 tensors the
// way the CUDA backend does: bf16 storage, f32 arithmetic, f32 statistics, each output
// rounded once to nearest even. Every kernel but the GEMMs gets there by widening its
// bf16 arguments into f32 scratch, running its f32 body and rounding the outputs back;
// the GEMMs take bf16 operands directly (bf16_gemm.hpp).
#include <cstdint>
#include <vector>

#include "mics/device/dtype.hpp"

namespace mics::device::cpu {

// dst[i] = (float) src[i] and dst[i] = bf16(src[i]) over [0, n), split over `threads`.
void widen_bf16(float* dst, const bf16_t* src, std::int64_t n, int threads);
void narrow_bf16(bf16_t* dst, const float* src, std::int64_t n, int threads);

// The f32 views of one kernel call's bf16 arguments. A pointer asked for twice (an output
// that may alias an input) gets the same view. Scratch comes from a pool the backend
// keeps, so steady-state calls allocate nothing. commit() rounds every written view back;
// without it (an exception) the bf16 outputs are left as they were.
class Widened {
public:
  Widened(std::vector<std::vector<float>>& pool, int threads) : pool_(pool), threads_(threads) {}
  Widened(const Widened&) = delete;
  Widened& operator=(const Widened&) = delete;

  const float* in(const void* p, std::int64_t n) { return view(const_cast<void*>(p), n, true, false); }
  float* out(void* p, std::int64_t n) { return view(p, n, false, true); }  // not read
  float* inout(void* p, std::int64_t n) { return view(p, n, true, true); }  // added into
  void commit();

private:
  struct View {
    void* bf;
    float* f;
    std::int64_t n;
    bool read, write;
  };
  float* view(void* p, std::int64_t n, bool read, bool write);

  std::vector<std::vector<float>>& pool_;
  int threads_;
  std::vector<View> views_;
};

}  // namespace mics::device::cpu
