#pragma once
// Private to the CUDA backend: error checks, element-type traits and the launchers that
// the backend class (cuda_backend.cu) calls. Every launcher enqueues on the stream it is
// given and never synchronises.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "mics/core/check_cuda.hpp"
#include "mics/device/dtype.hpp"

// A launch error (bad configuration) shows up at once; an execution error only at the
// next synchronising call, which MICS_CHECK_CUDA reports there.
#define MICS_CUDA_LAUNCHED() MICS_CHECK_CUDA(cudaGetLastError())

namespace mics::device::cuda {

using bf16 = __nv_bfloat16;

// Values are loaded into Acc<T> (float for f32/bf16, double for f64), computed on, and
// rounded once on the store (round to nearest even into bf16).
template <class T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };
template <class T> using Acc = typename AccOf<T>::type;

template <class T> __device__ __forceinline__ Acc<T> ld(const T* p, std::int64_t i) {
  return static_cast<Acc<T>>(p[i]);
}
template <> __device__ __forceinline__ float ld<bf16>(const bf16* p, std::int64_t i) {
  return __bfloat162float(p[i]);
}
template <class T, class V> __device__ __forceinline__ void st(T* p, std::int64_t i, V v) {
  p[i] = static_cast<T>(v);
}
// double -> float -> bf16, the same double rounding as the host's float_to_bf16 path, so
// that casts agree bit for bit with the CPU backend.
template <> __device__ __forceinline__ void st<bf16, float>(bf16* p, std::int64_t i, float v) {
  p[i] = __float2bfloat16_rn(v);
}
template <> __device__ __forceinline__ void st<bf16, double>(bf16* p, std::int64_t i, double v) {
  p[i] = __float2bfloat16_rn(static_cast<float>(v));
}

// Calls f(T{}) with the storage type matching dt; `allow_f64` for the calls that accept it.
template <class F>
void dispatch(const char* what, DType dt, bool allow_f64, F&& f);

[[noreturn]] void unsupported(const char* what, DType dt);

template <class F>
void dispatch(const char* what, DType dt, bool allow_f64, F&& f) {
  switch (dt) {
    case DType::f32: f(float{}); return;
    case DType::bf16: f(bf16{}); return;
    case DType::f64:
      if (allow_f64) { f(double{}); return; }
      break;
  }
  unsupported(what, dt);
}

inline unsigned blocks_for(std::int64_t n, int threads, std::int64_t cap = 65535LL * 8) {
  std::int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > cap) b = cap;
  return static_cast<unsigned>(b);
}

// Scratch memory owned by the backend: grown on demand, reused across calls on the
// compute stream (stream order makes the reuse safe).
class Scratch {
public:
  virtual ~Scratch() = default;
  virtual void* get(int slot, std::size_t bytes) = 0;  // slot: independent buffers
};

// --- launchers (kernels.cu) ------------------------------------------------------------
void launch_fill(DType dt, void* x, std::int64_t n, double v, cudaStream_t s);
void launch_scale(DType dt, void* x, std::int64_t n, double a, cudaStream_t s);
void launch_axpy(DType dt, void* y, const void* x, std::int64_t n, double a, cudaStream_t s);
void launch_add(DType dt, void* out, const void* a, const void* b, std::int64_t n,
                cudaStream_t s);
void launch_cast(DType dd, void* dst, DType sd, const void* src, std::int64_t n,
                 cudaStream_t s);
void launch_accumulate(DType dd, void* dst, DType sd, const void* src, std::int64_t n,
                       double alpha, cudaStream_t s);
// Deterministic sum of f(x_i) in double; `squares` picks x*x. Result in *host_out after
// the stream is synchronised by the caller.
void launch_reduce(DType dt, const void* x, std::int64_t n, bool squares, double* dev_out,
                   Scratch& scratch, cudaStream_t s);
void launch_scale_matrix(DType dt, void* C, std::int64_t M, std::int64_t N, std::int64_t ldc,
                         double beta, cudaStream_t s);
void launch_add_bias(DType dt, void* out, const void* bias, std::int64_t N, std::int64_t C,
                     cudaStream_t s);
void launch_bias_backward(DType dt, void* dbias, const void* dout, std::int64_t N,
                          std::int64_t C, Scratch& scratch, cudaStream_t s);
