// bf16 GEMM: an AMX tile path and a portable fallback (see bf16_gemm.hpp).
//
// Only the functions marked MICS_AMX_TARGET are compiled for AMX and AVX-512, through a
// target attribute rather than file-wide flags: the rest of this file (the fallback, the
// dispatch, the cpuid query) must run on CPUs without them, and file-wide -mavx512f would
// let GCC use AVX-512 anywhere in it. The AMX functions run only after amx_bf16_usable().
#include "bf16_gemm.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

#include "vector_clones.hpp"

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__)
#define MICS_HAVE_AMX_CODE 1
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#define MICS_AMX_TARGET \
  __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512dq")))
#else
#define MICS_HAVE_AMX_CODE 0
#endif

namespace mics::device {
namespace {

using i64 = std::int64_t;

// A 64-byte aligned scratch array that only grows: one per thread and purpose, so that a
// steady stream of calls allocates nothing.
template <class T>
class Scratch {
 public:
  T* get(std::size_t n) {
    if (n > capacity_) {
      ptr_.reset(static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{64})));
      capacity_ = n;
    }
    return ptr_.get();
  }

 private:
  struct Free {
    void operator()(T* p) const { ::operator delete(p, std::align_val_t{64}); }
  };
  std::unique_ptr<T, Free> ptr_;
  std::size_t capacity_ = 0;
};

// op(X) of a stored bf16 matrix: element (r, c) of the logical operand.
struct Operand {
  const std::uint16_t* p;
  i64 ld;
  bool trans;
  std::uint16_t at(i64 r, i64 c) const { return trans ? p[c * ld + r] : p[r * ld + c]; }
};

const std::uint16_t* bits_of(const bf16_t* x) { return &x->bits; }

float widen(std::uint16_t b) { return bf16_to_float(bf16_t{b}); }

// The one epilogue of both paths: alpha * sum, plus beta * C unless beta == 0 (then C is
// not read, so NaN there cannot leak), rounded once to C's type.
void store_row(float* c, const float* acc, i64 n, float alpha, float beta) {
  if (beta == 0.0f) {
    for (i64 j = 0; j < n; ++j) c[j] = alpha * acc[j];
  } else {
    for (i64 j = 0; j < n; ++j) c[j] = alpha * acc[j] + beta * c[j];
  }
}

void store_row(bf16_t* c, const float* acc, i64 n, float alpha, float beta) {
  if (beta == 0.0f) {
    for (i64 j = 0; j < n; ++j) c[j] = float_to_bf16(alpha * acc[j]);
  } else {
    for (i64 j = 0; j < n; ++j) c[j] = float_to_bf16(alpha * acc[j] + beta * bf16_to_float(c[j]));
  }
}

// K == 0: every sum is empty.
template <class CT>
void store_empty_sums(i64 M, i64 N, float alpha, float beta, CT* C, i64 ldc) {
  Scratch<float> zeros_buf;
  float* zeros = zeros_buf.get(static_cast<std::size_t>(N));
  std::fill(zeros, zeros + N, 0.0f);
  for (i64 i = 0; i < M; ++i) store_row(C + i * ldc, zeros, N, alpha, beta);
}

// ---------------------------------------------------------------------------------------
// Fallback: operands widened to f32 in blocks, then each element of C summed over k = 0,
// 1, ..., K-1 one product at a time. A product of two bf16 values is exact in f32, so a
// contracted (FMA) and an uncontracted add give the same sum: the order is the only thing
// that matters, and it is the same for every element.

constexpr int kFbRows = 4;
constexpr int kFbCols = 32;

// acc[r][j] = sum_k a[r][k] * b[k][j] for a block of kFbRows x kFbCols.
MICS_VECTOR_CLONES
void fallback_block(const float* a, const float* b, i64 K, float* acc) {
  float s[kFbRows][kFbCols] = {};
  for (i64 k = 0; k < K; ++k) {
    const float* bk = b + k * kFbCols;
    for (int r = 0; r < kFbRows; ++r) {
      const float ar = a[r * K + k];
      for (int j = 0; j < kFbCols; ++j) s[r][j] += ar * bk[j];
    }
  }
  std::memcpy(acc, s, sizeof s);
}

