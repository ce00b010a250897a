#pragma once
// The CPU backend's streaming kernels over model-state shards (private to lib/device/cpu):
// AdamW, the gradient accumulate, and the sums behind the gradient norm. Each is one pass
// over its arrays with no temporaries, the element types resolved once per call (not per
// element) so that the loops vectorise, and split over the backend's OpenMP threads in
// contiguous ranges. Sums use a fixed blocking and a fixed order of partial sums, so a
// result never depends on the thread count or on scheduling.
#include <cstdint>

#include "mics/device/backend.hpp"

namespace mics::device::cpu {

// param, m, v of type dt (f32 or f64); grad of type grad_dt (f32, f64 or bf16).
void adamw(DType dt, void* param, void* m, void* v, DType grad_dt, const void* grad, std::int64_t n,
           const AdamWParams& hp, int threads);
// adamw, then grad[0,n) = 0, in the same pass.
void adamw_zero_grad(DType dt, void* param, void* m, void* v, DType grad_dt, void* grad, std::int64_t n,
                     const AdamWParams& hp, int threads);
// dst += alpha * src, formed in f64 and rounded once to dst's type (f32 or f64).
void accumulate(DType dst_dt, void* dst, DType src_dt, const void* src, std::int64_t n, double alpha,
                int threads);
// Sum of x_i^2 (squares = true) or of x_i, in f64.
double blocked_sum(DType dt, const void* x, std::int64_t n, bool squares, int threads);

}  // namespace mics::device::cpu
