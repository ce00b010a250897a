// Fused attention forward for bf16 with head size 64 or 128 (flash-style): per block, 64
// queries of one (batch, head); keys and values stream through shared memory in tiles of
// 64 with an online softmax, so no [T, T] matrix ever reaches device memory. Tensor cores
// through WMMA (16x16x16 bf16, f32 accumulate). Each warp owns 16 query rows; its score
// tile, probabilities and output accumulator live in shared memory, where the per-row
// rescaling of the online softmax is done (WMMA fragments have no defined row layout).
// Saves the row log-sum-exp exactly as the GEMM path does, so the GEMM-path backward
// (which recomputes P from it) serves both.
#include <mma.h>

#include <cmath>

#include "cuda_common.cuh"

namespace mics::device::cuda {
namespace {

using namespace nvcuda;

constexpr int kBr = 64, kBc = 64, kFaWarps = 4;

template <int D> struct FaSmem {
  static constexpr int ldq = D + 8;       // bf16 rows, padded by 16 bytes
  static constexpr int lds = kBc + 4;     // f32 score rows
  static constexpr int ldp = kBc + 8;     // bf16 probability rows
  static constexpr int ldo = D + 4;       // f32 output rows
  static constexpr std::size_t q = 0;
  static constexpr std::size_t k = q + sizeof(bf16) * kBr * ldq;
  static constexpr std::size_t v = k + sizeof(bf16) * kBc * ldq;
  static constexpr std::size_t s = v + sizeof(bf16) * kBc * ldq;
  static constexpr std::size_t p = s + sizeof(float) * kFaWarps * 16 * lds;
  static constexpr std::size_t o = p + sizeof(bf16) * kFaWarps * 16 * ldp;
  static constexpr std::size_t ml = o + sizeof(float) * kFaWarps * 16 * ldo;
  static constexpr std::size_t bytes = ml + sizeof(float) * kFaWarps * 16 * 2;
};

// rows [r0, r0+64) of a [T, D] slice with row stride ld (elements) into smem [64][ldq];
// rows past T are zero. 16-byte copies (the caller checked alignment).
template <int D>
__device__ void load_tile(bf16* dst, const bf16* src, std::int64_t r0, std::int64_t T,
                          std::int64_t ld) {
  constexpr int vec = 8, per_row = D / vec;
  for (int i = threadIdx.x; i < kBr * per_row; i += blockDim.x) {
    const int r = i / per_row, c = (i % per_row) * vec;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (r0 + r < T) val = *reinterpret_cast<const uint4*>(src + (r0 + r) * ld + c);
    *reinterpret_cast<uint4*>(dst + r * FaSmem<D>::ldq + c) = val;
  }
}

template <int D>
__global__ void __launch_bounds__(kFaWarps * 32)
flash_fwd_k(bf16* out, float* lse, const bf16* qkv, std::int64_t T, int NH, bool causal,
            float scale) {
  using L = FaSmem<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* Qs = reinterpret_cast<bf16*>(smem + L::q);
  bf16* Ks = reinterpret_cast<bf16*>(smem + L::k);
  bf16* Vs = reinterpret_cast<bf16*>(smem + L::v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* Sw = reinterpret_cast<float*>(smem + L::s) + warp * 16 * L::lds;
  bf16* Pw = reinterpret_cast<bf16*>(smem + L::p) + warp * 16 * L::ldp;
  float* Ow = reinterpret_cast<float*>(smem + L::o) + warp * 16 * L::ldo;
  float* Mw = reinterpret_cast<float*>(smem + L::ml) + warp * 32;
  float* Lw = Mw + 16;

  const std::int64_t q0 = static_cast<std::int64_t>(blockIdx.x) * kBr;
  const int h = blockIdx.y;
  const std::int64_t b = blockIdx.z;
  const std::int64_t C = static_cast<std::int64_t>(NH) * D, C3 = 3 * C;
  const bf16* qbase = qkv + b * T * C3 + static_cast<std::int64_t>(h) * D;
  const bf16* kbase = qbase + C;
  const bf16* vbase = qbase + 2 * C;

  load_tile<D>(Qs, qbase, q0, T, C3);
  // This lane's share of the warp's 16 rows: row `row`, columns of half `half`.
  const int row = lane / 2, half = lane % 2;
  const std::int64_t tq = q0 + warp * 16 + row;
  for (int c = half * (D / 2); c < (half + 1) * (D / 2); ++c) Ow[row * L::ldo + c] = 0.f;
  if (half == 0) {
    Mw[row] = -INFINITY;
    Lw[row] = 0.f;
  }

  const std::int64_t kv_end = causal ? min(T, q0 + kBr) : T;
  for (std::int64_t k0 = 0; k0 < kv_end; k0 += kBc) {
    __syncthreads();  // every warp is done with the previous K/V tile
    load_tile<D>(Ks, kbase, k0, T, C3);
    load_tile<D>(Vs, vbase, k0, T, C3);
    __syncthreads();

    // S = Q_w K^T for the warp's 16 rows and the tile's 64 keys.
    for (int j = 0; j < kBc / 16; ++j) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.f);
      for (int d = 0; d < D; d += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> bk;
        wmma::load_matrix_sync(a, Qs + (warp * 16) * L::ldq + d, L::ldq);
        wmma::load_matrix_sync(bk, Ks + (j * 16) * L::ldq + d, L::ldq);
        wmma::mma_sync(acc, a, bk, acc);
      }
      wmma::store_matrix_sync(Sw + j * 16, acc, L::lds, wmma::mem_row_major);
    }
    __syncwarp();

    // Online softmax on the lane's half row (32 keys), combined with its partner lane.
    const float m_old = Mw[row];
    float mx = -INFINITY;
    float sv[kBc / 2];
#pragma unroll
    for (int c = 0; c < kBc / 2; ++c) {
      const int col = half * (kBc / 2) + c;
      const std::int64_t tk = k0 + col;
      const bool ok = tk < T && (!causal || tk <= tq);
      sv[c] = ok ? Sw[row * L::lds + col] * scale : -INFINITY;
      mx = fmaxf(mx, sv[c]);
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    const float m_new = fmaxf(m_old, mx);
    // m_new is finite: key 0 is visible to every query, and it is in the first tile.
    float sum = 0.f;
#pragma unroll
    for (int c = 0; c < kBc / 2; ++c) {
      const float p = sv[c] == -INFINITY ? 0.f : __expf(sv[c] - m_new);
      sum += p;
      Pw[row * L::ldp + half * (kBc / 2) + c] = __float2bfloat16_rn(p);
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    const float alpha = m_old == -INFINITY ? 0.f : __expf(m_old - m_new);
    for (int c = half * (D / 2); c < (half + 1) * (D / 2); ++c) Ow[row * L::ldo + c] *= alpha;
    __syncwarp();  // both lanes of a row have read Mw before it changes
    if (half == 0) {
      Mw[row] = m_new;
      Lw[row] = alpha * Lw[row] + sum;
    }
    __syncwarp();

    // O_w += P_w V
    for (int n = 0; n < D / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::load_matrix_sync(acc, Ow + n * 16, L::ldo, wmma::mem_row_major);
      for (int kk = 0; kk < kBc / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> bv;
        wmma::load_matrix_sync(a, Pw + kk * 16, L::ldp);
        wmma::load_matrix_sync(bv, Vs + (kk * 16) * L::ldq + n * 16, L::ldq);
        wmma::mma_sync(acc, a, bv, acc);
      }
      wmma::store_matrix_sync(Ow + n * 16, acc, L::ldo, wmma::mem_row_major);
    }
    __syncwarp();
  }

  if (tq < T) {
    const float l = Lw[row];
    const float inv = 1.f / l;
    bf16* orow = out + (b * T + tq) * C + static_cast<std::int64_t>(h) * D;
    for (int c = half * (D / 2); c < (half + 1) * (D / 2); ++c)
      orow[c] = __float2bfloat16_rn(Ow[row * L::ldo + c] * inv);
    if (half == 0) lse[(b * NH + h) * T + tq] = Mw[row] + logf(l);
  }
}

template <int D>
void launch_flash(bf16* out, float* lse, const bf16* qkv, std::int64_t B, std::int64_t T,
                  std::int64_t NH, bool causal, float scale, cudaStream_t s) {
  static bool configured = false;  // per process; the attribute is per function
  if (!configured) {
    MICS_CHECK_CUDA(cudaFuncSetAttribute(flash_fwd_k<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(FaSmem<D>::bytes)));
    configured = true;
  }
  dim3 grid(static_cast<unsigned>((T + kBr - 1) / kBr), static_cast<unsigned>(NH),
            static_cast<unsigned>(B));
  flash_fwd_k<D><<<grid, kFaWarps * 32, FaSmem<D>::bytes, s>>>(out, lse, qkv, T,
                                                               static_cast<int>(NH), causal, scale);
  MICS_CUDA_LAUNCHED();
}

}  // namespace

bool flash_attention_forward(void* out, float* lse, const void* qkv, std::int64_t B,
                             std::int64_t T, std::int64_t NH, std::int64_t HS, bool causal,
                             cudaStream_t s) {
  const auto addr = reinterpret_cast<std::uintptr_t>(qkv);
  if ((HS != 64 && HS != 128) || addr % 16 != 0 || NH > 65535 || B > 65535) return false;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(HS)));
  if (HS == 64)
    launch_flash<64>(static_cast<bf16*>(out), lse, static_cast<const bf16*>(qkv), B, T, NH,
                     causal, scale, s);
  else
    launch_flash<128>(static_cast<bf16*>(out), lse, static_cast<const bf16*>(qkv), B, T, NH,
                      causal, scale, s);
  return true;
}

}  // namespace mics::device::cuda

