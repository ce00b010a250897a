#include "mics/report/flops.hpp"

namespace mics::report {

double transformer_flops(const TransformerShape& shape, std::int64_t sequences, bool recompute) {
  const double l = shape.layers, h = shape.hidden, s = shape.seq, v = shape.vocab;
  const double f = recompute ? 4.0 : 3.0;
  return 24.0 * f * static_cast<double>(sequences) * s * l * h * h *
         (1.0 + s / (6.0 * h) + v / (16.0 * l * h));
}

double tflops_per_rank(double flops_per_step, int world_size, double step_seconds) {
  if (world_size <= 0 || step_seconds <= 0.0) return 0.0;
  return flops_per_step / (static_cast<double>(world_size) * step_seconds * 1e12);
}

std::optional<double> mfu(double tflops, std::optional<double> peak_tflops) {
  if (!peak_tflops || *peak_tflops <= 0.0) return std::nullopt;
  return tflops / *peak_tflops;
}

}  // namespace mics::report
