#include "mics/train/model_size.hpp"

#include <unistd.h>

#include <cstdio>
#include <string>

#include "mics/core/error.hpp"

namespace mics::train {
namespace {

std::string bytes_text(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  double v = b;
  while (v >= 1024.0 && u < 6) v /= 1024.0, ++u;
  char buf[96];
  std::snprintf(buf, sizeof buf, "%.3g bytes (%.3g %s)", b, v, units[u]);
  return buf;
}

}  // namespace

double minimum_bytes_per_rank(const RunOptions& o, int world_size) {
  const auto& m = o.model;
  const double h = static_cast<double>(m.hidden), l = static_cast<double>(m.layers);
  const double s = static_cast<double>(m.seq), V = static_cast<double>(m.vocab);
  const double params = V * h + s * h + l * (12 * h * h + 13 * h) + 2 * h;
  // fp32 master, Adam m and v, gradient accumulator: 16 bytes per parameter.
  const double states = 16.0 * params / static_cast<double>(world_size);
  // One micro-batch: a few hidden-sized fp32 tensors per token and layer, and the logits.
  const double tokens = static_cast<double>(o.train.micro_batch) * s;
  const double activations = tokens * (l * h * 4.0 * 4.0 + V * 4.0);
  return states + activations;
}

void check_model_size(const RunOptions& o, int world_size, const device::Backend& backend) {
  double have = static_cast<double>(backend.memory_capacity());
  if (have == 0 && backend.is_host_memory())
    have = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGE_SIZE));
  const double need = minimum_bytes_per_rank(o, world_size);
  if (have <= 0 || need <= have) return;
  const auto& m = o.model;
  throw UsageError("the model (layers " + std::to_string(m.layers) + ", hidden " + std::to_string(m.hidden) +
                   ", vocab " + std::to_string(m.vocab) + ", seq " + std::to_string(m.seq) + ", micro-batch " +
                   std::to_string(o.train.micro_batch) + ") would need at least " + bytes_text(need) +
                   " per rank even with its states sharded over all " + std::to_string(world_size) +
                   " ranks (an estimate: 16 bytes per parameter over the ranks, plus one micro-batch's "
                   "activations), more than the " + bytes_text(have) +
                   " this rank's device has; use a smaller model or batch, or more ranks");
}

}  // namespace mics::train
