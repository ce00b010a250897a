// The CUDA backend's own kernels for everything that is not a GEMM. Every reduction has a
// fixed shape that depends only on the problem size (grid, block, the order partials are
// combined in), so the same inputs give the same bits run after run: the engine's tests
// compare replicas bit for bit.
#include <cub/device/device_radix_sort.cuh>

#include <cmath>

#include "cuda_common.cuh"
#include "mics/core/error.hpp"

namespace mics::device::cuda {

void unsupported(const char* what, DType dt) {
  throw Error(std::string("cuda backend: ") + what + " does not support dtype " +
              dtype_name(dt) + " (the CUDA backend computes in f32 or bf16)");
}

namespace {

constexpr int kThreads = 256;

// Grid-stride loop over [0, n).
#define MICS_GRID_LOOP(i, n)                                                            \
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; \
       i < (n); i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)

template <class T> __global__ void fill_k(T* x, std::int64_t n, Acc<T> v) {
  MICS_GRID_LOOP(i, n) st(x, i, v);
}
template <class T> __global__ void scale_k(T* x, std::int64_t n, Acc<T> a) {
  MICS_GRID_LOOP(i, n) st(x, i, ld(x, i) * a);
}
template <class T> __global__ void axpy_k(T* y, const T* x, std::int64_t n, Acc<T> a) {
  MICS_GRID_LOOP(i, n) st(y, i, ld(y, i) + a * ld(x, i));
}
template <class T> __global__ void add_k(T* o, const T* a, const T* b, std::int64_t n) {
  MICS_GRID_LOOP(i, n) st(o, i, ld(a, i) + ld(b, i));
}
template <class D, class S> __global__ void cast_k(D* d, const S* s, std::int64_t n) {
  // Through the wider of the two accumulator types: exact for widening, one rounding
  // (or float-then-bf16, as on the host) for narrowing.
  using W = decltype(Acc<D>{} + Acc<S>{});
  MICS_GRID_LOOP(i, n) st(d, i, static_cast<W>(ld(s, i)));
}
template <class D, class S>
__global__ void accumulate_k(D* d, const S* s, std::int64_t n, double alpha) {
  using W = decltype(Acc<D>{} + Acc<S>{});
  const W a = static_cast<W>(alpha);
  MICS_GRID_LOOP(i, n) st(d, i, static_cast<W>(ld(d, i)) + a * static_cast<W>(ld(s, i)));
}

template <class T> void run_1d(void (*k)(T*, std::int64_t, Acc<T>), T* x, std::int64_t n,
                               Acc<T> v, cudaStream_t s) {
  if (n <= 0) return;
  k<<<blocks_for(n, kThreads), kThreads, 0, s>>>(x, n, v);
  MICS_CUDA_LAUNCHED();
}

// Calls f(S{}) for the source type of a cast (all three types allowed).
template <class F> void any_type(DType dt, F&& f) {
  switch (dt) {
    case DType::f32: f(float{}); return;
    case DType::bf16: f(bf16{}); return;
    case DType::f64: f(double{}); return;
  }
}

// --- block reductions with a fixed tree ------------------------------------------------
template <class V> __device__ V warp_sum(V v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <class V> __device__ V warp_max(V v) {
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
template <class V> __device__ V block_sum(V v) {
  __shared__ V part[32];
  const int lane = threadIdx.x % 32, wid = threadIdx.x / 32, nw = blockDim.x / 32;
  v = warp_sum(v);
  __syncthreads();  // part may still be read by a previous call
  if (lane == 0) part[wid] = v;
  __syncthreads();
  V r = lane < nw ? part[lane] : V(0);
  return warp_sum(r);
}
constexpr int kReduceBlocks = 512;

template <class T>
__global__ void reduce_partial_k(const T* x, std::int64_t n, bool squares, double* part) {
  double acc = 0.0;
  MICS_GRID_LOOP(i, n) {
    const double v = static_cast<double>(ld(x, i));
    acc += squares ? v * v : v;
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) part[blockIdx.x] = acc;
}
__global__ void reduce_final_k(const double* part, int nparts, double* out) {
  double acc = 0.0;
  for (int i = threadIdx.x; i < nparts; i += blockDim.x) acc += part[i];
  acc = block_sum(acc);
  if (threadIdx.x == 0) *out = acc;
}

template <class T>
__global__ void scale_matrix_t(T* C, std::int64_t M, std::int64_t N, std::int64_t ldc,
                               float beta) {
  MICS_GRID_LOOP(i, M * N) {
    const std::int64_t r = i / N, c = i % N;
    st(C, r * ldc + c, beta == 0.f ? 0.f : beta * static_cast<float>(ld(C, r * ldc + c)));
  }
}

template <class T>
__global__ void add_bias_k(T* out, const T* bias, std::int64_t N, std::int64_t C) {
  MICS_GRID_LOOP(i, N * C) st(out, i, ld(out, i) + ld(bias, i % C));
}

// --- deterministic column sums: pass 1 sums fixed row chunks per column, pass 2 sums the
// chunks in order. F(r, c) -> float is the summand.
constexpr int kColRows = 64;  // rows per chunk
template <class F>
__global__ void colsum_partial_k(F f, std::int64_t N, std::int64_t C, float* part) {
  // block (32, 8): 32 columns by 8 row lanes, one chunk of kColRows rows
  __shared__ float sh[8][33];
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * 32 + threadIdx.x;
  const std::int64_t r0 = static_cast<std::int64_t>(blockIdx.y) * kColRows;
  float acc = 0.f;
  if (c < C)
    for (std::int64_t r = r0 + threadIdx.y; r < min(N, r0 + kColRows); r += 8) acc += f(r, c);
  sh[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float s = 0.f;
    for (int y = 0; y < 8; ++y) s += sh[y][threadIdx.x];
    part[static_cast<std::int64_t>(blockIdx.y) * C + c] = s;
  }
}
template <class T>
__global__ void colsum_final_k(T* out, const float* part, std::int64_t chunks, std::int64_t C) {
  MICS_GRID_LOOP(c, C) {
    float s = 0.f;
    for (std::int64_t q = 0; q < chunks; ++q) s += part[q * C + c];
    st(out, c, ld(out, c) + s);
  }
}
template <class T, class F>
void column_sums_into(T* out, F f, std::int64_t N, std::int64_t C, Scratch& scratch, int slot,
                      cudaStream_t s) {
  if (N <= 0 || C <= 0) return;
  const std::int64_t chunks = (N + kColRows - 1) / kColRows;
  if (chunks > 65535) throw Error("cuda backend: column reduction over too many rows");
  float* part = static_cast<float*>(scratch.get(slot, sizeof(float) * chunks * C));
  dim3 grid(static_cast<unsigned>((C + 31) / 32), static_cast<unsigned>(chunks));
  colsum_partial_k<<<grid, dim3(32, 8), 0, s>>>(f, N, C, part);
  MICS_CUDA_LAUNCHED();
  colsum_final_k<<<blocks_for(C, kThreads), kThreads, 0, s>>>(out, part, chunks, C);
  MICS_CUDA_LAUNCHED();
}

template <class T> struct DoutAt {
  const T* d;
  std::int64_t C;
  __device__ float operator()(std::int64_t r, std::int64_t c) const {
    return static_cast<float>(ld(d, r * C + c));
  }
};

// --- embedding ---------------------------------------------------------------------------
template <class T>
__global__ void embedding_fwd_k(T* out, const std::int32_t* tok, const T* wte, const T* wpe,
                                std::int64_t BT, std::int64_t T_, std::int64_t C) {
  MICS_GRID_LOOP(i, BT * C) {
    const std::int64_t row = i / C, c = i % C;
    const std::int64_t t = tok[row];
    st(out, i, ld(wte, t * C + c) + ld(wpe, (row % T_) * C + c));
  }
}
// dwpe[t, c] += sum over b in order.
template <class T>
__global__ void embedding_bwd_pos_k(T* dwpe, const T* dout, std::int64_t B, std::int64_t T_,
                                    std::int64_t C) {
  MICS_GRID_LOOP(i, T_ * C) {
    const std::int64_t t = i / C, c = i % C;
    float acc = 0.f;
    for (std::int64_t b = 0; b < B; ++b) acc += ld(dout, (b * T_ + t) * C + c);
    st(dwpe, i, ld(dwpe, i) + acc);
  }
}
// Rows sorted stably by token: the block at the start of each run of equal tokens owns
// that token's gradient row and sums the run in original position order.
template <class T>
__global__ void embedding_bwd_tok_k(T* dwte, const T* dout, const std::int32_t* keys,
                                    const std::int32_t* idx, std::int64_t n, std::int64_t C) {
  const std::int64_t i = blockIdx.x;
  const std::int32_t key = keys[i];
  if (i > 0 && keys[i - 1] == key) return;
  std::int64_t end = i + 1;
  while (end < n && keys[end] == key) ++end;
  for (std::int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    float acc = 0.f;
    for (std::int64_t j = i; j < end; ++j) acc += ld(dout, static_cast<std::int64_t>(idx[j]) * C + c);
    const std::int64_t o = static_cast<std::int64_t>(key) * C + c;
    st(dwte, o, ld(dwte, o) + acc);
  }
}
__global__ void iota_k(std::int32_t* x, std::int64_t n) {
  MICS_GRID_LOOP(i, n) x[i] = static_cast<std::int32_t>(i);
}

// --- LayerNorm: one warp per row ----------------------------------------------------------
template <class T, class S>
__global__ void layernorm_fwd_k(T* out, S* mean, S* rstd, const T* x, const T* w, const T* b,
                                std::int64_t N, std::int64_t C, float eps) {
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= N) return;
  const T* xr = x + row * C;
  float s = 0.f;
  for (std::int64_t c = lane; c < C; c += 32) s += ld(xr, c);
  const float m = warp_sum(s) / static_cast<float>(C);
  float v = 0.f;
  for (std::int64_t c = lane; c < C; c += 32) {
    const float d = ld(xr, c) - m;
    v += d * d;
  }
  const float r = rsqrtf(warp_sum(v) / static_cast<float>(C) + eps);
  T* orow = out + row * C;
  for (std::int64_t c = lane; c < C; c += 32) st(orow, c, (ld(xr, c) - m) * r * ld(w, c) + ld(b, c));
  if (lane == 0) {
    mean[row] = static_cast<S>(m);
    rstd[row] = static_cast<S>(r);
  }
}
template <class T, class S>
__global__ void layernorm_bwd_k(T* dx, const T* dy, const T* x, const T* w, const S* mean,
                                const S* rstd, std::int64_t N, std::int64_t C) {
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= N) return;
  const T* xr = x + row * C;
  const T* dyr = dy + row * C;
  const float m = static_cast<float>(mean[row]), r = static_cast<float>(rstd[row]);
  float a = 0.f, bb = 0.f;
  for (std::int64_t c = lane; c < C; c += 32) {
    const float dn = ld(dyr, c) * ld(w, c);
    a += dn;
    bb += dn * (ld(xr, c) - m) * r;
  }
  a = warp_sum(a) / static_cast<float>(C);
  bb = warp_sum(bb) / static_cast<float>(C);
  T* dxr = dx + row * C;
  for (std::int64_t c = lane; c < C; c += 32) {
    const float nrm = (ld(xr, c) - m) * r;
    st(dxr, c, ld(dxr, c) + (ld(dyr, c) * ld(w, c) - a - nrm * bb) * r);
  }
}
template <class T, class S> struct LnWeightGrad {
  const T* dy; const T* x; const S* mean; const S* rstd; std::int64_t C;
  __device__ float operator()(std::int64_t r, std::int64_t c) const {
    const float nrm = (ld(x, r * C + c) - static_cast<float>(mean[r])) * static_cast<float>(rstd[r]);
    return ld(dy, r * C + c) * nrm;
  }
};

// --- GELU ----------------------------------------------------------------------------------
constexpr float kGeluK = 0.7978845608028654f;  // sqrt(2/pi)
template <class T> __global__ void gelu_fwd_k(T* out, const T* x, std::int64_t n) {
  MICS_GRID_LOOP(i, n) {
    const float v = ld(x, i);
    st(out, i, 0.5f * v * (1.f + tanhf(kGeluK * (v + 0.044715f * v * v * v))));
  }
}
template <class T> __global__ void gelu_bwd_k(T* dx, const T* x, const T* dy, std::int64_t n) {
  MICS_GRID_LOOP(i, n) {
    const float v = ld(x, i);
    const float th = tanhf(kGeluK * (v + 0.044715f * v * v * v));
    const float g = 0.5f * (1.f + th) +
                    0.5f * v * (1.f - th * th) * kGeluK * (1.f + 3.f * 0.044715f * v * v);
    st(dx, i, g * ld(dy, i));
  }
}

// --- softmax cross-entropy: one block per row, one pass for (max, sum) ----------------------
// Per-thread online (max, sum exp) pairs, combined in a fixed tree.
__device__ void online_combine(float& m, float& s, float m2, float s2) {
  const float mm = fmaxf(m, m2);
  if (mm == -INFINITY) return;
  s = s * __expf(m - mm) + s2 * __expf(m2 - mm);
  m = mm;
}
template <class T>
__device__ void row_stats(const T* row, std::int64_t V, float& m_out, float& s_out) {
  float m = -INFINITY, s = 0.f;
  for (std::int64_t j = threadIdx.x; j < V; j += blockDim.x) {
    const float v = ld(row, j);
    if (v > m) { s = s * __expf(m - v) + 1.f; m = v; } else { s += __expf(v - m); }
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
    online_combine(m, s, m2, s2);
  }
  __shared__ float pm[32], ps[32];
  const int lane = threadIdx.x % 32, wid = threadIdx.x / 32, nw = blockDim.x / 32;
  if (lane == 0) { pm[wid] = m; ps[wid] = s; }
  __syncthreads();
  m = lane < nw ? pm[lane] : -INFINITY;
  s = lane < nw ? ps[lane] : 0.f;
  for (int o = 16; o > 0; o >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
    online_combine(m, s, m2, s2);
  }
  m_out = m;
  s_out = s;
}
template <class T>
__global__ void ce_fwd_k(float* loss, const T* logits, const std::int32_t* tgt, std::int64_t V,
                         std::int64_t ldv) {
  const std::int64_t r = blockIdx.x;
  if (tgt[r] < 0) {
    if (threadIdx.x == 0) loss[r] = 0.f;
    return;
  }
  const T* row = logits + r * ldv;
  float m, s;
  row_stats(row, V, m, s);
  if (threadIdx.x == 0) loss[r] = logf(s) + m - ld(row, tgt[r]);
}
template <class T>
__global__ void ce_bwd_k(T* d, const T* logits, const std::int32_t* tgt, std::int64_t V,
                         std::int64_t ldv, float scale) {
  const std::int64_t r = blockIdx.x;
  T* drow = d + r * ldv;
  const std::int32_t t = tgt[r];
  if (t < 0) {
    for (std::int64_t j = threadIdx.x; j < V; j += blockDim.x) st(drow, j, 0.f);
    return;
  }
  const T* row = logits + r * ldv;
  float m, s;
  row_stats(row, V, m, s);
  const float inv = scale / s;
  // Each element is read and then written by the same thread: safe in place.
  for (std::int64_t j = threadIdx.x; j < V; j += blockDim.x) {
    const float p = __expf(ld(row, j) - m) * inv;
    st(drow, j, j == t ? p - scale : p);
  }
}

// --- AdamW ----------------------------------------------------------------------------------
template <class P, class G>
__global__ void adamw_k(P* p, P* m, P* v, const G* g, std::int64_t n, P lr, P b1, P b2, P eps,
                        P decay, P gs, P ibc1, P ibc2) {
  MICS_GRID_LOOP(i, n) {
    const P gi = static_cast<P>(ld(g, i)) * gs;
    const P mi = b1 * m[i] + (P(1) - b1) * gi;
    const P vi = b2 * v[i] + (P(1) - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const P pi = p[i];
    p[i] = pi - decay * pi - lr * (mi * ibc1) / (sqrt(vi * ibc2) + eps);
  }
}

}  // namespace

// ===========================================================================================
void launch_fill(DType dt, void* x, std::int64_t n, double v, cudaStream_t s) {
  dispatch("fill", dt, true, [&](auto tag) {
    using T = decltype(tag);
    run_1d<T>(fill_k<T>, static_cast<T*>(x), n, static_cast<Acc<T>>(v), s);
  });
}
void launch_scale(DType dt, void* x, std::int64_t n, double a, cudaStream_t s) {
  dispatch("scale", dt, true, [&](auto tag) {
    using T = decltype(tag);
    run_1d<T>(scale_k<T>, static_cast<T*>(x), n, static_cast<Acc<T>>(a), s);
  });
}
void launch_axpy(DType dt, void* y, const void* x, std::int64_t n, double a, cudaStream_t s) {
  dispatch("axpy", dt, true, [&](auto tag) {
    using T = decltype(tag);
    if (n <= 0) return;
    axpy_k<T><<<blocks_for(n, kThreads), kThreads, 0, s>>>(static_cast<T*>(y),
        static_cast<const T*>(x), n, static_cast<Acc<T>>(a));
    MICS_CUDA_LAUNCHED();
  });
}
void launch_add(DType dt, void* out, const void* a, const void* b, std::int64_t n,
                cudaStream_t s) {
  dispatch("add", dt, true, [&](auto tag) {
    using T = decltype(tag);
    if (n <= 0) return;
    add_k<T><<<blocks_for(n, kThreads), kThreads, 0, s>>>(static_cast<T*>(out),
        static_cast<const T*>(a), static_cast<const T*>(b), n);
    MICS_CUDA_LAUNCHED();
  });
}
void launch_cast(DType dd, void* dst, DType sd, const void* src, std::int64_t n,
                 cudaStream_t s) {
  if (n <= 0) return;
  any_type(dd, [&](auto dtag) {
    using D = decltype(dtag);
    any_type(sd, [&](auto stag) {
      using S = decltype(stag);
      cast_k<D, S><<<blocks_for(n, kThreads), kThreads, 0, s>>>(static_cast<D*>(dst),
                                                                 static_cast<const S*>(src), n);
      MICS_CUDA_LAUNCHED();
    });
  });
}
void launch_accumulate(DType dd, void* dst, DType sd, const void* src, std::int64_t n,
                       double alpha, cudaStream_t s) {
  if (dd == DType::bf16) unsupported("accumulate (destination)", dd);
  if (n <= 0) return;
  any_type(dd, [&](auto dtag) {
    using D = decltype(dtag);
    if constexpr (!std::is_same_v<D, bf16>) {
      any_type(sd, [&](auto stag) {
        using S = decltype(stag);
        accumulate_k<D, S><<<blocks_for(n, kThreads), kThreads, 0, s>>>(
            static_cast<D*>(dst), static_cast<const S*>(src), n, alpha);
        MICS_CUDA_LAUNCHED();
      });
    }
  });
}
void launch_reduce(DType dt, const void* x, std::int64_t n, bool squares, double* dev_out,
                   Scratch& scratch, cudaStream_t s) {
  dispatch(squares ? "sum_squares" : "sum", dt, true, [&](auto tag) {
    using T = decltype(tag);
    double* part = static_cast<double*>(scratch.get(0, sizeof(double) * kReduceBlocks));
    // The grid is fixed (not sized from n), so the summation order depends on n alone.
    reduce_partial_k<T><<<kReduceBlocks, kThreads, 0, s>>>(static_cast<const T*>(x), n,
                                                          squares, part);
    MICS_CUDA_LAUNCHED();
    reduce_final_k<<<1, kThreads, 0, s>>>(part, kReduceBlocks, dev_out);
    MICS_CUDA_LAUNCHED();
  });
}
void launch_scale_matrix(DType dt, void* C, std::int64_t M, std::int64_t N, std::int64_t ldc,
                         double beta, cudaStream_t s) {
  if (M * N <= 0) return;
  dispatch("gemm (K = 0)", dt, true, [&](auto tag) {
    using T = decltype(tag);
    scale_matrix_t<T><<<blocks_for(M * N, kThreads), kThreads, 0, s>>>(
        static_cast<T*>(C), M, N, ldc, static_cast<float>(beta));
    MICS_CUDA_LAUNCHED();
  });
}
void launch_add_bias(DType dt, void* out, const void* bias, std::int64_t N, std::int64_t C,
                     cudaStream_t s) {
  dispatch("add_bias", dt, false, [&](auto tag) {
    using T = decltype(tag);
    if (N * C <= 0) return;
    add_bias_k<T><<<blocks_for(N * C, kThreads), kThreads, 0, s>>>(
        static_cast<T*>(out), static_cast<const T*>(bias), N, C);
    MICS_CUDA_LAUNCHED();
  });
}
void launch_bias_backward(DType dt, void* dbias, const void* dout, std::int64_t N,
                          std::int64_t C, Scratch& scratch, cudaStream_t s) {
  dispatch("bias_backward", dt, false, [&](auto tag) {
    using T = decltype(tag);
    column_sums_into(static_cast<T*>(dbias), DoutAt<T>{static_cast<const T*>(dout), C}, N, C,
                     scratch, 1, s);
  });
}
void launch_embedding_forward(DType dt, void* out, const std::int32_t* tokens,
                              const void* wte, const void* wpe, std::int64_t B,
                              std::int64_t T, std::int64_t C, cudaStream_t s) {
  dispatch("embedding_forward", dt, false, [&](auto tag) {
    using E = decltype(tag);
    if (B * T * C <= 0) return;
    embedding_fwd_k<E><<<blocks_for(B * T * C, kThreads), kThreads, 0, s>>>(
        static_cast<E*>(out), tokens, static_cast<const E*>(wte), static_cast<const E*>(wpe),
        B * T, T, C);
    MICS_CUDA_LAUNCHED();
  });
}
void launch_embedding_backward(DType dt, void* dwte, void* dwpe, const void* dout,
                               const std::int32_t* tokens, std::int64_t B, std::int64_t T,
                               std::int64_t C, Scratch& scratch, cudaStream_t s) {
  dispatch("embedding_backward", dt, false, [&](auto tag) {
    using E = decltype(tag);
    const E* d = static_cast<const E*>(dout);
    const std::int64_t n = B * T;
    if (n <= 0 || C <= 0) return;
    if (dwpe != nullptr) {
      embedding_bwd_pos_k<E><<<blocks_for(T * C, kThreads), kThreads, 0, s>>>(
          static_cast<E*>(dwpe), d, B, T, C);
      MICS_CUDA_LAUNCHED();
    }
    if (dwte == nullptr) return;
    if (n > 0x7fffffff) throw Error("cuda backend: embedding_backward over more than 2^31 rows");
    const int ni = static_cast<int>(n);
    auto* keys_out = static_cast<std::int32_t*>(scratch.get(2, sizeof(std::int32_t) * n));
    auto* idx_in = static_cast<std::int32_t*>(scratch.get(3, sizeof(std::int32_t) * n));
    auto* idx_out = static_cast<std::int32_t*>(scratch.get(4, sizeof(std::int32_t) * n));
    std::size_t temp = 0;
    MICS_CHECK_CUDA(cub::DeviceRadixSort::SortPairs(nullptr, temp, tokens, keys_out, idx_in,
                                                 idx_out, ni, 0, 32, s));
    void* temp_p = scratch.get(5, temp);
    iota_k<<<blocks_for(n, kThreads), kThreads, 0, s>>>(idx_in, n);
    MICS_CUDA_LAUNCHED();
    // LSD radix sort is stable: equal tokens keep their position order.
    MICS_CHECK_CUDA(cub::DeviceRadixSort::SortPairs(temp_p, temp, tokens, keys_out, idx_in,
                                                 idx_out, ni, 0, 32, s));
    const int threads = C >= 256 ? 256 : 32 * static_cast<int>((C + 31) / 32);
    embedding_bwd_tok_k<E><<<static_cast<unsigned>(n), threads, 0, s>>>(
        static_cast<E*>(dwte), d, keys_out, idx_out, n, C);
    MICS_CUDA_LAUNCHED();
  });
}
void launch_layernorm_forward(DType dt, void* out, void* mean, void* rstd, const void* inp,
                              const void* w, const void* b, std::int64_t N, std::int64_t C,
                              double eps, cudaStream_t s) {
  dispatch("layernorm_forward", dt, false, [&](auto tag) {
    using T = decltype(tag);
    if (N <= 0) return;
    const int rows_per_block = kThreads / 32;
    layernorm_fwd_k<T, float><<<blocks_for(N, rows_per_block, 1LL << 31), kThreads, 0, s>>>(
        static_cast<T*>(out), static_cast<float*>(mean), static_cast<float*>(rstd),
        static_cast<const T*>(inp), static_cast<const T*>(w), static_cast<const T*>(b), N, C,
        static_cast<float>(eps));
    MICS_CUDA_LAUNCHED();
  });
}
void launch_layernorm_backward(DType dt, void* dinp, void* dw, void* db, const void* dout,
                               const void* inp, const void* w, const void* mean,
                               const void* rstd, std::int64_t N, std::int64_t C,
                               Scratch& scratch, cudaStream_t s) {
  dispatch("layernorm_backward", dt, false, [&](auto tag) {
    using T = decltype(tag);
    if (N <= 0) return;
    const T* dy = static_cast<const T*>(dout);
    const T* x = static_cast<const T*>(inp);
    const float* mu = static_cast<const float*>(mean);
    const float* rs = static_cast<const float*>(rstd);
    const int rows_per_block = kThreads / 32;
    layernorm_bwd_k<T, float><<<blocks_for(N, rows_per_block, 1LL << 31), kThreads, 0, s>>>(
        static_cast<T*>(dinp), dy, x, static_cast<const T*>(w), mu, rs, N, C);
    MICS_CUDA_LAUNCHED();
    column_sums_into(static_cast<T*>(dw), LnWeightGrad<T, float>{dy, x, mu, rs, C}, N, C,
                     scratch, 1, s);
    column_sums_into(static_cast<T*>(db), DoutAt<T>{dy, C}, N, C, scratch, 1, s);
  });
}
void launch_gelu_forward(DType dt, void* out, const void* inp, std::int64_t n, cudaStream_t s) {
  dispatch("gelu_forward", dt, false, [&](auto tag) {
    using T = decltype(tag);
    if (n <= 0) return;
    gelu_fwd_k<T><<<blocks_for(n, kThreads), kThreads, 0, s>>>(static_cast<T*>(out),
                                                               static_cast<const T*>(inp), n);
    MICS_CUDA_LAUNCHED();
  });
}
void launch_gelu_backward(DType dt, void* dinp, const void* inp, const void* dout,
                          std::int64_t n, cudaStream_t s) {
  dispatch("gelu_backward", dt, false, [&](auto tag) {
    using T = decltype(tag);
    if (n <= 0) return;
    gelu_bwd_k<T><<<blocks_for(n, kThreads), kThreads, 0, s>>>(
        static_cast<T*>(dinp), static_cast<const T*>(inp), static_cast<const T*>(dout), n);
    MICS_CUDA_LAUNCHED();
  });
}
void launch_cross_entropy_forward(DType dt, void* losses, const void* logits,
                                  const std::int32_t* targets, std::int64_t N,
                                  std::int64_t V, std::int64_t ldv, cudaStream_t s) {
  dispatch("cross_entropy_forward", dt, false, [&](auto tag) {
    using T = decltype(tag);
    if (N <= 0) return;
    ce_fwd_k<T><<<static_cast<unsigned>(N), 512, 0, s>>>(
        static_cast<float*>(losses), static_cast<const T*>(logits), targets, V, ldv);
    MICS_CUDA_LAUNCHED();
  });
}
void launch_cross_entropy_backward(DType dt, void* dlogits, const void* logits,
                                   const std::int32_t* targets, std::int64_t N,
                                   std::int64_t V, std::int64_t ldv, double grad_scale,
                                   cudaStream_t s) {
  dispatch("cross_entropy_backward", dt, false, [&](auto tag) {
    using T = decltype(tag);
    if (N <= 0) return;
    ce_bwd_k<T><<<static_cast<unsigned>(N), 512, 0, s>>>(
        static_cast<T*>(dlogits), static_cast<const T*>(logits), targets, V, ldv,
        static_cast<float>(grad_scale));
    MICS_CUDA_LAUNCHED();
  });
}
void launch_adamw(DType dt, void* p, void* m, void* v, DType gdt, const void* g,
                  std::int64_t n, double lr, double b1, double b2, double eps, double decay,
                  double grad_scale, double bc1, double bc2, cudaStream_t s) {
  if (n <= 0) return;
  auto run = [&](auto ptag) {
    using P = decltype(ptag);
    any_type(gdt, [&](auto gtag) {
      using G = decltype(gtag);
      adamw_k<P, G><<<blocks_for(n, kThreads), kThreads, 0, s>>>(
          static_cast<P*>(p), static_cast<P*>(m), static_cast<P*>(v), static_cast<const G*>(g),
          n, static_cast<P>(lr), static_cast<P>(b1), static_cast<P>(b2), static_cast<P>(eps),
          static_cast<P>(decay), static_cast<P>(grad_scale), static_cast<P>(1.0 / bc1),
          static_cast<P>(1.0 / bc2));
      MICS_CUDA_LAUNCHED();
    });
  };
  if (dt == DType::f32) run(float{});
  else if (dt == DType::f64) run(double{});
  else unsupported("adamw (master weights)", dt);
}

}  // namespace mics::device::cuda
