// bf16 GEMM: an AMX tile path, an AVX-512 BF16 path and a portable one (bf16_gemm.hpp).
//
// Only the functions marked with a MICS_*_TARGET are compiled for AVX-512, AMX or
// AVX-512 BF16, through target attributes rather than file-wide flags: the rest of this
// file (the portable path, the dispatch, the cpuid query) must run on CPUs without them,
// and file-wide -mavx512f would let GCC use AVX-512 anywhere in it. Each runs only after
// bf16_gemm_path_usable() said yes for its path.
#include "bf16_gemm.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>

#include "mics/core/error.hpp"

#include "vector_clones.hpp"

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__)
#define MICS_HAVE_PACKED_PATHS 1
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#define MICS_AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#define MICS_AMX_TARGET \
  __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512dq")))
#define MICS_DPBF16_TARGET \
  __attribute__((target("avx512bf16,avx512f,avx512bw,avx512vl,avx512dq")))
#else
#define MICS_HAVE_PACKED_PATHS 0
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
// 1, ..., K-1 one product at a time, the same order for every element. (A product of two
// bf16 values is exact in f32 unless it underflows, so contracting into FMA would not
// change the sum either.)

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

// Widens op(B)'s columns [j0, j0 + cols) into sub-panels of kFbCols: bw[sub][k][kFbCols].
void widen_b_panel(const Operand& b, i64 K, i64 j0, i64 cols, float* bw) {
  for (i64 sub = 0; sub * kFbCols < cols; ++sub) {
    float* dst = bw + sub * K * kFbCols;
    const i64 jb = j0 + sub * kFbCols, nc = std::min<i64>(kFbCols, j0 + cols - jb);
    for (i64 k = 0; k < K; ++k)
      for (int j = 0; j < kFbCols; ++j)
        dst[k * kFbCols + j] = j < nc ? widen(b.at(k, jb + j)) : 0.0f;
  }
}

template <class CT>
void fallback_gemm(i64 M, i64 N, i64 K, float alpha, Operand a, Operand b, float beta, CT* C,
                   i64 ldc) {
  // A panel of B columns (up to 256, about 2 MiB of f32) is widened once and swept by
  // every block of kFbRows rows, whose widened A rows serve the whole panel.
  const i64 panel = std::clamp<i64>((2 << 20) / (4 * K) / kFbCols * kFbCols, kFbCols, 256);
  const i64 panel_used = std::min(panel, (N + kFbCols - 1) / kFbCols * kFbCols);
  thread_local Scratch<float> a_buf, b_buf, acc_buf;
  float* bw = b_buf.get(static_cast<std::size_t>(K * panel_used));
  float* aw = a_buf.get(static_cast<std::size_t>(K * kFbRows));
  float* acc = acc_buf.get(kFbRows * kFbCols);
  for (i64 j0 = 0; j0 < N; j0 += panel) {
    const i64 cols = std::min(panel, N - j0);
    widen_b_panel(b, K, j0, cols, bw);
    for (i64 i0 = 0; i0 < M; i0 += kFbRows) {
      const i64 mr = std::min<i64>(kFbRows, M - i0);
      for (int r = 0; r < kFbRows; ++r)
        for (i64 k = 0; k < K; ++k) aw[r * K + k] = r < mr ? widen(a.at(i0 + r, k)) : 0.0f;
      for (i64 sub = 0; sub * kFbCols < cols; ++sub) {
        const i64 j = j0 + sub * kFbCols, nc = std::min<i64>(kFbCols, N - j);
        fallback_block(aw, bw + sub * K * kFbCols, K, acc);
        for (i64 r = 0; r < mr; ++r)
          store_row(C + (i0 + r) * ldc + j, acc + r * kFbCols, nc, alpha, beta);
      }
    }
  }
}

