#pragma once
// bf16 GEMM for the CPU backend (private to lib/device/cpu). Debian's OpenBLAS has no
// sbgemm, so bf16 operands are multiplied here: with Intel AMX tiles where the CPU and the
// kernel allow them, otherwise with plain f32 loops. Both paths keep one summation order
// over K for every element of C (see gemm_bf16), so a caller may split rows or columns
// over threads and get the same bits as one call. The two paths do not give the same bits
// as each other (AMX adds each pair of products in its own order and flushes denormals).
#include <cstdint>

#include "mics/device/dtype.hpp"

namespace mics::device {

// True when this process may run AMX bf16 tile instructions: the CPU reports amx-tile and
// amx-bf16 (cpuid leaf 7), the OS enabled their state in XCR0, and the kernel granted
// XTILEDATA to the process (arch_prctl), asked once per process. MICS_BF16_AMX=0 in the
// environment (read on that first call) answers false, to measure or test the fallback.
bool amx_bf16_usable();

// Row-major C[M,N] = alpha * op(A) op(B) + beta * C. op(A) is [M,K]: A stored [M,K]
// (lda >= K), or [K,M] (lda >= M) when ta; op(B) is [K,N]: B stored [K,N] (ldb >= N), or
// [N,K] (ldb >= K) when tb. Products and sums in f32; a bf16 C is rounded once (nearest
// even) at the end. beta == 0: C is not read (it may hold NaN). Single-threaded: the caller
// splits rows or columns over its threads. Every element's sum runs over K in the same
// order whatever M, N and the element's position, so splitting the call into row or column
// blocks gives the same bits. Takes the AMX path when amx_bf16_usable(), else the
// fallback below. Thread-local packing buffers (64-byte aligned) grow to the largest call
// the thread has made, up to about 5 MiB for the GEMMs of a GPT-2 small step, and are kept
// for the thread's life; steady calls allocate nothing. No alignment is asked of A, B, C.
// A C of 32 MiB or more with beta == 0 is written with non-temporal stores (fenced before
// returning), so it is not left in cache.
void gemm_bf16(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
               const bf16_t* A, std::int64_t lda, const bf16_t* B, std::int64_t ldb, float beta,
               float* C, std::int64_t ldc);
void gemm_bf16(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
               const bf16_t* A, std::int64_t lda, const bf16_t* B, std::int64_t ldb, float beta,
               bf16_t* C, std::int64_t ldc);

// The same contract without AMX: operands widened to f32 and multiplied by portable loops
// (an AVX2 clone where the CPU has it; both clones give the same bits). gemm_bf16 runs it
// when AMX is not usable; tests call it to compare the paths.
void gemm_bf16_fallback(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K,
                        float alpha, const bf16_t* A, std::int64_t lda, const bf16_t* B,
                        std::int64_t ldb, float beta, float* C, std::int64_t ldc);
void gemm_bf16_fallback(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K,
                        float alpha, const bf16_t* A, std::int64_t lda, const bf16_t* B,
                        std::int64_t ldb, float beta, bf16_t* C, std::int64_t ldc);

}  // namespace mics::device
