#pragma once
// bf16 GEMM for the CPU backend (private to lib/device/cpu). Debian's OpenBLAS has no
// sbgemm, so bf16 operands are multiplied here, by the fastest of three paths the CPU
// allows: Intel AMX tiles, AVX-512 BF16 dot products (vdpbf16ps: AMD Zen 4 and later,
// Intel Cooper Lake and later), or portable f32 loops. Every path keeps one summation
// order over K for every element of C (see gemm_bf16), so a caller may split rows or
// columns over threads and get the same bits as one call. The paths do not give the same
// bits as each other (the hardware adds each pair of products in its own order and
// flushes denormals).
#include <cstdint>

#include "mics/device/dtype.hpp"

namespace mics::device {

// The ways gemm_bf16 can multiply, slowest first.
enum class Bf16GemmPath { portable, avx512_bf16, amx };

const char* bf16_gemm_path_name(Bf16GemmPath path);  // "portable", "avx512-bf16", "amx"

// True when this process can run `path`: portable always; avx512_bf16 when the CPU
// reports AVX-512 F, BW, VL, DQ and BF16 and the OS saves the AVX-512 state; amx when the
// CPU reports AVX-512 F, BW, VL, DQ (the packing uses them), amx-tile and amx-bf16, the OS
// enabled their state in XCR0 and the kernel granted XTILEDATA to the process
// (arch_prctl, asked once per process).
bool bf16_gemm_path_usable(Bf16GemmPath path);

// The path gemm_bf16 takes: the fastest usable one, at most the one MICS_BF16_GEMM names
// ("portable", "avx512-bf16" or "amx"; read once, on the first call) to measure, test, or
// keep a cluster of mixed CPUs on the same bits. Throws std::invalid_argument naming the
// variable for any other value.
Bf16GemmPath bf16_gemm_path();

// Row-major C[M,N] = alpha * op(A) op(B) + beta * C. op(A) is [M,K]: A stored [M,K] (lda >=
// K), or [K,M] (lda >= M) when ta; op(B) is [K,N]: B stored [K,N] (ldb >= N), or [N,K] (ldb
// >= K) when tb. Products and sums in f32; a bf16 C is rounded once (nearest even) at the
// end. beta == 0: C is not read (it may hold NaN). Single-threaded: the caller splits rows
// or columns over its threads. Every element's sum runs over K in the same order whatever
// M, N and the element's position, so splitting the call into row or column blocks gives
// the same bits. Runs bf16_gemm_path(). Thread-local packing buffers (64-byte aligned)
// grow to the largest call the thread has made, up to about 5 MiB for the GEMMs of a GPT-2
// small step, and are kept for the thread's life; steady calls allocate nothing. No
// alignment is asked of A, B, C. A C of 32 MiB or more with beta == 0 is written with
// non-temporal stores (fenced before returning), so it is not left in cache.
void gemm_bf16(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
               const bf16_t* A, std::int64_t lda, const bf16_t* B, std::int64_t ldb, float beta,
               float* C, std::int64_t ldc);
void gemm_bf16(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
               const bf16_t* A, std::int64_t lda, const bf16_t* B, std::int64_t ldb, float beta,
               bf16_t* C, std::int64_t ldc);

// The same contract on a named path, which must be usable (else std::invalid_argument):
// for tests and benchmarks that compare the paths. The portable path widens operands to
// f32 and multiplies them by loops (an AVX2 clone where the CPU has it; both clones give
// the same bits).
void gemm_bf16_on(Bf16GemmPath path, bool ta, bool tb, std::int64_t M, std::int64_t N,
                  std::int64_t K, float alpha, const bf16_t* A, std::int64_t lda, const bf16_t* B,
                  std::int64_t ldb, float beta, float* C, std::int64_t ldc);
void gemm_bf16_on(Bf16GemmPath path, bool ta, bool tb, std::int64_t M, std::int64_t N,
                  std::int64_t K, float alpha, const bf16_t* A, std::int64_t lda, const bf16_t* B,
                  std::int64_t ldb, float beta, bf16_t* C, std::int64_t ldc);

}  // namespace mics::device