#if MICS_HAVE_PACKED_PATHS
// ---------------------------------------------------------------------------------------
// Packed paths: AMX and AVX-512 BF16 share packing and blocking; only the inner product
// of one K block differs. Tiles are 16 rows of 64 bytes. op(A) is packed into 16 x 32 bf16
// tiles, op(B) into tiles of 16 K-pairs x 16 columns (the pair of rows 2p, 2p+1 of a
// 32-deep slice interleaved, as tdpbf16ps and vdpbf16ps read it), M, N and K padded with
// zeros. A block of packed A
// is [row tile][k tile][16][32]; a panel of packed B is [column tile][k tile][16][16][2].
// Each tdpbf16ps adds, per element, the 32 products of one k tile in the hardware's order,
// and the k tiles run 0, 1, 2, ... for every element whatever the blocking: the f32
// accumulators go to memory and back between K blocks unchanged, so neither the blocking
// nor the padding (zeros add +0) changes a sum.

constexpr i64 kTileElems = 16 * 32;  // bf16 per tile
// Block sizes, measured with bench_bf16_gemm on the development Xeon (48 KiB L1d and 2 MiB
// L2 per core); the kernel itself runs at about 1-1.2 TFLOP/s there on L2 data. Only one K
// block's slices of the packed A block, B panel and W need to stay in L2; the blocks
// themselves may be larger.
constexpr i64 kKcTiles = 8;             // k tiles per K block: a pair of B slices is 16 KiB
constexpr i64 kPanelCols = 256;         // columns of a packed B panel
constexpr i64 kABlockBytes = 2 << 20;   // packed A block (rows x K chunk)
constexpr i64 kWBytes = 4 << 20;        // W of a row block when K is chunked
constexpr i64 kMaxChunkTiles = 128;     // K up to 4096 in one chunk
constexpr i64 kLongChunkTiles = 64;     // else chunks of at most 2048
constexpr i64 kStreamBytes = 32 << 20;  // C written with non-temporal stores from this size

// AVX-512 F, DQ, BW, VL (the packing code uses them) and the OS saving their state.
bool query_avx512() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(1, &a, &b, &c, &d) == 0 || (c & (1u << 27)) == 0) return false;  // OSXSAVE
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d) == 0) return false;
  const bool avx512 = (b & (1u << 16)) != 0 && (b & (1u << 17)) != 0 && (b & (1u << 30)) != 0 &&
                      (b & (1u << 31)) != 0;
  if (!avx512) return false;
  unsigned lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (lo & 0xe6u) == 0xe6u;  // SSE, AVX and the three AVX-512 state components
}

bool query_dpbf16() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!query_avx512() || __get_cpuid_count(7, 1, &a, &b, &c, &d) == 0) return false;
  return (a & (1u << 5)) != 0;  // AVX512_BF16
}

bool query_amx() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!query_avx512() || __get_cpuid_count(7, 0, &a, &b, &c, &d) == 0) return false;
  if ((d & (1u << 24)) == 0 || (d & (1u << 22)) == 0) return false;  // amx-tile, amx-bf16
  unsigned lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  if ((lo & (3u << 17)) != (3u << 17)) return false;  // TILECFG and TILEDATA state
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

