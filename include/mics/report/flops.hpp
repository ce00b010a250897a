#pragma once
// Model FLOPs of a GPT-style transformer step, the way the MiCS and Megatron papers count
// them (Narayanan et al. 2021, eq. 3):
//   F = 24 f B s l h^2 (1 + s/(6h) + V/(16 l h)),
// f = 3 (forward + backward) without activation recomputation, 4 with it. "Model TFLOPS"
// always uses f = 3: recomputation is work the hardware does, not work the model needs.
#include <cstdint>
#include <optional>

namespace mics::report {

inline constexpr const char* kFlopsFormula =
    "model FLOPs = 72 B s l h^2 (1 + s/(6h) + V/(16 l h)) per step (Narayanan et al. 2021, eq. 3, f=3)";

struct TransformerShape {
  int layers = 0;   // l
  int hidden = 0;   // h
  int seq = 0;      // s
  int vocab = 0;    // V
};

// F for `sequences` (B) sequences; `recompute` selects f = 4.
double transformer_flops(const TransformerShape& shape, std::int64_t sequences, bool recompute = false);

// F / (W * seconds * 1e12).
double tflops_per_rank(double flops_per_step, int world_size, double step_seconds);

// tflops / peak when the peak is known and positive.
std::optional<double> mfu(double tflops_per_rank, std::optional<double> peak_tflops);

}  // namespace mics::report
