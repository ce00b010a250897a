#pragma once
// TEMPORARY (lead's placeholder until branch amx lands): the interface of the bf16 GEMM.
#include <cstdint>

#include "mics/device/dtype.hpp"

namespace mics::device {
bool amx_bf16_usable();
void gemm_bf16(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
               const bf16_t* A, std::int64_t lda, const bf16_t* B, std::int64_t ldb, float beta,
               float* C, std::int64_t ldc);
void gemm_bf16(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
               const bf16_t* A, std::int64_t lda, const bf16_t* B, std::int64_t ldb, float beta,
               bf16_t* C, std::int64_t ldc);
}  // namespace mics::device