// Transposes a 16 x 16 matrix of 32-bit elements held one row per register: unpack
// pairs of rows, then pairs of pairs, then exchange 128-bit lanes. (The zero-masked forms
// of the unpacks: GCC 12's unmasked ones warn of an uninitialised variable in its header.)
MICS_AVX512_TARGET void transpose16(__m512i r[16]) {
  const __mmask16 kAll16 = 0xffff;
  const __mmask8 kAll8 = 0xff;
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_maskz_unpacklo_epi32(kAll16, r[i], r[i + 1]);
    t[i + 1] = _mm512_maskz_unpackhi_epi32(kAll16, r[i], r[i + 1]);
  }
  __m512i v[4][4];  // v[g][c], lane L: input column 4L + c, rows 4g .. 4g + 3
  for (int g = 0; g < 4; ++g) {
    v[g][0] = _mm512_maskz_unpacklo_epi64(kAll8, t[4 * g], t[4 * g + 2]);
    v[g][1] = _mm512_maskz_unpackhi_epi64(kAll8, t[4 * g], t[4 * g + 2]);
    v[g][2] = _mm512_maskz_unpacklo_epi64(kAll8, t[4 * g + 1], t[4 * g + 3]);
    v[g][3] = _mm512_maskz_unpackhi_epi64(kAll8, t[4 * g + 1], t[4 * g + 3]);
  }
  for (int c = 0; c < 4; ++c) {
    const __m512i x0 = _mm512_maskz_shuffle_i32x4(kAll16, v[0][c], v[1][c], 0x44);
    const __m512i x1 = _mm512_maskz_shuffle_i32x4(kAll16, v[0][c], v[1][c], 0xee);
    const __m512i x2 = _mm512_maskz_shuffle_i32x4(kAll16, v[2][c], v[3][c], 0x44);
    const __m512i x3 = _mm512_maskz_shuffle_i32x4(kAll16, v[2][c], v[3][c], 0xee);
    r[c] = _mm512_maskz_shuffle_i32x4(kAll16, x0, x2, 0x88);
    r[4 + c] = _mm512_maskz_shuffle_i32x4(kAll16, x0, x2, 0xdd);
    r[8 + c] = _mm512_maskz_shuffle_i32x4(kAll16, x1, x3, 0x88);
    r[12 + c] = _mm512_maskz_shuffle_i32x4(kAll16, x1, x3, 0xdd);
  }
}

// 16 32-bit pairs (r0[n], r1[n]) from two rows of 16 bf16.
MICS_AVX512_TARGET __m512i interleave16(const std::uint16_t* r0, const std::uint16_t* r1) {
  const __m512i idx = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8,
                                       39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
  const __m512i a =
      _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r0)));
  const __m512i b =
      _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r1)));
  return _mm512_permutex2var_epi16(a, idx, b);
}

MICS_AVX512_TARGET void store_tile(std::uint16_t* tile, const __m512i r[16]) {
  for (int i = 0; i < 16; ++i) _mm512_storeu_si512(tile + 32 * i, r[i]);
}

// One 16 x 32 tile of op(A) at rows ib, k kb, all inside the matrix.
MICS_AVX512_TARGET void pack_a_tile(const Operand& a, i64 ib, i64 kb, std::uint16_t* tile) {
  if (!a.trans) {
    for (i64 r = 0; r < 16; ++r) std::memcpy(tile + r * 32, a.p + (ib + r) * a.ld + kb, 64);
    return;
  }
  // Stored [K, M]: interleaving rows k = 2p, 2p + 1 gives, for each p, the pair p of the
  // 16 rows; the tile wants each row's 16 pairs: a transpose of 32-bit pairs.
  __m512i r[16];
  for (i64 p = 0; p < 16; ++p) {
    const std::uint16_t* r0 = a.p + (kb + 2 * p) * a.ld + ib;
    r[p] = interleave16(r0, r0 + a.ld);
  }
  transpose16(r);
  store_tile(tile, r);
}

// One VNNI tile of op(B) at k kb, columns jb, all inside the matrix.
MICS_AVX512_TARGET void pack_b_tile(const Operand& b, i64 jb, i64 kb, std::uint16_t* tile) {
  __m512i r[16];
  if (!b.trans) {
    for (i64 p = 0; p < 16; ++p) {
      const std::uint16_t* r0 = b.p + (kb + 2 * p) * b.ld + jb;
      r[p] = interleave16(r0, r0 + b.ld);
    }
  } else {
    // Stored [N, K]: a column's 32 k values are contiguous, its 16 pairs one register.
    for (i64 n = 0; n < 16; ++n) r[n] = _mm512_loadu_si512(b.p + (jb + n) * b.ld + kb);
    transpose16(r);
  }
  store_tile(tile, r);
}

