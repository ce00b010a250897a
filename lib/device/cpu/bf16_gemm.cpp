// TEMPORARY (lead's placeholder until branch amx lands): widen, sgemm, round.
#include "bf16_gemm.hpp"

#include <cblas.h>

#include <vector>

namespace mics::device {
namespace {
std::vector<float> widen(const bf16_t* p, std::int64_t rows, std::int64_t cols, std::int64_t ld) {
  std::vector<float> out(static_cast<std::size_t>(rows * cols));
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) out[static_cast<std::size_t>(r * cols + c)] = bf16_to_float(p[r * ld + c]);
  return out;
}
template <class CT>
void run(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const bf16_t* A,
         std::int64_t lda, const bf16_t* B, std::int64_t ldb, float beta, CT* C, std::int64_t ldc) {
  if (M == 0 || N == 0) return;
  const auto a = widen(A, ta ? K : M, ta ? M : K, lda), b = widen(B, tb ? N : K, tb ? K : N, ldb);
  std::vector<float> c(static_cast<std::size_t>(M * N), 0.0f);
  if (K > 0)
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(M), int(N), int(K),
                alpha, a.data(), int(ta ? M : K), b.data(), int(tb ? K : N), 0.0f, c.data(), int(N));
  for (std::int64_t i = 0; i < M; ++i)
    for (std::int64_t j = 0; j < N; ++j) {
      float v = c[static_cast<std::size_t>(i * N + j)];
      if constexpr (sizeof(CT) == 4) {
        if (beta != 0.0f) v += beta * C[i * ldc + j];
        C[i * ldc + j] = v;
      } else {
        if (beta != 0.0f) v += beta * bf16_to_float(C[i * ldc + j]);
        C[i * ldc + j] = float_to_bf16(v);
      }
    }
}
}  // namespace
bool amx_bf16_usable() { return false; }
void gemm_bf16(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const bf16_t* A,
               std::int64_t lda, const bf16_t* B, std::int64_t ldb, float beta, float* C, std::int64_t ldc) {
  run(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
void gemm_bf16(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const bf16_t* A,
               std::int64_t lda, const bf16_t* B, std::int64_t ldb, float beta, bf16_t* C, std::int64_t ldc) {
  run(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
}  // namespace mics::device