// ---------------------------------------------------------------------------------------
// Fused attention backward (bf16, head size 64/128), deterministic: two kernels, each
// output row owned by one warp, so no atomics. Both recompute P = exp(S*scale - lse) tile
// by tile from the forward's log-sum-exp; D = rowsum(dO * O) comes precomputed.
//   dkv kernel: a block owns 64 keys (a warp 16), loops over query tiles:
//               dV += P^T dO,  dK += dS^T Q
//   dq kernel:  a block owns 64 queries (a warp 16), loops over key tiles: dQ += dS K
// with dS = P * (dP - D) * scale, dP = dO V^T. Accumulators are WMMA fragments (no
// per-row rescaling is needed in the backward), staged through shared memory at the end
// to round into bf16.
namespace mics::device::cuda {
namespace {

template <int D> struct FbSmem {
  static constexpr int ldq = D + 8, lds = kBc + 4, ldp = kBc + 8, ldo = D + 4;
  static constexpr std::size_t a = 0;                                   // Q or K rows
  static constexpr std::size_t b = a + sizeof(bf16) * 64 * ldq;         // dO or V rows
  static constexpr std::size_t c = b + sizeof(bf16) * 64 * ldq;         // K or Q tile
  static constexpr std::size_t d = c + sizeof(bf16) * 64 * ldq;         // V or dO tile
  static constexpr std::size_t s = d + sizeof(bf16) * 64 * ldq;         // f32 S / dP
  static constexpr std::size_t p = s + sizeof(float) * kFaWarps * 16 * lds;   // bf16 P / dS
  static constexpr std::size_t v = p + sizeof(bf16) * kFaWarps * 16 * ldp;    // lse, D
  static constexpr std::size_t bytes = v + sizeof(float) * 2 * 64;
  // Final staging of a warp's 16 x D f32 accumulator, over the (then unused) tiles.
  static_assert(sizeof(float) * kFaWarps * 16 * ldo <= s, "staging must fit the tiles");
};

template <int D, int N>
__device__ void stage_rows(bf16* dst, std::int64_t ld, std::int64_t row0, std::int64_t T,
                           wmma::fragment<wmma::accumulator, 16, 16, 16, float> (&acc)[N],
                           float* stage) {
  constexpr int ldo = FbSmem<D>::ldo;
#pragma unroll
  for (int n = 0; n < N; ++n)
    wmma::store_matrix_sync(stage + n * 16, acc[n], ldo, wmma::mem_row_major);
  __syncwarp();
  const int lane = threadIdx.x % 32, row = lane / 2, half = lane % 2;
  if (row0 + row < T)
    for (int c = half * (D / 2); c < (half + 1) * (D / 2); ++c)
      dst[(row0 + row) * ld + c] = __float2bfloat16_rn(stage[row * ldo + c]);
  __syncwarp();
}

// rows [r0, r0+64) of a per-row float vector (length T) into smem; 0 past T.
__device__ void load_vec(float* dst, const float* src, std::int64_t r0, std::int64_t T) {
  for (int i = threadIdx.x; i < 64; i += blockDim.x) dst[i] = r0 + i < T ? src[r0 + i] : 0.f;
}

// S_w (16 x 64, f32, into Sw) = A_w (16 x D rows of `arows` from row a0) times B^T, with
// B the 64 x D tile `brows`.
template <int D>
__device__ void tile_product_nt(float* Sw, const bf16* arows, int a0, const bf16* brows) {
  constexpr int ldq = FbSmem<D>::ldq, lds = FbSmem<D>::lds;
  for (int j = 0; j < kBc / 16; ++j) {
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 0.f);
    for (int d = 0; d < D; d += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
      wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> fb;
      wmma::load_matrix_sync(fa, arows + a0 * ldq + d, ldq);
      wmma::load_matrix_sync(fb, brows + (j * 16) * ldq + d, ldq);
      wmma::mma_sync(acc, fa, fb, acc);
    }
    wmma::store_matrix_sync(Sw + j * 16, acc, lds, wmma::mem_row_major);
  }
}

// acc[n] += Pw (16 x 64, bf16) times the 64 x D tile `rows`.
template <int D>
__device__ void accumulate_pv(wmma::fragment<wmma::accumulator, 16, 16, 16, float> (&acc)[D / 16],
                              const bf16* Pw, const bf16* rows) {
  constexpr int ldq = FbSmem<D>::ldq, ldp = FbSmem<D>::ldp;
#pragma unroll
  for (int n = 0; n < D / 16; ++n)
#pragma unroll
    for (int kk = 0; kk < kBc / 16; ++kk) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
      wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> fb;
      wmma::load_matrix_sync(fa, Pw + kk * 16, ldp);
      wmma::load_matrix_sync(fb, rows + (kk * 16) * ldq + n * 16, ldq);
      wmma::mma_sync(acc[n], fa, fb, acc[n]);
    }
}