// Packs rows [i0, i0 + rows) and k tiles [kt0, kt0 + kts) of op(A) into row tiles of 16,
// zero past the matrix: dst[row tile][k tile][16][32].
MICS_AVX512_TARGET void pack_a(const Operand& a, i64 M, i64 K, i64 i0, i64 rows, i64 kt0, i64 kts,
                            std::uint16_t* dst) {
  const i64 mt = (rows + 15) / 16, row_end = std::min(M, i0 + rows);
  for (i64 x = 0; x < mt * kts; ++x) {
    // Along the stored rows: k tiles inner when A's rows hold k, row tiles inner if not.
    const i64 t = a.trans ? x % mt : x / kts, kt = a.trans ? x / mt : x % kts;
    std::uint16_t* tile = dst + (t * kts + kt) * kTileElems;
    const i64 ib = i0 + t * 16, kb = (kt0 + kt) * 32;
    if (ib + 16 <= row_end && kb + 32 <= K) {
      pack_a_tile(a, ib, kb, tile);
      continue;
    }
    for (i64 r = 0; r < 16; ++r)
      for (i64 k = 0; k < 32; ++k)
        tile[r * 32 + k] = ib + r < row_end && kb + k < K ? a.at(ib + r, kb + k) : 0;
  }
}

// Packs columns [j0, j0 + cols) and k tiles [kt0, kt0 + kts) of op(B) into VNNI tiles of
// 16 columns, zero past the matrix: dst[column tile][k tile][16 pairs][16][2].
MICS_AVX512_TARGET void pack_b(const Operand& b, i64 N, i64 K, i64 j0, i64 cols, i64 kt0, i64 kts,
                            std::uint16_t* dst) {
  const i64 nt = (cols + 15) / 16, col_end = std::min(N, j0 + cols);
  for (i64 x = 0; x < nt * kts; ++x) {
    const i64 t = b.trans ? x / kts : x % nt, kt = b.trans ? x % kts : x / nt;
    std::uint16_t* tile = dst + (t * kts + kt) * kTileElems;
    const i64 jb = j0 + t * 16, kb = (kt0 + kt) * 32;
    if (jb + 16 <= col_end && kb + 32 <= K) {
      pack_b_tile(b, jb, kb, tile);
      continue;
    }
    for (i64 p = 0; p < 16; ++p)
      for (i64 n = 0; n < 16; ++n)
        for (i64 e = 0; e < 2; ++e) {
          const i64 k = kb + 2 * p + e, j = jb + n;
          tile[(p * 16 + n) * 2 + e] = j < col_end && k < K ? b.at(k, j) : 0;
        }
  }
}

// Accumulates R x C tiles (R, C in {1, 2}) of 16 x 16 over `kts` k tiles into the f32
// block at w (row stride ldw floats), starting from w's values or from zero.
template <int R, int C>
MICS_AMX_TARGET void tile_block(const std::uint16_t* a0, const std::uint16_t* a1,
                                const std::uint16_t* b0, const std::uint16_t* b1, i64 kts, float* w,
                                i64 ldw, bool from_w) {
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
    if constexpr (C == 2) _tile_loadd(7, b1 + off, 64);
    if constexpr (R == 2) _tile_loadd(5, a1 + off, 64);
    _tile_dpbf16ps(0, 4, 6);
    if constexpr (C == 2) _tile_dpbf16ps(1, 4, 7);
    if constexpr (R == 2) _tile_dpbf16ps(2, 5, 6);
    if constexpr (R == 2 && C == 2) _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, w, ws);
  if constexpr (C == 2) _tile_stored(1, w + 16, ws);
  if constexpr (R == 2) _tile_stored(2, w1, ws);
  if constexpr (R == 2 && C == 2) _tile_stored(3, w1 + 16, ws);
}