template <class CT>
void fallback_gemm(i64 M, i64 N, i64 K, float alpha, Operand a, Operand b, float beta, CT* C,
                   i64 ldc) {
  thread_local Scratch<float> a_buf, b_buf, acc_buf;
  float* bw = b_buf.get(static_cast<std::size_t>(K * kFbCols));
  float* aw = a_buf.get(static_cast<std::size_t>(K * kFbRows));
  float* acc = acc_buf.get(kFbRows * kFbCols);
  for (i64 j0 = 0; j0 < N; j0 += kFbCols) {
    const i64 nc = std::min<i64>(kFbCols, N - j0);
    for (i64 k = 0; k < K; ++k)
      for (int j = 0; j < kFbCols; ++j) bw[k * kFbCols + j] = j < nc ? widen(b.at(k, j0 + j)) : 0.0f;
    for (i64 i0 = 0; i0 < M; i0 += kFbRows) {
      const i64 mr = std::min<i64>(kFbRows, M - i0);
      for (int r = 0; r < kFbRows; ++r)
        for (i64 k = 0; k < K; ++k) aw[r * K + k] = r < mr ? widen(a.at(i0 + r, k)) : 0.0f;
      fallback_block(aw, bw, K, acc);
      for (i64 r = 0; r < mr; ++r) store_row(C + (i0 + r) * ldc + j0, acc + r * kFbCols, nc, alpha, beta);
    }
  }
}

template <class CT>
void fallback_entry(bool ta, bool tb, i64 M, i64 N, i64 K, float alpha, const bf16_t* A,
                    i64 lda, const bf16_t* B, i64 ldb, float beta, CT* C, i64 ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) return store_empty_sums(M, N, alpha, beta, C, ldc);
  fallback_gemm(M, N, K, alpha, Operand{bits_of(A), lda, ta}, Operand{bits_of(B), ldb, tb}, beta,
                C, ldc);
}

#if MICS_HAVE_AMX_CODE
// ---------------------------------------------------------------------------------------
// AMX path. Tiles are 16 rows of 64 bytes. op(A) is packed into 16 x 32 bf16 tiles, op(B)
// into tiles of 16 K-pairs x 16 columns (the pair of rows 2p, 2p+1 of a 32-deep slice
// interleaved, as tdpbf16ps reads it), M, N and K padded with zeros. A block of packed A
// is [row tile][k tile][16][32]; a panel of packed B is [column tile][k tile][16][16][2].
// Each tdpbf16ps adds, per element, the 32 products of one k tile in the hardware's order,
// and the k tiles run 0, 1, 2, ... for every element whatever the blocking: the f32
// accumulators go to memory and back between K blocks unchanged, so neither the blocking
// nor the padding (zeros add +0) changes a sum.

constexpr i64 kTileElems = 16 * 32;       // bf16 per tile
constexpr i64 kKcTiles = 8;               // k tiles per K block: a pair of B slices is 16 KiB
constexpr i64 kABlockBytes = 512 * 1024;  // packed A block, kept in L2 with the B panel
constexpr i64 kBPanelBytes = 256 * 1024;

bool query_amx() {
  if (const char* env = std::getenv("MICS_BF16_AMX"); env != nullptr && std::strcmp(env, "0") == 0)
    return false;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(1, &a, &b, &c, &d) == 0 || (c & (1u << 27)) == 0) return false;  // OSXSAVE
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d) == 0) return false;
  const bool amx = (d & (1u << 24)) != 0 && (d & (1u << 22)) != 0;  // amx-tile, amx-bf16
  const bool avx512 = (b & (1u << 16)) != 0 && (b & (1u << 17)) != 0 && (b & (1u << 30)) != 0 &&
                      (b & (1u << 31)) != 0;  // f, dq, bw, vl: the packing code may use them
  if (!amx || !avx512) return false;
  unsigned lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  const unsigned long long xcr0 = (static_cast<unsigned long long>(hi) << 32) | lo;
  const unsigned long long need = 0x6ull | 0xe0ull | (3ull << 17);  // SSE/AVX, AVX-512, tiles
  if ((xcr0 & need) != need) return false;
  constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
}