void launch_embedding_forward(DType dt, void* out, const std::int32_t* tokens,
                              const void* wte, const void* wpe, std::int64_t B,
                              std::int64_t T, std::int64_t C, cudaStream_t s);
void launch_embedding_backward(DType dt, void* dwte, void* dwpe, const void* dout,
                               const std::int32_t* tokens, std::int64_t B, std::int64_t T,
                               std::int64_t C, Scratch& scratch, cudaStream_t s);
void launch_layernorm_forward(DType dt, void* out, void* mean, void* rstd, const void* inp,
                              const void* w, const void* b, std::int64_t N, std::int64_t C,
                              double eps, cudaStream_t s);
void launch_layernorm_backward(DType dt, void* dinp, void* dw, void* db, const void* dout,
                               const void* inp, const void* w, const void* mean,
                               const void* rstd, std::int64_t N, std::int64_t C,
                               Scratch& scratch, cudaStream_t s);
void launch_gelu_forward(DType dt, void* out, const void* inp, std::int64_t n, cudaStream_t s);
void launch_gelu_backward(DType dt, void* dinp, const void* inp, const void* dout,
                          std::int64_t n, cudaStream_t s);
void launch_cross_entropy_forward(DType dt, void* losses, const void* logits,
                                  const std::int32_t* targets, std::int64_t N,
                                  std::int64_t V, std::int64_t ld, cudaStream_t s);
void launch_cross_entropy_backward(DType dt, void* dlogits, const void* logits,
                                   const std::int32_t* targets, std::int64_t N,
                                   std::int64_t V, std::int64_t ld, double grad_scale,
                                   cudaStream_t s);
void launch_adamw(DType dt, void* p, void* m, void* v, DType gdt, const void* g,
                  std::int64_t n, double lr, double b1, double b2, double eps, double decay,
                  double grad_scale, double bc1, double bc2, cudaStream_t s);

// --- attention helpers (attention.cu) -------------------------------------------------
// Row softmax of S[rows, T] (f32, rows = heads*T with row i of each head at query
// t = i % T), causal mask j > t. Writes P (type dt) and lse[rows] (f32).
void launch_softmax_rows(DType dt, void* P, float* lse, const float* S, std::int64_t rows,
                         std::int64_t T, bool causal, cudaStream_t s);
// P = exp(S - lse) (masked), from saved log-sum-exp, into P (type dt).
void launch_probs_from_lse(DType dt, void* P, const float* S, const float* lse,
                           std::int64_t rows, std::int64_t T, bool causal, cudaStream_t s);
// D[h, t] = sum_d dout[t, h*HS + d] * out[t, h*HS + d] for one batch row (ld = C).
void launch_attention_rowdot(DType dt, float* D, const void* dout, const void* out,
                             std::int64_t T, std::int64_t h0, std::int64_t nh,
                             std::int64_t HS, std::int64_t ld, cudaStream_t s);
// dS = P * (dP - D_row) * scale, written into P (type dt) in place; dP is f32 [rows, T].
void launch_softmax_backward(DType dt, void* P_dS, const float* dP, const float* D,
                             std::int64_t rows, std::int64_t T, double scale,
                             cudaStream_t s);

// --- fused attention forward (flash_attention.cu) -------------------------------------
// bf16, HS 64 or 128, qkv 16-byte aligned: writes out [B,T,C] and lse [B,NH,T] and
// returns true; returns false (and does nothing) for shapes it does not handle.
bool flash_attention_forward(void* out, float* lse, const void* qkv, std::int64_t B,
                             std::int64_t T, std::int64_t NH, std::int64_t HS, bool causal,
                             cudaStream_t s);
// Same conditions (dout 16-byte aligned too): writes dqkv [B,T,3C] from dout, qkv, the
// forward's lse [B,NH,T] and Dvec [B,NH,T] = rowsum(dout * out) per head.
bool flash_attention_backward(void* dqkv, const void* dout, const void* qkv, const float* lse,
                              const float* Dvec, std::int64_t B, std::int64_t T,
                              std::int64_t NH, std::int64_t HS, bool causal, cudaStream_t s);

}  // namespace mics::device::cuda