// One K block over a packed A block (mt row tiles) and B panel (nt column tiles), both
// `stride` k tiles deep: pairs of column tiles outside, so that their B slices stay in L1
// while the row tiles stream by.
MICS_AMX_TARGET void amx_k_block(const std::uint16_t* ap, const std::uint16_t* bp, i64 mt, i64 nt,
                                 i64 stride, i64 k0, i64 kts, float* w, i64 ldw, bool from_w) {
  for (i64 jt = 0; jt < nt; jt += 2) {
    const std::uint16_t* b0 = bp + (jt * stride + k0) * kTileElems;
    const std::uint16_t* b1 = b0 + stride * kTileElems;
    const bool two_c = jt + 1 < nt;
    for (i64 it = 0; it < mt; it += 2) {
      const std::uint16_t* a0 = ap + (it * stride + k0) * kTileElems;
      const std::uint16_t* a1 = a0 + stride * kTileElems;
      float* wb = w + it * 16 * ldw + jt * 16;
      const bool two_r = it + 1 < mt;
      if (two_r && two_c)
        tile_block<2, 2>(a0, a1, b0, b1, kts, wb, ldw, from_w);
      else if (two_r)
        tile_block<2, 1>(a0, a1, b0, b1, kts, wb, ldw, from_w);
      else if (two_c)
        tile_block<1, 2>(a0, a1, b0, b1, kts, wb, ldw, from_w);
      else
        tile_block<1, 1>(a0, a1, b0, b1, kts, wb, ldw, from_w);
    }
  }
}

// 32 bf16 in the type vdpbf16ps takes (a vector cast: the bits stay).
MICS_DPBF16_TARGET inline __m512bh as_bh(__m512i v) { return reinterpret_cast<__m512bh>(v); }

// The AVX-512 BF16 path's inner block: 8 rows (half of a packed A row tile, a) by C
// column tiles of a packed B panel (the first at b, the next ones bstep further), summed
// over `kts` k tiles into the f32 block at w (row stride ldw), starting from w's values or
// from zero. Each k pair is one vdpbf16ps per accumulator, over k tiles 0, 1, ... and
// pairs 0..15 in order, so the sum of an element does not depend on the blocking. The B
// slices stay in registers across the 8 rows; A's pair reaches every lane by a broadcast.
template <int C>
MICS_DPBF16_TARGET void dot_block(const std::uint16_t* a, const std::uint16_t* b, i64 bstep,
                                  i64 kts, float* w, i64 ldw, bool from_w) {
  __m512 acc[8][C];
#pragma GCC unroll 8
  for (int r = 0; r < 8; ++r)
#pragma GCC unroll 2
    for (int c = 0; c < C; ++c)
      acc[r][c] = from_w ? _mm512_loadu_ps(w + r * ldw + 16 * c) : _mm512_setzero_ps();
  for (i64 kt = 0; kt < kts; ++kt) {
    const std::uint16_t* at = a + kt * kTileElems;
    const std::uint16_t* bt = b + kt * kTileElems;
    for (int q = 0; q < 16; ++q) {
      __m512bh bv[C];
#pragma GCC unroll 2
      for (int c = 0; c < C; ++c) bv[c] = as_bh(_mm512_loadu_si512(bt + c * bstep + 32 * q));
#pragma GCC unroll 8
      for (int r = 0; r < 8; ++r) {
        std::int32_t pair;
        std::memcpy(&pair, at + r * 32 + 2 * q, sizeof pair);
        const __m512bh av = as_bh(_mm512_set1_epi32(pair));
#pragma GCC unroll 2
        for (int c = 0; c < C; ++c) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], av, bv[c]);
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < 8; ++r)
#pragma GCC unroll 2
    for (int c = 0; c < C; ++c) _mm512_storeu_ps(w + r * ldw + 16 * c, acc[r][c]);
}

// Column tiles per inner block: 16 accumulators and 2 B registers of the 32, two B slices
// of a K block (8 KiB each) in L1. Three (24 accumulators) measured no faster on the
// development EPYC (bench_bf16_gemm, A B A B).
constexpr i64 kDotCols = 2;