// The tile configuration is thread state that other code in the thread could change, so
// every call loads it (one instruction) rather than trusting a thread_local flag.
MICS_AMX_TARGET void load_tile_config() {
  alignas(64) unsigned char cfg[64] = {};
  cfg[0] = 1;  // palette 1
  for (int t = 0; t < 8; ++t) {
    const std::uint16_t colsb = 64;
    std::memcpy(cfg + 16 + 2 * t, &colsb, 2);
    cfg[48 + t] = 16;
  }
  __asm__ volatile("" ::: "memory");  // the intrinsic's asm names only 8 bytes of cfg
  _tile_loadconfig(cfg);
}

// Packs rows [i0, i0 + rows) of op(A), all of K, into row tiles of 16 (rows padded).
MICS_AMX_TARGET void pack_a(const Operand& a, i64 M, i64 K, i64 i0, i64 rows, i64 kt_count,
                            std::uint16_t* dst) {
  const i64 mt = (rows + 15) / 16;
  for (i64 t = 0; t < mt; ++t) {
    for (i64 kt = 0; kt < kt_count; ++kt) {
      std::uint16_t* tile = dst + (t * kt_count + kt) * kTileElems;
      const i64 ib = i0 + t * 16, kb = kt * 32;
      const bool full = ib + 16 <= std::min(M, i0 + rows) && kb + 32 <= K;
      if (full && !a.trans) {
        for (i64 r = 0; r < 16; ++r) std::memcpy(tile + r * 32, a.p + (ib + r) * a.ld + kb, 64);
      } else if (full) {
        for (i64 k = 0; k < 32; ++k) {
          const std::uint16_t* src = a.p + (kb + k) * a.ld + ib;
          for (i64 r = 0; r < 16; ++r) tile[r * 32 + k] = src[r];
        }
      } else {
        for (i64 r = 0; r < 16; ++r)
          for (i64 k = 0; k < 32; ++k) {
            const bool in = ib + r < i0 + rows && ib + r < M && kb + k < K;
            tile[r * 32 + k] = in ? a.at(ib + r, kb + k) : 0;
          }
      }
    }
  }
}

// Packs columns [j0, j0 + cols) of op(B), all of K, into VNNI tiles of 16 columns.
MICS_AMX_TARGET void pack_b(const Operand& b, i64 N, i64 K, i64 j0, i64 cols, i64 kt_count,
                            std::uint16_t* dst) {
  const i64 nt = (cols + 15) / 16;
  for (i64 t = 0; t < nt; ++t) {
    for (i64 kt = 0; kt < kt_count; ++kt) {
      std::uint16_t* tile = dst + (t * kt_count + kt) * kTileElems;
      const i64 jb = j0 + t * 16, kb = kt * 32;
      const bool full = jb + 16 <= std::min(N, j0 + cols) && kb + 32 <= K;
      if (full && b.trans) {
        // Stored [N, K]: a column's 32 k values are contiguous, 16 pairs of 32 bits.
        for (i64 n = 0; n < 16; ++n) {
          std::uint32_t pairs[16];
          std::memcpy(pairs, b.p + (jb + n) * b.ld + kb, 64);
          for (i64 p = 0; p < 16; ++p) std::memcpy(tile + (p * 16 + n) * 2, &pairs[p], 4);
        }
      } else if (full) {
        for (i64 p = 0; p < 16; ++p) {
          const std::uint16_t* r0 = b.p + (kb + 2 * p) * b.ld + jb;
          const std::uint16_t* r1 = r0 + b.ld;
          for (i64 n = 0; n < 16; ++n) {
            tile[(p * 16 + n) * 2] = r0[n];
            tile[(p * 16 + n) * 2 + 1] = r1[n];
          }
        }
      } else {
        for (i64 p = 0; p < 16; ++p)
          for (i64 n = 0; n < 16; ++n)
            for (i64 e = 0; e < 2; ++e) {
              const i64 k = kb + 2 * p + e, j = jb + n;
              const bool in = j < j0 + cols && j < N && k < K;
              tile[(p * 16 + n) * 2 + e] = in ? b.at(k, j) : 0;
            }
      }
    }
  }
}

