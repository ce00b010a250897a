#include "mics/report/summary.hpp"

#include <cmath>

#include "format.hpp"

namespace mics::report {

using detail::sprintf;

void SummaryAccumulator::add(const StepRecord& r) { steps_.push_back(r); }

RunSummary SummaryAccumulator::summary() const {
  RunSummary s;
  s.steps = static_cast<std::int64_t>(steps_.size());
  if (steps_.empty()) return s;
  const std::size_t first = steps_.size() >= 2 ? 1 : 0;
  s.timed_steps = static_cast<std::int64_t>(steps_.size() - first);
  double mfu_sum = 0.0;
  std::size_t mfu_n = 0;
  for (std::size_t i = first; i < steps_.size(); ++i) {
    const auto& r = steps_[i];
    s.mean_step_ms += r.step_ms;
    s.mean_tokens_per_s += r.tokens_per_s;
    s.mean_tflops_per_rank += r.tflops_per_rank;
    s.mean_exposed_comm_ms += r.exposed_comm_ms;
    if (r.mfu) {
      mfu_sum += *r.mfu;
      ++mfu_n;
    }
  }
  const auto n = static_cast<double>(s.timed_steps);
  s.mean_step_ms /= n;
  s.mean_tokens_per_s /= n;
  s.mean_tflops_per_rank /= n;
  s.mean_exposed_comm_ms /= n;
  // An MFU mean over only some steps would mislead; report it when every step had one.
  if (mfu_n == static_cast<std::size_t>(s.timed_steps)) s.mean_mfu = mfu_sum / n;
  s.values_computed = steps_.back().values_computed;
  if (s.values_computed) s.final_loss = steps_.back().loss;
  for (auto it = steps_.rbegin(); it != steps_.rend(); ++it)
    if (it->val_loss && s.values_computed) {
      s.final_val_loss = it->val_loss;
      break;
    }
  for (const auto& r : steps_)
    for (const auto& g : r.comm) {
      GroupTraffic* t = nullptr;
      for (auto& existing : s.groups)
        if (existing.group == g.group) t = &existing;
      if (t == nullptr) {
        s.groups.push_back(GroupTraffic{g.group, 0, 0, 0.0, 0.0});
        t = &s.groups.back();
      }
      t->bytes += g.bytes;
      t->ms += g.ms;
      t->exposed_ms += g.exposed_ms;
    }
  return s;
}

std::string format_bytes(std::uint64_t bytes) {
  if (bytes < 1024) return sprintf("%llu B", static_cast<unsigned long long>(bytes));
  const char* units[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(bytes) / 1024.0;
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  return sprintf(v < 10 ? "%.2f %s" : v < 100 ? "%.1f %s" : "%.0f %s", v, units[u]);
}

std::string format_summary(const RunSummary& s) {
  std::string out = sprintf("summary: %lld steps, means over the last %lld\n",
                            static_cast<long long>(s.steps), static_cast<long long>(s.timed_steps));
  if (s.final_loss) out += sprintf("  final loss: %.4f\n", *s.final_loss);
  if (!s.values_computed) out += "  final loss: not computed (emulated compute)\n";
  if (s.final_val_loss) out += sprintf("  final val loss: %.4f\n", *s.final_val_loss);
  out += sprintf("  mean step time: %.1f ms\n", s.mean_step_ms);
  out += sprintf("  mean tokens/s: %.0f\n", s.mean_tokens_per_s);
  out += sprintf("  mean TFLOPS per rank: %.4g", s.mean_tflops_per_rank);
  out += s.mean_mfu ? sprintf(" (MFU %.1f%%)\n", 100.0 * *s.mean_mfu) : std::string(" (MFU: device peak unknown)\n");
  out += sprintf("  mean exposed comm: %.1f ms per step\n", s.mean_exposed_comm_ms);
  if (s.model_state_bytes_per_rank)
    out += "  model states per rank: " + format_bytes(s.model_state_bytes_per_rank) + "\n";
  if (s.peak_bytes_per_rank)
    out += "  peak device memory per rank: " + format_bytes(s.peak_bytes_per_rank) + "\n";
  for (const auto& g : s.groups) {
    if (g.size == 1 || (g.calls == 0 && g.bytes == 0 && g.ms == 0.0 && g.exposed_ms == 0.0)) continue;
    out += "  group " + g.group;
    if (g.size > 0) out += sprintf(" (%d ranks)", g.size);
    const double per_step = s.steps > 0 ? static_cast<double>(g.bytes) / static_cast<double>(s.steps) : 0.0;
    out += ": " + format_bytes(g.bytes) + " sent per rank (" +
           format_bytes(static_cast<std::uint64_t>(std::llround(per_step))) + "/step), " +
           sprintf("busy %.1f ms, compute waited %.1f ms\n", g.ms, g.exposed_ms);
  }
  if (!s.flops_formula.empty()) out += "  " + s.flops_formula + "\n";
  return out;
}

}  // namespace mics::report