// amx_k_block's contract on AVX-512 BF16: groups of kDotCols column tiles outside, so that
// their B slices stay in L1, and each row tile's two halves inside.
MICS_DPBF16_TARGET void dpbf16_k_block(const std::uint16_t* ap, const std::uint16_t* bp, i64 mt,
                                       i64 nt, i64 stride, i64 k0, i64 kts, float* w, i64 ldw,
                                       bool from_w) {
  const i64 bstep = stride * kTileElems;
  for (i64 jt = 0; jt < nt; jt += kDotCols) {
    const std::uint16_t* b = bp + (jt * stride + k0) * kTileElems;
    const i64 cols = std::min(kDotCols, nt - jt);
    for (i64 it = 0; it < mt; ++it)
      for (i64 half = 0; half < 2; ++half) {
        const std::uint16_t* a = ap + (it * stride + k0) * kTileElems + half * 8 * 32;
        float* wb = w + (it * 16 + half * 8) * ldw + jt * 16;
        if (cols == 2)
          dot_block<2>(a, b, bstep, kts, wb, ldw, from_w);
        else
          dot_block<1>(a, b, bstep, kts, wb, ldw, from_w);
      }
  }
}

i64 round_down32(i64 x) { return x / 32 * 32; }
i64 round_up16(i64 x) { return (x + 15) / 16 * 16; }

// Block sizes of one call. K is cut into chunks only when it is long (the LM head's input
// gradient, K = vocabulary); the sums of a whole row block then stay in W across chunks.
struct AmxPlan {
  i64 kt_count;  // k tiles in K
  i64 chunk_kt;  // k tiles per K chunk
  bool chunked;  // more than one chunk
  i64 mc, nc;    // rows of an A block, columns of a B panel (multiples of 32)
  i64 ldw;       // row stride of W: a panel's width, or all of N (rounded to 16) if chunked
};

AmxPlan amx_plan(i64 M, i64 N, i64 K) {
  AmxPlan p{};
  p.kt_count = (K + 31) / 32;
  const i64 chunks =
      p.kt_count <= kMaxChunkTiles ? 1 : (p.kt_count + kLongChunkTiles - 1) / kLongChunkTiles;
  p.chunk_kt = (p.kt_count + chunks - 1) / chunks;
  p.chunked = chunks > 1;
  const i64 np = round_up16(N);
  p.nc = std::min(kPanelCols, np);
  i64 mc = round_down32(kABlockBytes / (2 * 32 * p.chunk_kt));
  if (p.chunked) mc = std::min(mc, round_down32(kWBytes / (4 * np)));
  p.mc = std::min(std::clamp<i64>(mc, 32, 1024), round_up16(M));
  p.ldw = p.chunked ? np : p.nc;
  return p;
}

template <class CT>
void store_rows(CT* C, i64 ldc, const float* w, i64 ldw, i64 rows, i64 cols, float alpha,
                float beta) {
  __asm__ volatile("" ::: "memory");  // W was written by tilestored
  for (i64 r = 0; r < rows; ++r) store_row(C + r * ldc, w + r * ldw, cols, alpha, beta);
}

// Copies n bytes with non-temporal stores where 64-byte aligned.
MICS_AVX512_TARGET void stream_copy(void* dst, const void* src, i64 n) {
  auto* d = static_cast<char*>(dst);
  const auto* s = static_cast<const char*>(src);
  const i64 head =
      std::min<i64>(n, (64 - static_cast<i64>(reinterpret_cast<std::uintptr_t>(d) % 64)) % 64);
  std::memcpy(d, s, static_cast<std::size_t>(head));
  i64 i = head;
  for (; i + 64 <= n; i += 64)
    _mm512_stream_si512(reinterpret_cast<__m512i*>(d + i), _mm512_loadu_si512(s + i));
  std::memcpy(d + i, s + i, static_cast<std::size_t>(n - i));
}