// Accumulates R x C tiles (R, C in {1, 2}) of 16 x 16 over `kts` k tiles into the f32
// block at w (row stride ldw floats), starting from w's values or from zero.
template <int R, int C>
MICS_AMX_TARGET void tile_block(const std::uint16_t* a0, const std::uint16_t* a1,
                                const std::uint16_t* b0, const std::uint16_t* b1, i64 kts,
                                float* w, i64 ldw, bool from_w) {
  const long ws = static_cast<long>(ldw * 4);
  float* w1 = w + 16 * ldw;
  __asm__ volatile("" ::: "memory");  // tileloadd's asm does not say that it reads memory
  if (from_w) {
    _tile_loadd(0, w, ws);
    if constexpr (C == 2) _tile_loadd(1, w + 16, ws);
    if constexpr (R == 2) _tile_loadd(2, w1, ws);
    if constexpr (R == 2 && C == 2) _tile_loadd(3, w1 + 16, ws);
  } else {
    _tile_zero(0);
    if constexpr (C == 2) _tile_zero(1);
    if constexpr (R == 2) _tile_zero(2);
    if constexpr (R == 2 && C == 2) _tile_zero(3);
  }
  for (i64 kt = 0; kt < kts; ++kt) {
    const i64 off = kt * kTileElems;
    _tile_loadd(4, a0 + off, 64);
    _tile_loadd(6, b0 + off, 64);
    _tile_dpbf16ps(0, 4, 6);
    if constexpr (C == 2) {
      _tile_loadd(7, b1 + off, 64);
      _tile_dpbf16ps(1, 4, 7);
    }
    if constexpr (R == 2) {
      _tile_loadd(5, a1 + off, 64);
      _tile_dpbf16ps(2, 5, 6);
    }
    if constexpr (R == 2 && C == 2) _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, w, ws);
  if constexpr (C == 2) _tile_stored(1, w + 16, ws);
  if constexpr (R == 2) _tile_stored(2, w1, ws);
  if constexpr (R == 2 && C == 2) _tile_stored(3, w1 + 16, ws);
}

// One K block over a packed A block (mt row tiles) and B panel (nt column tiles): pairs of
// column tiles outside, so that their B slices stay in L1 while the row tiles stream by.
MICS_AMX_TARGET void amx_k_block(const std::uint16_t* ap, const std::uint16_t* bp, i64 mt,
                                 i64 nt, i64 kt_count, i64 k0, i64 kts, float* w, i64 ldw) {
  const bool from_w = k0 > 0;
  for (i64 jt = 0; jt < nt; jt += 2) {
    const std::uint16_t* b0 = bp + (jt * kt_count + k0) * kTileElems;
    const std::uint16_t* b1 = b0 + kt_count * kTileElems;
    const bool two_c = jt + 1 < nt;
    for (i64 it = 0; it < mt; it += 2) {
      const std::uint16_t* a0 = ap + (it * kt_count + k0) * kTileElems;
      const std::uint16_t* a1 = a0 + kt_count * kTileElems;
      float* wb = w + it * 16 * ldw + jt * 16;
      const bool two_r = it + 1 < mt;
      if (two_r && two_c) tile_block<2, 2>(a0, a1, b0, b1, kts, wb, ldw, from_w);
      else if (two_r) tile_block<2, 1>(a0, a1, b0, b1, kts, wb, ldw, from_w);
      else if (two_c) tile_block<1, 2>(a0, a1, b0, b1, kts, wb, ldw, from_w);
      else tile_block<1, 1>(a0, a1, b0, b1, kts, wb, ldw, from_w);
    }
  }
}