template <int D>
__global__ void __launch_bounds__(kFaWarps * 32)
flash_bwd_dkv_k(bf16* dqkv, const bf16* qkv, const bf16* dout, const float* lse,
                const float* Dvec, std::int64_t T, int NH, bool causal, float scale) {
  using L = FbSmem<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* Ks = reinterpret_cast<bf16*>(smem + L::a);
  bf16* Vs = reinterpret_cast<bf16*>(smem + L::b);
  bf16* Qs = reinterpret_cast<bf16*>(smem + L::c);
  bf16* dOs = reinterpret_cast<bf16*>(smem + L::d);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, row = lane / 2, half = lane % 2;
  float* Sw = reinterpret_cast<float*>(smem + L::s) + warp * 16 * L::lds;
  bf16* Pw = reinterpret_cast<bf16*>(smem + L::p) + warp * 16 * L::ldp;
  float* lse_s = reinterpret_cast<float*>(smem + L::v);
  float* D_s = lse_s + 64;

  const std::int64_t k0 = static_cast<std::int64_t>(blockIdx.x) * 64;
  const int h = blockIdx.y;
  const std::int64_t b = blockIdx.z;
  const std::int64_t C = static_cast<std::int64_t>(NH) * D, C3 = 3 * C;
  const std::int64_t qoff = b * T * C3 + static_cast<std::int64_t>(h) * D;
  const bf16* qbase = qkv + qoff;
  const bf16* dobase = dout + b * T * C + static_cast<std::int64_t>(h) * D;
  const float* lrow = lse + (b * NH + h) * T;
  const float* drow = Dvec + (b * NH + h) * T;

  load_tile<D>(Ks, qbase + C, k0, T, C3);
  load_tile<D>(Vs, qbase + 2 * C, k0, T, C3);
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> dK[D / 16], dV[D / 16];
#pragma unroll
  for (int n = 0; n < D / 16; ++n) {
    wmma::fill_fragment(dK[n], 0.f);
    wmma::fill_fragment(dV[n], 0.f);
  }
  const std::int64_t tk = k0 + warp * 16 + row;  // this lane's key

  for (std::int64_t q0 = causal ? k0 : 0; q0 < T; q0 += 64) {
    __syncthreads();
    load_tile<D>(Qs, qbase, q0, T, C3);
    load_tile<D>(dOs, dobase, q0, T, C);
    load_vec(lse_s, lrow, q0, T);
    load_vec(D_s, drow, q0, T);
    __syncthreads();

    tile_product_nt<D>(Sw, Ks, warp * 16, Qs);  // S^T: keys x queries
    __syncwarp();
    float pv[kBc / 2];
#pragma unroll
    for (int c = 0; c < kBc / 2; ++c) {
      const int col = half * (kBc / 2) + c;
      const std::int64_t tq = q0 + col;
      const bool ok = tq < T && tk < T && (!causal || tk <= tq);
      pv[c] = ok ? __expf(Sw[row * L::lds + col] * scale - lse_s[col]) : 0.f;
      Pw[row * L::ldp + col] = __float2bfloat16_rn(pv[c]);
    }
    __syncwarp();
    accumulate_pv<D>(dV, Pw, dOs);                // dV += P^T dO
    tile_product_nt<D>(Sw, Vs, warp * 16, dOs);   // dP^T = V dO^T
    __syncwarp();
#pragma unroll
    for (int c = 0; c < kBc / 2; ++c) {
      const int col = half * (kBc / 2) + c;
      Pw[row * L::ldp + col] =
          __float2bfloat16_rn(pv[c] * (Sw[row * L::lds + col] - D_s[col]) * scale);
    }
    __syncwarp();
    accumulate_pv<D>(dK, Pw, Qs);                 // dK += dS^T Q
  }
  __syncthreads();  // the tiles become staging space
  float* stage = reinterpret_cast<float*>(smem) + warp * 16 * L::ldo;
  bf16* dbase = dqkv + qoff;
  stage_rows<D>(dbase + C, C3, k0 + warp * 16, T, dK, stage);
  stage_rows<D>(dbase + 2 * C, C3, k0 + warp * 16, T, dV, stage);
}