// store_rows for a C too large to stay in cache, with beta == 0: each row is formed in L1
// by the same store_row, then streamed out, so that writing C does not read it first.
template <class CT>
MICS_AVX512_TARGET void stream_rows(CT* C, i64 ldc, const float* w, i64 ldw, i64 rows, i64 cols,
                                 float alpha) {
  thread_local Scratch<CT> row_buf;
  CT* row = row_buf.get(static_cast<std::size_t>(cols));
  __asm__ volatile("" ::: "memory");
  for (i64 r = 0; r < rows; ++r) {
    store_row(row, w + r * ldw, cols, alpha, 0.0f);
    stream_copy(C + r * ldc, row, cols * static_cast<i64>(sizeof(CT)));
  }
}

// The blocking both packed paths share; P names the inner K block (amx_k_block or
// dpbf16_k_block), which is called, not inlined, since it has its own target.
template <Bf16GemmPath P, class CT>
MICS_AVX512_TARGET void packed_gemm(i64 M, i64 N, i64 K, float alpha, Operand a, Operand b,
                                    float beta, CT* C, i64 ldc) {
  const AmxPlan p = amx_plan(M, N, K);
  thread_local Scratch<std::uint16_t> a_buf, b_buf;
  thread_local Scratch<float> w_buf;
  std::uint16_t* ap = a_buf.get(static_cast<std::size_t>(p.mc * p.chunk_kt * 32));
  std::uint16_t* bp = b_buf.get(static_cast<std::size_t>(p.nc * p.chunk_kt * 32));
  float* w = w_buf.get(static_cast<std::size_t>(p.mc * p.ldw));
  const bool stream = beta == 0.0f && M * N * static_cast<i64>(sizeof(CT)) >= kStreamBytes;
  if constexpr (P == Bf16GemmPath::amx) load_tile_config();
  for (i64 i0 = 0; i0 < M; i0 += p.mc) {
    const i64 rows = std::min(p.mc, M - i0), mt = (rows + 15) / 16;
    for (i64 kt0 = 0; kt0 < p.kt_count; kt0 += p.chunk_kt) {
      const i64 kts = std::min(p.chunk_kt, p.kt_count - kt0);
      pack_a(a, M, K, i0, rows, kt0, kts, ap);
      for (i64 j0 = 0; j0 < N; j0 += p.nc) {
        const i64 cols = std::min(p.nc, N - j0), nt = (cols + 15) / 16;
        pack_b(b, N, K, j0, cols, kt0, kts, bp);
        float* wj = p.chunked ? w + j0 : w;
        for (i64 k0 = 0; k0 < kts; k0 += kKcTiles) {
          const i64 n = std::min(kKcTiles, kts - k0);
          if constexpr (P == Bf16GemmPath::amx)
            amx_k_block(ap, bp, mt, nt, kts, k0, n, wj, p.ldw, kt0 + k0 > 0);
          else
            dpbf16_k_block(ap, bp, mt, nt, kts, k0, n, wj, p.ldw, kt0 + k0 > 0);
        }
        if (p.chunked) continue;
        if (stream)
          stream_rows(C + i0 * ldc + j0, ldc, w, p.ldw, rows, cols, alpha);
        else
          store_rows(C + i0 * ldc + j0, ldc, w, p.ldw, rows, cols, alpha, beta);
      }
    }
    if (p.chunked) store_rows(C + i0 * ldc, ldc, w, p.ldw, rows, N, alpha, beta);
  }
  if (stream) _mm_sfence();  // the streamed rows are visible before the call returns
}
#endif  // MICS_HAVE_PACKED_PATHS

template <class CT>
void run_path(Bf16GemmPath path, bool ta, bool tb, i64 M, i64 N, i64 K, float alpha,
              const bf16_t* A, i64 lda, const bf16_t* B, i64 ldb, float beta, CT* C, i64 ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) return store_empty_sums(M, N, alpha, beta, C, ldc);
  const Operand a{bits_of(A), lda, ta}, b{bits_of(B), ldb, tb};
#if MICS_HAVE_PACKED_PATHS
  if (path == Bf16GemmPath::amx)
    return packed_gemm<Bf16GemmPath::amx>(M, N, K, alpha, a, b, beta, C, ldc);
  if (path == Bf16GemmPath::avx512_bf16)
    return packed_gemm<Bf16GemmPath::avx512_bf16>(M, N, K, alpha, a, b, beta, C, ldc);