i64 round_down32(i64 x) { return x / 32 * 32; }

template <class CT>
MICS_AMX_TARGET void amx_gemm(i64 M, i64 N, i64 K, float alpha, Operand a, Operand b,
                              float beta, CT* C, i64 ldc) {
  const i64 kt_count = (K + 31) / 32, kp = kt_count * 32;
  const i64 mc = std::clamp<i64>(round_down32(kABlockBytes / (2 * kp)), 32, 1024);
  const i64 nc = std::clamp<i64>(round_down32(kBPanelBytes / (2 * kp)), 32, 512);
  const i64 mc_used = std::min(mc, (M + 15) / 16 * 16), nc_used = std::min(nc, (N + 15) / 16 * 16);
  thread_local Scratch<std::uint16_t> a_buf, b_buf;
  thread_local Scratch<float> w_buf;
  std::uint16_t* ap = a_buf.get(static_cast<std::size_t>(mc_used * kp));
  std::uint16_t* bp = b_buf.get(static_cast<std::size_t>(nc_used * kp));
  float* w = w_buf.get(static_cast<std::size_t>(mc_used * nc_used));
  load_tile_config();
  for (i64 i0 = 0; i0 < M; i0 += mc) {
    const i64 rows = std::min(mc, M - i0), mt = (rows + 15) / 16;
    pack_a(a, M, K, i0, rows, kt_count, ap);
    for (i64 j0 = 0; j0 < N; j0 += nc) {
      const i64 cols = std::min(nc, N - j0), nt = (cols + 15) / 16;
      pack_b(b, N, K, j0, cols, kt_count, bp);
      for (i64 k0 = 0; k0 < kt_count; k0 += kKcTiles)
        amx_k_block(ap, bp, mt, nt, kt_count, k0, std::min(kKcTiles, kt_count - k0), w, nc_used);
      __asm__ volatile("" ::: "memory");
      for (i64 r = 0; r < rows; ++r)
        store_row(C + (i0 + r) * ldc + j0, w + r * nc_used, cols, alpha, beta);
    }
  }
}
#endif  // MICS_HAVE_AMX_CODE

template <class CT>
void gemm_entry(bool ta, bool tb, i64 M, i64 N, i64 K, float alpha, const bf16_t* A, i64 lda,
                const bf16_t* B, i64 ldb, float beta, CT* C, i64 ldc) {
#if MICS_HAVE_AMX_CODE
  if (amx_bf16_usable() && M > 0 && N > 0 && K > 0) {
    amx_gemm(M, N, K, alpha, Operand{bits_of(A), lda, ta}, Operand{bits_of(B), ldb, tb}, beta, C,
             ldc);
    return;
  }
#endif
  fallback_entry(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace

bool amx_bf16_usable() {
#if MICS_HAVE_AMX_CODE
  static const bool usable = query_amx();  // a magic static: asked once, thread-safely
  return usable;
#else
  return false;
#endif
}

void gemm_bf16(bool ta, bool tb, i64 M, i64 N, i64 K, float alpha, const bf16_t* A, i64 lda,
               const bf16_t* B, i64 ldb, float beta, float* C, i64 ldc) {
  gemm_entry(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void gemm_bf16(bool ta, bool tb, i64 M, i64 N, i64 K, float alpha, const bf16_t* A, i64 lda,
               const bf16_t* B, i64 ldb, float beta, bf16_t* C, i64 ldc) {
  gemm_entry(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void gemm_bf16_fallback(bool ta, bool tb, i64 M, i64 N, i64 K, float alpha, const bf16_t* A,
                        i64 lda, const bf16_t* B, i64 ldb, float beta, float* C, i64 ldc) {
  fallback_entry(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void gemm_bf16_fallback(bool ta, bool tb, i64 M, i64 N, i64 K, float alpha, const bf16_t* A,
                        i64 lda, const bf16_t* B, i64 ldb, float beta, bf16_t* C, i64 ldc) {
  fallback_entry(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace mics::device
