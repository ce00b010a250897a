#include "mics/report/step_log.hpp"

#include <cmath>

#include "format.hpp"

namespace mics::report {

using detail::sprintf;

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<long long>(std::llround(seconds));
  if (s < 60) return sprintf("%lld s", s);
  if (s < 3600) return sprintf("%lld min %02lld s", s / 60, s % 60);
  if (s < 86400) return sprintf("%lld h %02lld min", s / 3600, (s % 3600) / 60);
  return sprintf("%lld d %02lld h", s / 86400, (s % 86400) / 3600);
}

std::string format_step_line(const StepRecord& r, std::int64_t total_steps,
                             std::optional<double> eta_s) {
  std::string line;
  if (total_steps > 0) {
    // Width of the total, so that consecutive lines align.
    const int w = static_cast<int>(std::to_string(total_steps).size());
    line = sprintf("step %*lld/%lld", w, static_cast<long long>(r.step),
                   static_cast<long long>(total_steps));
  } else {
    line = sprintf("step %lld", static_cast<long long>(r.step));
  }
  if (r.values_computed) {
    line += sprintf(" | loss %.4f", r.loss);
    if (r.val_loss) line += sprintf(" | val %.4f", *r.val_loss);
    line += sprintf(" | lr %.2e | norm %.3f", r.lr, r.grad_norm);
  } else {
    line += sprintf(" | loss n/a (emulated compute) | lr %.2e", r.lr);
  }
  line += sprintf(" | %.1f ms | %.0f tok/s | %.4g TFLOPS/rank", r.step_ms, r.tokens_per_s,
                  r.tflops_per_rank);
  if (r.mfu) line += sprintf(" | MFU %.1f%%", 100.0 * *r.mfu);
  line += sprintf(" | exposed comm %.1f ms", r.exposed_comm_ms);
  if (r.skipped) line += " | SKIPPED: non-finite, no update";
  if (eta_s) line += " | ETA " + format_duration(*eta_s);
  return line;
}

EtaEstimator::EtaEstimator(std::int64_t total_steps) : total_(total_steps) {}

std::optional<double> EtaEstimator::update(double step_ms) {
  ++done_;
  if (done_ == 1)
    first_ms_ = step_ms;
  else
    rest_ms_ += step_ms;
  if (done_ >= total_) return std::nullopt;
  // After one step its time is all there is; from the second on, the first is left out.
  const double mean_ms = done_ == 1 ? first_ms_ : rest_ms_ / static_cast<double>(done_ - 1);
  return 1e-3 * mean_ms * static_cast<double>(total_ - done_);
}

}  // namespace mics::report