#endif
  (void)path;
  fallback_gemm(M, N, K, alpha, a, b, beta, C, ldc);
}

constexpr Bf16GemmPath kPaths[] = {Bf16GemmPath::portable, Bf16GemmPath::avx512_bf16,
                                   Bf16GemmPath::amx};

// The fastest path MICS_BF16_GEMM allows (all when unset or empty).
Bf16GemmPath path_cap() {
  const char* env = std::getenv("MICS_BF16_GEMM");
  if (env == nullptr || *env == '\0') return Bf16GemmPath::amx;
  for (Bf16GemmPath p : kPaths)
    if (std::strcmp(env, bf16_gemm_path_name(p)) == 0) return p;
  throw UsageError(std::string("MICS_BF16_GEMM=") + env +
                   " names no bf16 GEMM path: set portable, avx512-bf16 or amx, or unset it");
}

Bf16GemmPath choose_path() {
  const Bf16GemmPath cap = path_cap();
  for (Bf16GemmPath p : {Bf16GemmPath::amx, Bf16GemmPath::avx512_bf16})
    if (p <= cap && bf16_gemm_path_usable(p)) return p;
  return Bf16GemmPath::portable;
}

template <class CT>
void run_named_path(Bf16GemmPath path, bool ta, bool tb, i64 M, i64 N, i64 K, float alpha,
                    const bf16_t* A, i64 lda, const bf16_t* B, i64 ldb, float beta, CT* C,
                    i64 ldc) {
  if (!bf16_gemm_path_usable(path))
    throw std::invalid_argument(std::string("gemm_bf16_on: the ") + bf16_gemm_path_name(path) +
                                " path is not usable on this CPU");
  run_path(path, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace

const char* bf16_gemm_path_name(Bf16GemmPath path) {
  switch (path) {
    case Bf16GemmPath::amx: return "amx";
    case Bf16GemmPath::avx512_bf16: return "avx512-bf16";
    case Bf16GemmPath::portable: break;
  }
  return "portable";
}

bool bf16_gemm_path_usable(Bf16GemmPath path) {
#if MICS_HAVE_PACKED_PATHS
  // Magic statics: each CPU query (and AMX's permission request) runs once, thread-safely.
  if (path == Bf16GemmPath::amx) {
    static const bool amx = query_amx();
    return amx;
  }
  if (path == Bf16GemmPath::avx512_bf16) {
    static const bool dpbf16 = query_dpbf16();
    return dpbf16;
  }
#endif
  return path == Bf16GemmPath::portable;
}

Bf16GemmPath bf16_gemm_path() {
  static const Bf16GemmPath path = choose_path();  // throws (and retries) on a bad variable
  return path;
}

void gemm_bf16(bool ta, bool tb, i64 M, i64 N, i64 K, float alpha, const bf16_t* A, i64 lda,
               const bf16_t* B, i64 ldb, float beta, float* C, i64 ldc) {
  run_path(bf16_gemm_path(), ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void gemm_bf16(bool ta, bool tb, i64 M, i64 N, i64 K, float alpha, const bf16_t* A, i64 lda,
               const bf16_t* B, i64 ldb, float beta, bf16_t* C, i64 ldc) {
  run_path(bf16_gemm_path(), ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void gemm_bf16_on(Bf16GemmPath path, bool ta, bool tb, i64 M, i64 N, i64 K, float alpha,
                  const bf16_t* A, i64 lda, const bf16_t* B, i64 ldb, float beta, float* C,
                  i64 ldc) {
  run_named_path(path, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void gemm_bf16_on(Bf16GemmPath path, bool ta, bool tb, i64 M, i64 N, i64 K, float alpha,
                  const bf16_t* A, i64 lda, const bf16_t* B, i64 ldb, float beta, bf16_t* C,
                  i64 ldc) {
  run_named_path(path, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace mics::device