template <int D>
__global__ void __launch_bounds__(kFaWarps * 32)
flash_bwd_dq_k(bf16* dqkv, const bf16* qkv, const bf16* dout, const float* lse,
               const float* Dvec, std::int64_t T, int NH, bool causal, float scale) {
  using L = FbSmem<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* Qs = reinterpret_cast<bf16*>(smem + L::a);
  bf16* dOs = reinterpret_cast<bf16*>(smem + L::b);
  bf16* Ks = reinterpret_cast<bf16*>(smem + L::c);
  bf16* Vs = reinterpret_cast<bf16*>(smem + L::d);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, row = lane / 2, half = lane % 2;
  float* Sw = reinterpret_cast<float*>(smem + L::s) + warp * 16 * L::lds;
  bf16* Pw = reinterpret_cast<bf16*>(smem + L::p) + warp * 16 * L::ldp;
  float* lse_s = reinterpret_cast<float*>(smem + L::v);
  float* D_s = lse_s + 64;

  const std::int64_t q0 = static_cast<std::int64_t>(blockIdx.x) * 64;
  const int h = blockIdx.y;
  const std::int64_t b = blockIdx.z;
  const std::int64_t C = static_cast<std::int64_t>(NH) * D, C3 = 3 * C;
  const std::int64_t qoff = b * T * C3 + static_cast<std::int64_t>(h) * D;
  const bf16* qbase = qkv + qoff;

  load_tile<D>(Qs, qbase, q0, T, C3);
  load_tile<D>(dOs, dout + b * T * C + static_cast<std::int64_t>(h) * D, q0, T, C);
  load_vec(lse_s, lse + (b * NH + h) * T, q0, T);
  load_vec(D_s, Dvec + (b * NH + h) * T, q0, T);
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> dQ[D / 16];
#pragma unroll
  for (int n = 0; n < D / 16; ++n) wmma::fill_fragment(dQ[n], 0.f);
  const int qr = warp * 16 + row;  // this lane's query within the tile
  const std::int64_t tq = q0 + qr;

  const std::int64_t kv_end = causal ? min(T, q0 + 64) : T;
  for (std::int64_t k0 = 0; k0 < kv_end; k0 += 64) {
    __syncthreads();
    load_tile<D>(Ks, qbase + C, k0, T, C3);
    load_tile<D>(Vs, qbase + 2 * C, k0, T, C3);
    __syncthreads();

    tile_product_nt<D>(Sw, Qs, warp * 16, Ks);  // S: queries x keys
    __syncwarp();
    float pv[kBc / 2];
#pragma unroll
    for (int c = 0; c < kBc / 2; ++c) {
      const int col = half * (kBc / 2) + c;
      const std::int64_t tk = k0 + col;
      const bool ok = tk < T && tq < T && (!causal || tk <= tq);
      pv[c] = ok ? __expf(Sw[row * L::lds + col] * scale - lse_s[qr]) : 0.f;
    }
    __syncwarp();  // S is read before dP overwrites it
    tile_product_nt<D>(Sw, dOs, warp * 16, Vs);  // dP = dO V^T
    __syncwarp();
#pragma unroll
    for (int c = 0; c < kBc / 2; ++c) {
      const int col = half * (kBc / 2) + c;
      Pw[row * L::ldp + col] =
          __float2bfloat16_rn(pv[c] * (Sw[row * L::lds + col] - D_s[qr]) * scale);
    }
    __syncwarp();
    accumulate_pv<D>(dQ, Pw, Ks);  // dQ += dS K
  }
  __syncthreads();
  float* stage = reinterpret_cast<float*>(smem) + warp * 16 * L::ldo;
  stage_rows<D>(dqkv + qoff, C3, q0 + warp * 16, T, dQ, stage);
}

