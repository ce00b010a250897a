#include "mics/engine/train_config.hpp"

#include <cmath>
#include <numbers>
#include <sstream>

#include "mics/core/error.hpp"

namespace mics::engine {

const char* to_string(Strategy s) {
  switch (s) {
    case Strategy::ddp: return "ddp";
    case Strategy::zero2: return "zero2";
    case Strategy::zero3: return "zero3";
    case Strategy::mics: return "mics";
  }
  return "?";
}

const char* to_string(GradSync g) {
  return g == GradSync::two_hop ? "two-hop" : "every-micro-step";
}

Strategy parse_strategy(const std::string& text) {
  if (text == "ddp") return Strategy::ddp;
  if (text == "zero2") return Strategy::zero2;
  if (text == "zero3") return Strategy::zero3;
  if (text == "mics") return Strategy::mics;
  throw UsageError("--strategy '" + text + "' is not known; choose one of ddp, zero2, zero3, mics");
}

GradSync parse_grad_sync(const std::string& text) {
  if (text == "two-hop") return GradSync::two_hop;
  if (text == "every-micro-step") return GradSync::every_micro_step;
  throw UsageError("--grad-sync '" + text + "' is not known; choose two-hop or every-micro-step");
}

double learning_rate(const OptimizerConfig& o, int step, int total_steps) {
  if (o.warmup_steps > 0 && step < o.warmup_steps)
    return o.lr * static_cast<double>(step + 1) / static_cast<double>(o.warmup_steps);
  const int end = o.decay_steps > 0 ? o.decay_steps : total_steps;
  if (step >= end || end <= o.warmup_steps) return step >= end ? o.min_lr : o.lr;
  const double progress =
      static_cast<double>(step - o.warmup_steps) / static_cast<double>(end - o.warmup_steps);
  const double cosine = 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
  return o.min_lr + (o.lr - o.min_lr) * cosine;
}

int accumulation_steps(const TrainConfig& c, int world_size) {
  if (c.micro_batch <= 0)
    throw UsageError("--micro-batch " + std::to_string(c.micro_batch) + " must be at least 1");
  if (c.global_batch <= 0)
    throw UsageError("--global-batch " + std::to_string(c.global_batch) + " must be at least 1");
  const long per_micro_step = static_cast<long>(world_size) * c.micro_batch;
  if (c.global_batch % per_micro_step != 0) {
    std::ostringstream os;
    os << "--global-batch " << c.global_batch << " is not a multiple of ranks x --micro-batch ("
       << world_size << " x " << c.micro_batch << " = " << per_micro_step << "); try "
       << per_micro_step * std::max(1L, c.global_batch / per_micro_step) << " or "
       << per_micro_step * (c.global_batch / per_micro_step + 1);
    throw UsageError(os.str());
  }
  return static_cast<int>(c.global_batch / per_micro_step);
}

}  // namespace mics::engine
