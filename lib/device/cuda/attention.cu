// Element-wise parts of attention; the matrix products are cuBLAS batched GEMMs issued
// from cuda_backend.cu. Rows are (head, query) pairs of one chunk of heads: row i is query
// t = i % T. The score matrix of a chunk lives only in the backend's scratch; forward
// saves the row log-sum-exp (f32) and backward recomputes the probabilities from it.
#include <cmath>

#include "cuda_common.cuh"

namespace mics::device::cuda {
namespace {

constexpr int kWarps = 8;

__device__ __forceinline__ float wsum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float wmax(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// One warp per row.
template <class T>
__global__ void softmax_rows_k(T* P, float* lse, const float* S, std::int64_t rows,
                               std::int64_t T_, bool causal) {
  const std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const std::int64_t t = r % T_, n = causal ? t + 1 : T_;
  const float* srow = S + r * T_;
  T* prow = P + r * T_;
  float m = -INFINITY;
  for (std::int64_t j = lane; j < n; j += 32) m = fmaxf(m, srow[j]);
  m = wmax(m);
  float z = 0.f;
  for (std::int64_t j = lane; j < n; j += 32) z += __expf(srow[j] - m);
  z = wsum(z);
  const float inv = 1.f / z;
  for (std::int64_t j = lane; j < T_; j += 32) st(prow, j, j < n ? __expf(srow[j] - m) * inv : 0.f);
  if (lane == 0) lse[r] = m + logf(z);
}

template <class T>
__global__ void probs_from_lse_k(T* P, const float* S, const float* lse, std::int64_t rows,
                                 std::int64_t T_, bool causal) {
  const std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const std::int64_t t = r % T_, n = causal ? t + 1 : T_;
  const float l = lse[r];
  for (std::int64_t j = lane; j < T_; j += 32)
    st(P + r * T_, j, j < n ? __expf(S[r * T_ + j] - l) : 0.f);
}

template <class T>
__global__ void rowdot_k(float* D, const T* dout, const T* out, std::int64_t T_,
                         std::int64_t h0, std::int64_t nh, std::int64_t HS, std::int64_t ldo) {
  const std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= nh * T_) return;
  const std::int64_t h = h0 + r / T_, t = r % T_;
  const std::int64_t base = t * ldo + h * HS;
  float acc = 0.f;
  for (std::int64_t d = lane; d < HS; d += 32) acc += ld(dout, base + d) * ld(out, base + d);
  acc = wsum(acc);
  if (lane == 0) D[r] = acc;
}

// Masked entries have P = 0, so dS = 0 there without looking at the mask.
template <class T>
__global__ void softmax_bwd_k(T* PdS, const float* dP, const float* D, std::int64_t rows,
                              std::int64_t T_, float scale) {
  const std::int64_t total = rows * T_;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       i < total; i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const float p = ld(PdS, i);
    st(PdS, i, p * (dP[i] - D[i / T_]) * scale);
  }
}

unsigned row_blocks(std::int64_t rows) {
  return static_cast<unsigned>((rows + kWarps - 1) / kWarps);
}

}  // namespace

void launch_softmax_rows(DType dt, void* P, float* lse, const float* S, std::int64_t rows,
                         std::int64_t T, bool causal, cudaStream_t s) {
  dispatch("attention", dt, false, [&](auto tag) {
    using E = decltype(tag);
    softmax_rows_k<E><<<row_blocks(rows), kWarps * 32, 0, s>>>(static_cast<E*>(P), lse, S,
                                                                rows, T, causal);
    MICS_CUDA_LAUNCHED();
  });
}
void launch_probs_from_lse(DType dt, void* P, const float* S, const float* lse,
                           std::int64_t rows, std::int64_t T, bool causal, cudaStream_t s) {
  dispatch("attention", dt, false, [&](auto tag) {
    using E = decltype(tag);
    probs_from_lse_k<E><<<row_blocks(rows), kWarps * 32, 0, s>>>(static_cast<E*>(P), S, lse,
                                                                  rows, T, causal);
    MICS_CUDA_LAUNCHED();
  });
}
void launch_attention_rowdot(DType dt, float* D, const void* dout, const void* out,
                             std::int64_t T, std::int64_t h0, std::int64_t nh,
                             std::int64_t HS, std::int64_t ldo, cudaStream_t s) {
  dispatch("attention", dt, false, [&](auto tag) {
    using E = decltype(tag);
    rowdot_k<E><<<row_blocks(nh * T), kWarps * 32, 0, s>>>(
        D, static_cast<const E*>(dout), static_cast<const E*>(out), T, h0, nh, HS, ldo);
    MICS_CUDA_LAUNCHED();
  });
}
void launch_softmax_backward(DType dt, void* P_dS, const float* dP, const float* D,
                             std::int64_t rows, std::int64_t T, double scale,
                             cudaStream_t s) {
  dispatch("attention", dt, false, [&](auto tag) {
    using E = decltype(tag);
    softmax_bwd_k<E><<<blocks_for(rows * T, 256), 256, 0, s>>>(
        static_cast<E*>(P_dS), dP, D, rows, T, static_cast<float>(scale));
    MICS_CUDA_LAUNCHED();
  });
}

}  // namespace mics::device::cuda