template <int D>
void launch_flash_bwd(bf16* dqkv, const bf16* qkv, const bf16* dout, const float* lse,
                      const float* Dvec, std::int64_t B, std::int64_t T, std::int64_t NH,
                      bool causal, float scale, cudaStream_t s) {
  static bool configured = false;
  if (!configured) {
    MICS_CHECK_CUDA(cudaFuncSetAttribute(flash_bwd_dkv_k<D>,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(FbSmem<D>::bytes)));
    MICS_CHECK_CUDA(cudaFuncSetAttribute(flash_bwd_dq_k<D>,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(FbSmem<D>::bytes)));
    configured = true;
  }
  dim3 grid(static_cast<unsigned>((T + 63) / 64), static_cast<unsigned>(NH),
            static_cast<unsigned>(B));
  flash_bwd_dkv_k<D><<<grid, kFaWarps * 32, FbSmem<D>::bytes, s>>>(
      dqkv, qkv, dout, lse, Dvec, T, static_cast<int>(NH), causal, scale);
  MICS_CUDA_LAUNCHED();
  flash_bwd_dq_k<D><<<grid, kFaWarps * 32, FbSmem<D>::bytes, s>>>(
      dqkv, qkv, dout, lse, Dvec, T, static_cast<int>(NH), causal, scale);
  MICS_CUDA_LAUNCHED();
}

}  // namespace

bool flash_attention_backward(void* dqkv, const void* dout, const void* qkv, const float* lse,
                              const float* Dvec, std::int64_t B, std::int64_t T,
                              std::int64_t NH, std::int64_t HS, bool causal, cudaStream_t s) {
  const auto a1 = reinterpret_cast<std::uintptr_t>(qkv), a2 = reinterpret_cast<std::uintptr_t>(dout);
  if ((HS != 64 && HS != 128) || a1 % 16 != 0 || a2 % 16 != 0 || NH > 65535 || B > 65535)
    return false;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(HS)));
  if (HS == 64)
    launch_flash_bwd<64>(static_cast<bf16*>(dqkv), static_cast<const bf16*>(qkv),
                         static_cast<const bf16*>(dout), lse, Dvec, B, T, NH, causal, scale, s);
  else
    launch_flash_bwd<128>(static_cast<bf16*>(dqkv), static_cast<const bf16*>(qkv),
                          static_cast<const bf16*>(dout), lse, Dvec, B, T, NH, causal, scale, s);
  return true;
}

}  // namespace mics::device::cuda
